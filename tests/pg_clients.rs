//! PostgreSQL clients as they really talk to eddy, against a real server:
//! tokio-postgres over the extended protocol (prepared statements with
//! typed parameters, eddy's own statements included, COPY in and out), psql
//! (its `\d` family of catalog queries, `\copy`), and bad input (garbage and
//! oversized frames, a client that disconnects mid-COPY): each gives a
//! SQLSTATE error or closes that one session, and the server and its data
//! are unaffected.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;

use bytes::Bytes;
use common::TestServer;
use common::slt::connect;
use futures::SinkExt;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

async fn count(c: &tokio_postgres::Client, rel: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {rel}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[test]
fn extended_protocol_runs_every_statement_with_parameters() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        // eddy's own DDL through Parse/Bind/Execute.
        c.execute(
            "CREATE TABLE acct (id int, owner text, balance double precision)",
            &[],
        )
        .await
        .unwrap();
        c.execute(
            "CREATE MATERIALIZED VIEW totals AS SELECT owner, sum(balance) AS total FROM acct GROUP BY owner",
            &[],
        )
        .await
        .unwrap();
        let insert = c
            .prepare("INSERT INTO acct VALUES ($1, $2, $3)")
            .await
            .unwrap();
        for (id, owner, balance) in [(1i32, "ann", 10.5f64), (2, "bob", 2.0), (3, "ann", 1.5)] {
            let n = c
                .execute(&insert, &[&id, &owner, &balance])
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        // Typed parameters in a query; results arrive as binary values.
        let row = c
            .query_one("SELECT owner, balance FROM acct WHERE id = $1", &[&2i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "bob");
        assert_eq!(row.get::<_, f64>(1), 2.0);
        // UPDATE and DELETE with parameters: the engine's own statements,
        // their parameter types described from the query they run.
        let n = c
            .execute(
                "UPDATE acct SET balance = $1 WHERE id = $2",
                &[&99.0f64, &1i32],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let n = c
            .execute("DELETE FROM acct WHERE owner = $1", &[&"bob"])
            .await
            .unwrap();
        assert_eq!(n, 1);
        // Read-your-writes through the materialized view.
        let rows = c
            .query("SELECT owner, total FROM totals ORDER BY owner", &[])
            .await
            .unwrap();
        let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, vec![("ann".to_string(), 100.5)]);
        // SHOW and the system tables are queries like any other.
        let tables: Vec<String> = c
            .query("SHOW TABLES", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(tables, vec!["acct".to_string()]);
        let kinds: Vec<(String, String)> = c
            .query(
                "SELECT name, kind FROM eddy_catalog.relations WHERE kind <> $1 ORDER BY name",
                &[&"view"],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("acct".to_string(), "table".to_string()),
                ("totals".to_string(), "materialized view".to_string()),
            ]
        );
        // COPY … TO STDOUT over the extended protocol.
        let out = c
            .copy_out("COPY (SELECT id, owner, balance FROM acct ORDER BY id) TO STDOUT")
            .await
            .unwrap();
        futures::pin_mut!(out);
        let mut text = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut out).await {
            text.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(String::from_utf8(text).unwrap(), "1\tann\t99\n3\tann\t1.5\n");
        // Errors carry SQLSTATEs in this protocol too.
        let e = c.execute("SELEC 1", &[]).await.unwrap_err();
        assert_eq!(code(&e), "42601");
        let e = c.query("SELECT * FROM nope", &[]).await.unwrap_err();
        assert_eq!(code(&e), "42P01");
        let e = c
            .execute("DELETE FROM nope WHERE id = $1", &[&1i32])
            .await
            .unwrap_err();
        assert_eq!(code(&e), "42P01");
        let e = c
            .execute("CREATE TABLE acct (x int)", &[])
            .await
            .unwrap_err();
        assert_eq!(code(&e), "42P07");
        // A NULL primary key: 23502 (typed through Arrow and DataFusion),
        // from a bound parameter and from the simple protocol alike.
        c.batch_execute("CREATE TABLE keyed (id int PRIMARY KEY, v text)")
            .await
            .unwrap();
        let e = c
            .execute("INSERT INTO keyed VALUES ($1, 'x')", &[&None::<i32>])
            .await
            .unwrap_err();
        assert_eq!(code(&e), "23502");
        let e = c
            .batch_execute("INSERT INTO keyed VALUES (NULL, 'x')")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "23502");
        // The session is still fine.
        assert_eq!(count(&c, "acct").await, 2);
    });
}

