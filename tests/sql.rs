//! SQL over pgwire against a real server: the `.slt` files in `slt/` run by
//! the sqllogictest crate through tokio-postgres (simple protocol, as psql
//! sends), plus the behaviours an `.slt` file cannot express: COPY … TO
//! STDOUT output, restart persistence, inserts visible to Kafka consumers,
//! and malformed records counted instead of stopping a read.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::TestServer;
use common::slt::{Pg, PgError, connect};
use tokio_postgres::SimpleQueryMessage;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run_slt(path: &Path) {
    let server = TestServer::start();
    let addr = server.pg_addr;
    rt().block_on(async {
        let mut runner = sqllogictest::Runner::new(move || async move {
            Ok::<_, PgError>(Pg {
                client: connect(addr).await,
            })
        });
        runner
            .run_file_async(path)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.display(true)));
    });
}

#[test]
fn slt_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    // EDDY_SLT=name runs only the files whose path holds it.
    if let Ok(only) = std::env::var("EDDY_SLT") {
        files.retain(|f| f.to_string_lossy().contains(&only));
    }
    for f in files {
        eprintln!("running {}", f.display());
        run_slt(&f);
    }
}

/// Every row of a simple query, columns joined by `|`.
async fn all(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let rows = c.simple_query(sql).await.unwrap();
    rows.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn catalog_and_data_survive_restart() {
    let mut server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE STREAM s (k int, v text) WITH (topic = 's_topic', partitions = 2);
             INSERT INTO s VALUES (1, 'one'), (2, 'two');
             CREATE VIEW big AS SELECT * FROM s WHERE k > 1;
             CREATE TABLE t (k int, n int);
             INSERT INTO t VALUES (1, 10), (2, 20), (2, 5);
             CREATE MATERIALIZED VIEW mv AS
               SELECT s.k, count(*) AS c, sum(t.n) AS total FROM s JOIN t ON s.k = t.k GROUP BY s.k;",
        )
        .await
        .unwrap();
    });
    server.restart();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        let rows = c.simple_query("SELECT v FROM big").await.unwrap();
        let vals: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(|s| s.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(vals, vec!["two".to_string()]);
        // Still a stream: more inserts work.
        c.batch_execute("INSERT INTO s VALUES (3, 'three')")
            .await
            .unwrap();
        let n = c.simple_query("SELECT count(*) FROM s").await.unwrap();
        let count = n.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|s| s.to_string()),
            _ => None,
        });
        assert_eq!(count.as_deref(), Some("3"));
    });
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        // The clean shutdown checkpointed the table and the view; the
        // restart took their state from it.
        assert_eq!(
            all(&c, "SELECT relation, kind, restored_at_start FROM eddy_catalog.checkpoints ORDER BY relation").await,
            ["mv|materialized view|t", "t|table|t"]
        );
        assert_eq!(
            all(&c, "SELECT * FROM mv ORDER BY k").await,
            ["1|1|10", "2|2|25"]
        );
        // And they go on from there.
        c.batch_execute("INSERT INTO t VALUES (1, 1); INSERT INTO s VALUES (2, 'again')")
            .await
            .unwrap();
        assert_eq!(
            all(&c, "SELECT * FROM mv ORDER BY k").await,
            ["1|2|11", "2|4|50"]
        );
    });
}

#[test]
fn inserts_reach_kafka_consumers_and_bad_records_are_counted() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE STREAM events (id int, what text) WITH (topic = 'events');
             INSERT INTO events VALUES (1, 'x');",
        )
        .await
        .unwrap();
    });
    // The record is in the topic, as JSON, for any Kafka consumer.
    let log = server.log().clone();
    let p = log.partition("events", 0).unwrap();
    let read = p.read(0, 1 << 20).unwrap();
    let recs = eddy::log::batch::decode(read.records).unwrap();
    assert_eq!(recs.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(recs[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({"id": 1, "what": "x"}));

    // A producer writes garbage and a record of the wrong shape.
    for bad in [
        &b"not json"[..],
        br#"{"id": "seven"}"#,
        br#"{"id": 2, "what": "y"}"#,
    ] {
        let b = eddy::log::batch::encode(&[eddy::log::batch::NewRecord {
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(bad)),
            timestamp: 0,
            headers: vec![],
        }])
        .unwrap();
        p.append(b, eddy::log::Durability::Os).unwrap();
    }
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        let rows = c
            .simple_query("SELECT id FROM events ORDER BY id")
            .await
            .unwrap();
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(|s| s.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec!["1".to_string(), "2".to_string()]);
        let errs = c.simple_query("SHOW DECODE_ERRORS").await.unwrap();
        let row = errs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
            }
            _ => None,
        });
        assert_eq!(row, Some(("events".to_string(), "2".to_string())));
    });
}

