//! Transaction blocks over both pgwire protocols, against a real server:
//! a block's INSERTs are invisible to every other session (and to views)
//! until COMMIT, appear together at COMMIT, and are gone after ROLLBACK,
//! an error in the block, or ROLLBACK TO SAVEPOINT; a block that has
//! written may only INSERT (25000, as Materialize), and UPDATE/DELETE are
//! refused inside one (0A000) rather than escaping a ROLLBACK.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use common::slt::connect;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i32> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect()
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT n FROM counted", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

async fn code(r: Result<impl Sized, tokio_postgres::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

#[test]
fn a_block_writes_all_at_commit_and_nothing_at_rollback() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        let reader = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE TABLE t (id int);
             CREATE MATERIALIZED VIEW counted AS SELECT count(*) AS n FROM t;",
        )
        .await
        .unwrap();

        // Simple protocol, one statement per message.
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute("INSERT INTO t VALUES (1), (2)")
            .await
            .unwrap();
        c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
        assert_eq!(ids(&reader, "SELECT id FROM t").await, Vec::<i32>::new());
        assert_eq!(count(&reader).await, 0);
        c.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(ids(&reader, "SELECT id FROM t").await, Vec::<i32>::new());

        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute("INSERT INTO t VALUES (1), (2)")
            .await
            .unwrap();
        c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
        assert_eq!(count(&reader).await, 0);
        c.batch_execute("COMMIT").await.unwrap();
        assert_eq!(
            ids(&reader, "SELECT id FROM t ORDER BY id").await,
            [1, 2, 3]
        );
        assert_eq!(count(&reader).await, 3);

        // One query string holding the whole block.
        c.batch_execute("BEGIN; INSERT INTO t VALUES (4); ROLLBACK;")
            .await
            .unwrap();
        c.batch_execute("BEGIN; INSERT INTO t VALUES (5); COMMIT;")
            .await
            .unwrap();
        assert_eq!(
            ids(&reader, "SELECT id FROM t ORDER BY id").await,
            [1, 2, 3, 5]
        );

        // Extended protocol with bound parameters (tokio-postgres'
        // Transaction).
        {
            let mut c2 = connect(server.pg_addr).await;
            let t = c2.transaction().await.unwrap();
            t.execute("INSERT INTO t VALUES ($1)", &[&6i32])
                .await
                .unwrap();
            assert_eq!(count(&reader).await, 4);
            t.rollback().await.unwrap();
            let t = c2.transaction().await.unwrap();
            t.execute("INSERT INTO t VALUES ($1)", &[&7i32])
                .await
                .unwrap();
            t.execute("INSERT INTO t VALUES ($1)", &[&8i32])
                .await
                .unwrap();
            assert_eq!(count(&reader).await, 4);
            t.commit().await.unwrap();
        }
        assert_eq!(
            ids(&reader, "SELECT id FROM t ORDER BY id").await,
            [1, 2, 3, 5, 7, 8]
        );
        assert_eq!(count(&reader).await, 6);

        // COPY … FROM STDIN in a block is held like an INSERT.
        {
            use futures::SinkExt;
            let mut c3 = connect(server.pg_addr).await;
            for (rows, commit) in [("9\n10\n", false), ("11\n12\n", true)] {
                let t = c3.transaction().await.unwrap();
                let sink = t.copy_in("COPY t FROM STDIN").await.unwrap();
                let mut sink = std::pin::pin!(sink);
                sink.send(bytes::Bytes::from(rows)).await.unwrap();
                assert_eq!(sink.finish().await.unwrap(), 2);
                assert_eq!(count(&reader).await, 6);
                if commit {
                    t.commit().await.unwrap();
                } else {
                    t.rollback().await.unwrap();
                }
            }
        }
        assert_eq!(
            ids(&reader, "SELECT id FROM t ORDER BY id").await,
            [1, 2, 3, 5, 7, 8, 11, 12]
        );
        assert_eq!(count(&reader).await, 8);
    });
}

#[test]
fn errors_and_savepoints_inside_a_block() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            .await
            .unwrap();

        // An error aborts the block: later statements are refused and
        // COMMIT rolls back.
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute("INSERT INTO t VALUES (1, 'a')")
            .await
            .unwrap();
        assert_eq!(
            code(c.batch_execute("INSERT INTO nope VALUES (1)").await).await,
            "42P01"
        );
        assert_eq!(
            code(c.batch_execute("INSERT INTO t VALUES (2, 'b')").await).await,
            "25P02"
        );
        c.batch_execute("COMMIT").await.unwrap();
        assert_eq!(ids(&c, "SELECT id FROM t").await, Vec::<i32>::new());

        // Savepoints.
        c.batch_execute(
            "BEGIN;
             INSERT INTO t VALUES (1, 'a');
             SAVEPOINT s1;
             INSERT INTO t VALUES (2, 'b');
             ROLLBACK TO SAVEPOINT s1;
             INSERT INTO t VALUES (3, 'c');
             SAVEPOINT s2;
             INSERT INTO t VALUES (4, 'd');
             RELEASE SAVEPOINT s2;
             COMMIT;",
        )
        .await
        .unwrap();
        assert_eq!(ids(&c, "SELECT id FROM t ORDER BY id").await, [1, 3, 4]);
        assert_eq!(code(c.batch_execute("SAVEPOINT x").await).await, "25P01");
        c.batch_execute("BEGIN").await.unwrap();
        assert_eq!(
            code(c.batch_execute("ROLLBACK TO SAVEPOINT nope").await).await,
            "3B001"
        );
        c.batch_execute("ROLLBACK").await.unwrap();

        // A block that wrote may only INSERT; UPDATE/DELETE are refused in
        // a block rather than escaping its ROLLBACK.
        c.batch_execute("BEGIN; INSERT INTO t VALUES (5, 'e');")
            .await
            .unwrap();
        assert_eq!(
            code(c.batch_execute("SELECT * FROM t").await).await,
            "25000"
        );
        c.batch_execute("ROLLBACK").await.unwrap();
        c.batch_execute("BEGIN").await.unwrap();
        assert_eq!(
            code(c.batch_execute("UPDATE t SET v = 'z'").await).await,
            "0A000"
        );
        c.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            code(c.batch_execute("DELETE FROM t WHERE id = 1").await).await,
            "ok"
        );
        // A read-only block reads as usual.
        c.batch_execute("BEGIN").await.unwrap();
        assert_eq!(ids(&c, "SELECT id FROM t ORDER BY id").await, [3, 4]);
        c.batch_execute("COMMIT").await.unwrap();
    });
}