#[test]
fn copy_from_stdin_loads_tables_and_streams_all_or_nothing() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE TABLE acct (id int, owner text, balance double precision);
             CREATE STREAM events (id int, what text, at timestamp) WITH (topic = 'events');",
        )
        .await
        .unwrap();
        // Text format: tabs, \N for NULL, escapes.
        let sink = c.copy_in("COPY acct FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"1\tann\t1.5\n2\t\\N\t2\n"))
            .await
            .unwrap();
        sink.send(Bytes::from_static(b"3\tc\\td\t-0.25\n"))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 3);
        let rows = c
            .query("SELECT id, owner FROM acct ORDER BY id", &[])
            .await
            .unwrap();
        let got: Vec<(i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            got,
            vec![(1, Some("ann".into())), (2, None), (3, Some("c\td".into()))]
        );
        // CSV with a header and a column list into a stream: the records
        // land in its topic, for Kafka consumers.
        let sink = c
            .copy_in("COPY events (what, id) FROM STDIN WITH (FORMAT csv, HEADER true)")
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"what,id\n\"a, quoted\",1\n,2\n"))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 2);
        let rows = c
            .query("SELECT id, what, at FROM events ORDER BY id", &[])
            .await
            .unwrap();
        let got: Vec<(i32, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, vec![(1, Some("a, quoted".into())), (2, None)]);
        let end = server.log().partition("events", 0).unwrap().log_end();
        assert_eq!(end, 2);

        // A value that does not fit: 22P02 naming the line; nothing written.
        let sink = c.copy_in("COPY acct FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"4\tok\t1\nfive\tbad\t1\n"))
            .await
            .unwrap();
        let e = sink.finish().await.unwrap_err();
        assert_eq!(code(&e), "22P02", "{e:?}");
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains("five") && msg.contains("line 2"), "{msg}");
        // Too few columns: 22P04.
        let sink = c.copy_in("COPY acct FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"4\tok\n")).await.unwrap();
        let e = sink.finish().await.unwrap_err();
        assert_eq!(code(&e), "22P04", "{e:?}");
        assert_eq!(count(&c, "acct").await, 3);
        // Unknown relation or column (as psql sends it: tokio-postgres's
        // copy_in follows a failed start with CopyFail and a second Sync,
        // which leaves its own connection out of step, with PostgreSQL too).
        let e = c.simple_query("COPY nope FROM STDIN").await.unwrap_err();
        assert_eq!(code(&e), "42P01");
        let e = c
            .simple_query("COPY acct (zzz) FROM STDIN")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "42703");
        assert_eq!(count(&c, "acct").await, 3);
    });

    // A client that disconnects mid-COPY writes nothing; the server goes on.
    rt().block_on(async {
        let conn_str = format!(
            "host={} port={} user=eddy dbname=eddy",
            server.pg_addr.ip(),
            server.pg_addr.port()
        );
        let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let sink = client.copy_in("COPY acct FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"10\tgone\t1\n"))
            .await
            .unwrap();
        sink.flush().await.unwrap();
        task.abort(); // the socket closes with the COPY unfinished
        let _ = task.await;
    });
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        assert_eq!(count(&c, "acct").await, 3);
    });

    // psql's \copy (COPY … FROM STDIN underneath) from a CSV file.
    let csv = server.dir.path().join("more.csv");
    std::fs::write(&csv, "7,psql,7.5\n8,\"x,y\",\n").unwrap();
    let out = psql(
        &server,
        &format!("\\copy acct from '{}' csv", csv.display()),
    );
    assert_eq!(out.trim(), "COPY 2");
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        assert_eq!(count(&c, "acct").await, 5);
    });
}