/// One produce batch to a PRIMARY KEY table's topic: a good record, one
/// without its key (no record key, no `id`), another good one. The bad
/// record is counted and skipped alone; its neighbours are applied.
#[test]
fn a_bad_record_in_a_keyed_batch_is_skipped_alone() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text) WITH (topic = 'users');
             CREATE MATERIALIZED VIEW user_count AS SELECT count(*) AS n FROM users;",
        )
        .await
        .unwrap();
    });
    let log = server.log().clone();
    let p = log.partition("users", 0).unwrap();
    // A compacted topic takes keyed records only, as Kafka's does.
    let records: Vec<eddy::log::batch::NewRecord> = [
        ("0", &br#"{"id": 0, "name": "a"}"#[..]),
        ("x", b"not json"),
        ("1", br#"{"id": 1, "name": "b"}"#),
        ("y", br#"{"name": "no id"}"#),
        ("2", br#"{"id": 2, "name": "c"}"#),
    ]
    .iter()
    .map(|(k, v)| eddy::log::batch::NewRecord {
        key: Some(bytes::Bytes::copy_from_slice(k.as_bytes())),
        value: Some(bytes::Bytes::copy_from_slice(v)),
        timestamp: 0,
        headers: vec![],
    })
    .collect();
    p.append(
        eddy::log::batch::encode(&records).unwrap(),
        eddy::log::Durability::Os,
    )
    .unwrap();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute("FLUSH").await.unwrap();
        assert_eq!(
            all(&c, "SELECT id, name FROM users ORDER BY id").await,
            ["0|a", "1|b", "2|c"]
        );
        assert_eq!(all(&c, "SELECT n FROM user_count").await, ["3"]);
        assert_eq!(
            all(
                &c,
                "SELECT errors, last_error LIKE '%primary key (id)%' FROM eddy_catalog.decode_errors WHERE relation = 'users'"
            )
            .await,
            ["2|t"]
        );
    });
}

/// Result columns carry PostgreSQL's names (`count`, `?column?`, a cast's
/// type), repeats included, in both protocols and in COPY's CSV header:
/// clients key rows by them.
#[test]
fn result_columns_have_postgresql_names() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute("CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x')")
            .await
            .unwrap();
        let sql = "SELECT a, count(*), a + 1, 1::int, b AS x, a AS x, (SELECT max(a) FROM t), \
                   CASE WHEN a > 0 THEN 1 END, EXISTS (SELECT 1) FROM t GROUP BY a, b";
        let want = [
            "a", "count", "?column?", "int4", "x", "x", "max", "case", "exists",
        ];
        // Simple protocol: the row description of the first row.
        let rows = c.simple_query(sql).await.unwrap();
        let names: Vec<String> = rows
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some(r.columns().iter().map(|c| c.name().to_string()).collect())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(names, want);
        // Extended protocol: Describe, then the rows.
        let stmt = c.prepare(sql).await.unwrap();
        let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, want);
        assert_eq!(c.query(&stmt, &[]).await.unwrap().len(), 1);
        // COPY's header.
        let out = c
            .copy_out("COPY (SELECT a, count(*), a + 1 FROM t GROUP BY a) TO STDOUT WITH (FORMAT csv, HEADER true)")
            .await
            .unwrap();
        futures::pin_mut!(out);
        let mut text = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut out).await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(String::from_utf8(text).unwrap(), "a,count,?column?\n1,1,2\n");
    });
}

/// Prepared point lookups (extended protocol, binary results): the
/// fast-path peek answers `WHERE key = $1` from the arrangement; its rows,
/// types and column names are those of the same query through DataFusion
/// (a cast of `$1` keeps it off the fast path), for every key, after upserts and
/// deletes, on a table and on a view.
#[test]
fn prepared_lookups_agree_with_the_planned_query() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE TABLE acct (name text, id int PRIMARY KEY, balance bigint, note text);
             INSERT INTO acct SELECT 'n' || value, value, value * 10, CASE WHEN value % 3 = 0 THEN NULL ELSE 'x' END FROM generate_series(1, 300);
             DELETE FROM acct WHERE id % 7 = 0;
             INSERT INTO acct VALUES ('again', 14, -1, 'y'), ('moved', 5, 55, NULL);
             CREATE MATERIALIZED VIEW per_note AS
               SELECT note, count(*) AS c, sum(balance) AS total FROM acct GROUP BY note;",
        )
        .await
        .unwrap();
        let fast = c
            .prepare("SELECT * FROM acct WHERE id = $1")
            .await
            .unwrap();
        let planned = c
            .prepare("SELECT * FROM acct WHERE id = CAST($1 AS int)")
            .await
            .unwrap();
        let cols = |s: &tokio_postgres::Statement| {
            s.columns()
                .iter()
                .map(|c| format!("{} {}", c.name(), c.type_()))
                .collect::<Vec<_>>()
        };
        assert_eq!(cols(&fast), cols(&planned));
        let show = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{:?} {:?} {:?} {:?}",
                        r.get::<_, Option<String>>(0),
                        r.get::<_, Option<i32>>(1),
                        r.get::<_, Option<i64>>(2),
                        r.get::<_, Option<String>>(3)
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut found = 0;
        for id in -1..=305i32 {
            let a = show(c.query(&fast, &[&id]).await.unwrap());
            let b = show(c.query(&planned, &[&id]).await.unwrap());
            assert_eq!(a, b, "id {id}");
            found += a.len();
        }
        assert_eq!(found, 300 - 42 + 1);
        // The view, by its GROUP BY key, with a projection and an alias.
        let fast = c
            .prepare("SELECT v.total AS t, c FROM per_note AS v WHERE v.note = $1")
            .await
            .unwrap();
        let planned = c
            .prepare("SELECT v.total AS t, c FROM per_note AS v WHERE v.note = $1 || ''")
            .await
            .unwrap();
        assert_eq!(cols(&fast), cols(&planned));
        assert_eq!(cols(&fast), ["t int8", "c int8"]);
        for note in ["x", "y", "z"] {
            let a: Vec<(i64, i64)> = c
                .query(&fast, &[&note])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let b: Vec<(i64, i64)> = c
                .query(&planned, &[&note])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(a, b, "note {note}");
        }
        // A NULL parameter matches nothing, as `= NULL` does.
        let fast = c
            .prepare("SELECT count(*) FROM acct WHERE id = $1")
            .await
            .unwrap();
        let none: Option<i32> = None;
        let n: i64 = c.query_one(&fast, &[&none]).await.unwrap().get(0);
        assert_eq!(n, 0);
    });
}