fn psql(server: &TestServer, command: &str) -> String {
    let (stdout, stderr) = psql_allowing_stderr(server, command);
    assert!(
        stderr.is_empty(),
        "psql -c {command:?}:\n{stdout}\n{stderr}"
    );
    stdout
}

fn psql_allowing_stderr(server: &TestServer, command: &str) -> (String, String) {
    let out = common::psql_command(server.pg_addr)
        // One -c per line: psql runs them in order, backslash commands too.
        .args(command.lines().flat_map(|l| ["-c", l]))
        .output()
        .expect("psql is installed (.ci/run installs postgresql-client)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "psql -c {command:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn psql_describe_commands_work() {
    let server = TestServer::start();
    psql(
        &server,
        "CREATE TABLE acct (id int, owner text, balance double precision)",
    );
    psql(
        &server,
        "CREATE STREAM ev (id int, what text) WITH (topic = 'ev')",
    );
    psql(
        &server,
        "CREATE VIEW rich AS SELECT * FROM acct WHERE balance > 10",
    );
    psql(
        &server,
        "CREATE MATERIALIZED VIEW n AS SELECT owner, count(*) AS n FROM acct GROUP BY owner",
    );
    let d = psql(&server, "\\d");
    for name in ["acct", "ev", "rich", "n"] {
        assert!(
            d.lines().any(|l| l.contains(&format!("| {name} "))),
            "\\d lists {name}:\n{d}"
        );
    }
    let dt = psql(&server, "\\dt");
    assert!(dt.contains("acct") && !dt.contains("rich"), "{dt}");
    let dv = psql(&server, "\\dv");
    assert!(dv.contains("rich") && !dv.contains("| n "), "{dv}");
    // pg_class says relkind 'm' for materialized views.
    let dm = psql(&server, "\\dm");
    assert!(
        dm.lines()
            .any(|l| l.contains("| n ") && l.contains("materialized view")),
        "{dm}"
    );
    let n = psql(&server, "\\d n");
    assert!(n.contains("Materialized view \"public.n\""), "{n}");
    // The + forms and the other lists psql users type run without errors.
    let plus = psql(&server, "\\d+");
    assert!(plus.contains("acct") && plus.contains("Size"), "{plus}");
    for command in [
        "\\df",
        "\\dT",
        "\\dT+",
        "\\l+",
        "\\dn+",
        "\\du",
        "\\dm+",
        "\\dt+",
        "\\d+ n",
        "\\d+ acct",
        "\\dp",
        "\\do",
        "\\db",
        "\\dD",
        "\\dy",
        "\\dx",
        "\\dC",
    ] {
        psql_allowing_stderr(&server, command);
    }
    let acct = psql(&server, "\\d acct");
    assert!(acct.contains("Table \"public.acct\""), "{acct}");
    for (col, ty) in [
        ("id", "integer"),
        ("owner", "text"),
        ("balance", "double precision"),
    ] {
        assert!(
            acct.lines()
                .any(|l| l.split('|').map(str::trim).take(2).eq([col, ty])),
            "\\d acct shows {col} {ty}:\n{acct}"
        );
    }
    let l = psql(&server, "\\l");
    assert!(l.contains("eddy"), "{l}");
    let dn = psql(&server, "\\dn");
    assert!(dn.contains("public") && dn.contains("eddy_catalog"), "{dn}");
    let timing = psql(&server, "\\timing on\nSELECT 1");
    assert!(timing.contains("Time:"), "{timing}");
}

/// Send raw bytes on a new pgwire connection; return what the server sent
/// back before it closed the connection (or stopped answering).
fn raw_exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(server.pg_addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn startup() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes()); // protocol 3.0
    for kv in ["user", "eddy", "database", "eddy"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

#[test]
fn garbage_and_oversized_frames_close_only_that_session() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);")
            .await
            .unwrap();
    });
    // A startup packet claiming to be 1 GiB.
    raw_exchange(&server, &(1i32 << 30).to_be_bytes());
    // Garbage instead of a startup packet.
    raw_exchange(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // After a good startup: a Query message claiming 2 GiB - 1 bytes.
    let mut m = startup();
    m.push(b'Q');
    m.extend_from_slice(&i32::MAX.to_be_bytes());
    m.extend_from_slice(b"SELECT 1");
    let reply = raw_exchange(&server, &m);
    assert!(
        reply.first() == Some(&b'R'),
        "the startup was answered before the bad frame"
    );
    // An unknown message type after startup.
    let mut m = startup();
    m.extend_from_slice(&[b'~', 0, 0, 0, 4]);
    raw_exchange(&server, &m);
    // A negative length.
    let mut m = startup();
    m.push(b'Q');
    m.extend_from_slice(&(-5i32).to_be_bytes());
    raw_exchange(&server, &m);
    // The server and the data are fine.
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        assert_eq!(count(&c, "t").await, 2);
        let e = c.simple_query("SELECT 1 +").await.unwrap_err();
        assert_eq!(code(&e), "42601");
        // The error points at where the statement went wrong, for psql's caret.
        let e = c.simple_query("SELECT 1;\nSELEC 2").await.unwrap_err();
        assert_eq!(code(&e), "42601");
        assert!(
            matches!(
                e.as_db_error().and_then(|d| d.position()),
                Some(tokio_postgres::error::ErrorPosition::Original(p)) if *p >= 11
            ),
            "{e:?}"
        );
        let e = c.simple_query("SELECT 'abc'::int").await.unwrap_err();
        assert_eq!(code(&e), "22P02");
        let e = c
            .simple_query("INSERT INTO t VALUES (99999999999)")
            .await
            .unwrap_err();
        assert!(
            ["22003", "22P02", "22000"].contains(&code(&e).as_str()),
            "{e:?}"
        );
        assert_eq!(count(&c, "t").await, 2);
    });
}

/// Run `tests/python/<script>` against `server` (PGHOST/PGPORT), after
/// checking its client library `module` is installed; its stdout.
fn run_python_client(server: &TestServer, module: &str, install: &str, script: &str) -> String {
    let have = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "{module} is required (pip install {install}, or run scripts/test, which installs it)"
    );
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .env("PGHOST", server.pg_addr.ip().to_string())
        .env("PGPORT", server.pg_addr.port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn psycopg_session_with_parameters() {
    let server = TestServer::start();
    let stdout = run_python_client(
        &server,
        "psycopg",
        "'psycopg[binary]'",
        "psycopg_session.py",
    );
    assert_eq!(
        stdout,
        "updated 1
deleted 1
row ('Grand Theft Auto V', 1, 100)
row ('League of Legends', 1, 80)
copy ['21779|League of Legends|2|110', '32982|Grand Theft Auto V|1|100', '509658|Just Chatting|1|1000']
binary -2|40000|1099511627776|1.5|-0.25|t|h\u{e9}llo|{\"a\": [1, 2]}|12345678-1234-5678-1234-567812345678|\\\\x00ff|-12345.678|2024-02-29|2024-01-02 03:04:05.678901|2024-01-02 03:04:05+00|3 days 00:00:04.000005
binary \\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N|\\N
binary error 22P03
typed 2
views [('per_game', 3, 'running')]
error 42P01
count 5
transaction 0 [('t2',), ('t3',)]
"
    );
}

/// SQLAlchemy 2's ORM and Core and pandas through an engine, unchanged:
/// the dialect's first-connect probes (version(), to_regtype), table and
/// column reflection (correlated subqueries inside CASE over the
/// catalogs), sessions that commit and roll back, read_sql and to_sql.
#[test]
fn sqlalchemy_and_pandas() {
    let server = TestServer::start();
    let stdout = run_python_client(
        &server,
        "sqlalchemy, pandas",
        "sqlalchemy pandas",
        "sqlalchemy_pandas.py",
    );
    assert_eq!(
        stdout,
        "tables ['games']
columns ['id', 'name', 'viewers']
orm [(1, 'Fortnite', 450), (2, 'Just Chatting', 2000)]
core ['Just Chatting']
view 2450
 id          name
  1      Fortnite
  2 Just Chatting
 x y
 1 a
 2 b
 3 c
"
    );
}

/// asyncpg's pool and its binary formats for jsonb, uuid, numeric and
/// timestamptz, as parameters (described as those types) and results.
#[test]
fn asyncpg_pool_and_types() {
    let server = TestServer::start();
    let stdout = run_python_client(&server, "asyncpg", "asyncpg", "asyncpg_pool.py");
    assert_eq!(
        stdout,
        "row 12345678-1234-5678-1234-567812345678 {'game': 'Fortnite', 'tags': ['a', 'b']} 12.5 2024-01-02T03:04:05+00:00
field Fortnite
param v
count 1
"
    );
}

/// psycopg's named cursors: DECLARE with parameters, the cursor described
/// by name, rows fetched a few at a time (the client crashed when the
/// cursor described no columns).
#[test]
fn psycopg_named_cursors() {
    let server = TestServer::start();
    let stdout = run_python_client(
        &server,
        "psycopg",
        "'psycopg[binary]'",
        "psycopg_cursors.py",
    );
    assert_eq!(
        stdout,
        "description ['id', 'u', 'doc']
one (3, UUID('00000000-0000-0000-0000-000000000003'), {'n': 3, 'even': False})
many [(4, UUID('00000000-0000-0000-0000-000000000004'), {'n': 4, 'even': True}), (5, UUID('00000000-0000-0000-0000-000000000005'), {'n': 5, 'even': False})]
rest [6, 7]
iter ['2', '4', '6']
"
    );
}

/// pgJDBC unchanged: executeBatch counts one row per INSERT and the same
/// statement then executes as an update (an INSERT is described with
/// NoData, not as a result of no columns), prepared queries, metadata,
/// rollback.
#[test]
fn jdbc_batch_prepared_and_metadata() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists()
            && Command::new("javac").arg("-version").output().is_ok(),
        "pgJDBC and a JDK are required (apt-get install libpostgresql-jdbc-java default-jdk-headless, or run scripts/test, which installs them)"
    );
    let classes = tempfile::tempdir().unwrap();
    let src = format!("{}/tests/java/JdbcSession.java", env!("CARGO_MANIFEST_DIR"));
    let javac = Command::new("javac")
        .args(["-cp", jar, "-d"])
        .arg(classes.path())
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let server = TestServer::start();
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{jar}:{}", classes.path().display()))
        .arg("JdbcSession")
        .env("PGHOST", server.pg_addr.ip().to_string())
        .env("PGPORT", server.pg_addr.port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| !l.starts_with("product"))
            .collect::<Vec<_>>(),
        vec![
            "batch [1, 1, 1, 1, 1]",
            "update 1",
            "row 4 n4 6.0",
            "row 5 n5 7.5",
            "row 6 n6 9.0",
            "table jb",
            "column id int4",
            "column name text",
            "column score float8",
            "count 6",
        ]
    );
}

/// A CancelRequest (psql's Ctrl-C; here tokio-postgres's cancel token)
/// stops the running query with 57014 and leaves the session usable.
#[test]
fn cancel_request_stops_a_running_query() {
    let server = TestServer::start();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        let token = c.cancel_token();
        let long = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";
        for simple in [true, false] {
            let started = std::time::Instant::now();
            let canceller = tokio::spawn({
                let token = token.clone();
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
                }
            });
            let e = if simple {
                c.simple_query(long).await.map(|_| ()).unwrap_err()
            } else {
                c.query(long, &[]).await.map(|_| ()).unwrap_err()
            };
            canceller.await.unwrap();
            assert_eq!(code(&e), "57014", "{e:?}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "cancelled promptly"
            );
            let one: i64 = c.query_one("SELECT 1::bigint", &[]).await.unwrap().get(0);
            assert_eq!(one, 1);
        }
    });
}

/// What pgcli's completion refresher queries at connect (schemas, tables,
/// views and their columns, databases, types, functions) works through
/// pgcli's own code.
#[test]
fn pgcli_completion_metadata() {
    let server = TestServer::start();
    psql(
        &server,
        "CREATE TABLE acct (id int, owner text)\nCREATE MATERIALIZED VIEW per_owner AS SELECT owner, count(*) AS n FROM acct GROUP BY owner",
    );
    let stdout = run_python_client(&server, "pgcli.pgexecute", "pgcli", "pgcli_completion.py");
    for line in [
        "schemata ['eddy_catalog', 'pg_catalog', 'public']",
        "tables ['acct']",
        "views ['per_owner']",
        "table_columns [('acct', 'id'), ('acct', 'owner')]",
        "view_columns [('per_owner', 'n'), ('per_owner', 'owner')]",
        "databases ['eddy', 'postgres']",
        "functions True",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}\n{stdout}");
    }
}

/// `COPY (SUBSCRIBE …) TO STDOUT` in the real psql: rows appear as they
/// change, and Ctrl-C (SIGINT: psql sends a CancelRequest) ends it with
/// PostgreSQL's cancel message, the server fine. (psql's stdout is a pipe
/// here, so `stdbuf` makes it line-buffered as on a terminal.)
#[test]
fn psql_subscribe_streams_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;
    let server = TestServer::start();
    psql(
        &server,
        "CREATE TABLE clicks (page text); INSERT INTO clicks VALUES ('home'); \
         CREATE MATERIALIZED VIEW per_page AS SELECT page, count(*) AS n FROM clicks GROUP BY page;",
    );
    let psql_args: Vec<String> = common::psql_command(server.pg_addr)
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut child = std::process::Command::new("stdbuf")
        .arg("-oL")
        .arg("psql")
        .args(&psql_args)
        .args(["-c", "COPY (SUBSCRIBE per_page) TO STDOUT"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive on a channel, so a missing one fails the test in time.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut next = || match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line.split('\t').skip(1).collect::<Vec<_>>().join(" "),
        Err(e) => {
            let _ = child.kill();
            panic!("no SUBSCRIBE row from psql within 20 s: {e}");
        }
    };
    assert_eq!(next(), "1 home 1");
    psql(&server, "INSERT INTO clicks VALUES ('about')");
    assert_eq!(next(), "1 about 1");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Should psql not stop, it is killed rather than left to hang the run.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    });
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    let after = psql(&server, "SELECT count(*) FROM per_page");
    assert!(after.contains("     2\n(1 row)"), "{after}");
}

/// A materialized view created over a stream that already holds much
/// data tells psql how its backfill goes: a NOTICE every interval (two
/// seconds by default; short here, so that a fast machine still sees one
/// while the second of the backfill's two passes runs), psql printing each
/// as it comes, then the view whole.
#[test]
fn a_long_backfill_reports_progress_to_psql() {
    // Past one tick pass (MAX_RECORDS_PER_TICK, 2^20), so the backfill
    // takes two and is seen part-way.
    const N: i64 = 1_500_000;
    let server = TestServer::start_with(eddy::server::ServeArgs {
        progress_notice_interval_ms: 20,
        ..Default::default()
    });
    psql(
        &server,
        &format!(
            "CREATE STREAM ev (id bigint, g int) WITH (topic = 'ev', format = 'json', partitions = 2)
INSERT INTO ev SELECT x, x % 10 FROM generate_series(1, {N}) AS t(x)"
        ),
    );
    let (stdout, stderr) = psql_allowing_stderr(
        &server,
        "CREATE MATERIALIZED VIEW per_g AS SELECT g, count(*) AS n FROM ev GROUP BY g
SELECT sum(n), count(*) FROM per_g",
    );
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("NOTICE:  materialized view \"per_g\" is catching up: "))
        .collect();
    assert!(!notices.is_empty(), "no progress in:\n{stderr}");
    for n in &notices {
        let words: Vec<&str> = n.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "of").unwrap();
        let read: i64 = words[at - 1].parse().unwrap();
        let total: i64 = words[at + 1].parse().unwrap();
        assert!(read < total && total == N, "{n}");
    }
    assert!(
        stdout.contains(&format!(" {N} |    10")),
        "the view is whole after the notices:\n{stdout}"
    );
}
