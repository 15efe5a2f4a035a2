//! Authentication and privileges against a real `eddy serve` process,
//! with the clients people use: tokio-postgres, psql, psycopg (pgwire md5
//! and SCRAM-SHA-256), rdkafka, kcat and confluent-kafka (Kafka SASL PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512). Wrong passwords, unknown roles and
//! NOLOGIN roles are refused with PostgreSQL's SQLSTATEs or Kafka's
//! SASL_AUTHENTICATION_FAILED; a role holds only what was granted to it,
//! on both protocols, and a REVOKE applies to sessions already open.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serve::Serve;
use tokio_postgres::NoTls;

const BIN: &str = env!("CARGO_BIN_EXE_eddy");

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn url(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    format!(
        "host={} port={} user='{user}' password='{password}' dbname=eddy",
        addr.ip(),
        addr.port()
    )
}

/// Connect; the SQLSTATE of the refusal if refused.
async fn login(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, String> {
    match tokio_postgres::connect(&url(addr, user, password), NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("not a server error: {e}"))),
    }
}

async fn code(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("not a server error: {e}")),
    }
}

async fn extended_code(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.query(sql, &[]).await {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("not a server error: {e}")),
    }
}

async fn first_column(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

fn psql(addr: std::net::SocketAddr, user: &str, password: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            user,
            "-d",
            "eddy",
            "-w",
            "-XAtc",
            sql,
        ])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql is required (apt-get install postgresql-client, or scripts/test)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn pg_passwords_md5_and_scram() {
    for method in ["scram-sha-256", "md5"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Serve::start_with(
            BIN,
            dir.path(),
            &["--pg-auth", method, "--superuser-password", "adminpw"],
        );
        rt().block_on(async {
            let admin = login(server.pg, "eddy", "adminpw").await.unwrap();
            assert_eq!(first_column(&admin, "SELECT 1").await, ["1"]);
            assert_eq!(login(server.pg, "eddy", "wrong").await.err().unwrap(), "28P01");
            assert_eq!(login(server.pg, "nobody", "x").await.err().unwrap(), "28P01");
            for sql in [
                "CREATE ROLE alice LOGIN PASSWORD 'alice pw'",
                "CREATE USER bob PASSWORD 'bob'",
                "CREATE ROLE carol PASSWORD 'carol'",
                "CREATE ROLE dave LOGIN",
            ] {
                assert_eq!(code(&admin, sql).await, "ok", "{sql}");
            }
            assert_eq!(code(&admin, "CREATE ROLE alice").await, "42710");
            assert_eq!(code(&admin, "ALTER ROLE nobody PASSWORD 'x'").await, "42704");
            assert!(login(server.pg, "alice", "alice pw").await.is_ok());
            assert!(login(server.pg, "bob", "bob").await.is_ok(), "CREATE USER logs in");
            // No LOGIN, and no password: refused.
            assert_eq!(login(server.pg, "carol", "carol").await.err().unwrap(), "28000");
            assert_eq!(login(server.pg, "dave", "").await.err().unwrap(), "28P01");
            assert_eq!(
                first_column(
                    &admin,
                    "SELECT name || ':' || login || ':' || superuser || ':' || password FROM eddy_catalog.roles ORDER BY name"
                )
                .await,
                [
                    "alice:true:false:true",
                    "bob:true:false:true",
                    "carol:false:false:true",
                    "dave:true:false:false",
                    "eddy:true:true:true"
                ]
            );

            // A role changes its own password; the old one stops working.
            let alice = login(server.pg, "alice", "alice pw").await.unwrap();
            assert_eq!(code(&alice, "ALTER ROLE alice PASSWORD 'fresh'").await, "ok");
            assert_eq!(code(&alice, "ALTER ROLE bob PASSWORD 'mine'").await, "42501");
            assert_eq!(login(server.pg, "alice", "alice pw").await.err().unwrap(), "28P01");
            assert!(login(server.pg, "alice", "fresh").await.is_ok());

            // psql and psycopg through their usual paths.
            let (ok, out) = psql(server.pg, "alice", "fresh", "SELECT 40 + 2");
            assert!(ok && out.trim() == "42", "{out}");
            let (ok, out) = psql(server.pg, "alice", "stale", "SELECT 1");
            assert!(!ok && out.contains("password authentication failed"), "{out}");
            let py = Command::new("python3")
                .args([
                    "-c",
                    &format!(
                        "import psycopg\n\
                         c = psycopg.connect(host='{}', port={}, user='alice', password='fresh', dbname='eddy')\n\
                         print(c.execute('SELECT %s::int + 1', (41,)).fetchone()[0])\n\
                         try:\n    psycopg.connect(host='{}', port={}, user='alice', password='no', dbname='eddy')\n    print('let in')\n\
                         except psycopg.OperationalError as e:\n    print('refused' if 'password authentication failed' in str(e) else e)\n",
                        server.pg.ip(),
                        server.pg.port(),
                        server.pg.ip(),
                        server.pg.port()
                    ),
                ])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&py.stdout).to_string()
                + &String::from_utf8_lossy(&py.stderr);
            assert_eq!(out.trim(), "42\nrefused", "{method}: {out}");

            assert_eq!(code(&admin, "DROP ROLE alice, bob").await, "ok");
            assert_eq!(code(&admin, "DROP ROLE alice").await, "42704");
            assert_eq!(code(&admin, "DROP ROLE IF EXISTS alice").await, "ok");
            assert_eq!(login(server.pg, "alice", "fresh").await.err().unwrap(), "28P01");
        });
        // Roles are durable: after a restart the same logins hold.
        drop(server);
        let server = Serve::start_with(BIN, dir.path(), &["--pg-auth", method]);
        rt().block_on(async {
            assert!(login(server.pg, "eddy", "adminpw").await.is_ok());
            assert_eq!(
                login(server.pg, "carol", "carol").await.err().unwrap(),
                "28000"
            );
        });
    }
}

#[test]
fn privileges_are_enforced_on_pgwire() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start_with(
        BIN,
        dir.path(),
        &[
            "--pg-auth",
            "scram-sha-256",
            "--superuser-password",
            "adminpw",
        ],
    );
    rt().block_on(async {
        let admin = login(server.pg, "eddy", "adminpw").await.unwrap();
        for sql in [
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int)",
            "INSERT INTO accounts VALUES (1, 'a', 10), (2, 'b', 20)",
            "CREATE TABLE secrets (k text PRIMARY KEY, v text)",
            "INSERT INTO secrets VALUES ('x', 'hidden')",
            "CREATE MATERIALIZED VIEW totals AS SELECT sum(balance) AS total FROM accounts",
            "CREATE ROLE analyst LOGIN PASSWORD 'an'",
        ] {
            assert_eq!(code(&admin, sql).await, "ok", "{sql}");
        }
        let a = login(server.pg, "analyst", "an").await.unwrap();
        // Nothing granted yet: reads, writes, DDL and COPY refused, in both
        // protocols; PostgreSQL's catalogs stay readable (psql's \d).
        for sql in [
            "SELECT * FROM accounts",
            "SELECT * FROM totals",
            "SELECT count(*) FROM (SELECT * FROM accounts) x",
            "COPY accounts TO STDOUT",
            "COPY (SELECT * FROM secrets) TO STDOUT",
            "INSERT INTO accounts VALUES (3, 'c', 30)",
            "DELETE FROM accounts WHERE id = 1",
            "UPDATE accounts SET balance = 0",
            "CREATE TABLE mine (a int)",
            "DROP TABLE secrets",
            "CREATE ROLE other",
            "GRANT SELECT ON accounts TO analyst",
            "SUBSCRIBE accounts",
        ] {
            assert_eq!(code(&a, sql).await, "42501", "{sql}");
        }
        assert_eq!(extended_code(&a, "SELECT * FROM accounts").await, "42501");
        assert_eq!(code(&a, "SELECT relname FROM pg_catalog.pg_class LIMIT 1").await, "ok");
        assert_eq!(code(&a, "SELECT 1").await, "ok");

        // SELECT on a view is enough to read it (not its base table).
        assert_eq!(code(&admin, "GRANT SELECT ON totals TO analyst").await, "ok");
        assert_eq!(first_column(&a, "SELECT total FROM totals").await, ["30"]);
        assert_eq!(code(&a, "SELECT * FROM accounts").await, "42501");

        assert_eq!(code(&admin, "GRANT SELECT, INSERT ON TABLE accounts TO analyst").await, "ok");
        assert_eq!(
            first_column(&a, "SELECT owner FROM accounts ORDER BY id").await,
            ["a", "b"]
        );
        assert_eq!(extended_code(&a, "SELECT owner FROM accounts").await, "ok");
        assert_eq!(code(&a, "INSERT INTO accounts VALUES (3, 'c', 30)").await, "ok");
        // INSERT … SELECT reads too: SELECT on the source is needed.
        assert_eq!(
            code(&a, "INSERT INTO accounts SELECT 9, k, 0 FROM secrets").await,
            "42501"
        );
        assert_eq!(code(&a, "UPDATE accounts SET balance = 0").await, "42501");
        assert_eq!(code(&a, "SELECT * FROM accounts JOIN secrets ON true").await, "42501");
        assert_eq!(code(&admin, "FLUSH").await, "ok");
        assert_eq!(first_column(&a, "SELECT total FROM totals").await, ["60"]);
        assert_eq!(
            first_column(
                &admin,
                "SELECT role || ' ' || relation || ' ' || privilege FROM eddy_catalog.privileges ORDER BY 1"
            )
            .await,
            [
                "analyst accounts INSERT",
                "analyst accounts SELECT",
                "analyst totals SELECT"
            ]
        );

        // A REVOKE applies to the open session, in both protocols.
        assert_eq!(code(&admin, "REVOKE SELECT ON accounts FROM analyst").await, "ok");
        assert_eq!(code(&a, "SELECT * FROM accounts").await, "42501");
        assert_eq!(extended_code(&a, "SELECT * FROM accounts").await, "42501");
        assert_eq!(code(&a, "INSERT INTO accounts VALUES (4, 'd', 40)").await, "ok");

        // Dropping a relation drops its privileges: a new one of that name
        // starts with none.
        assert_eq!(code(&admin, "DROP MATERIALIZED VIEW totals").await, "ok");
        assert_eq!(
            code(&admin, "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM accounts").await,
            "ok"
        );
        assert_eq!(code(&a, "SELECT * FROM totals").await, "42501");
        assert_eq!(code(&admin, "GRANT SELECT ON nope TO analyst").await, "42P01");
        assert_eq!(code(&admin, "GRANT SELECT ON accounts TO nobody").await, "42704");
    });
}

#[test]
fn trust_connects_as_the_named_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    rt().block_on(async {
        // Any name that is no role is trusted as a superuser, as before.
        let admin = login(server.pg, "whoever", "").await.unwrap();
        for sql in [
            "CREATE TABLE t (id int PRIMARY KEY)",
            "CREATE ROLE viewer LOGIN",
            "CREATE ROLE locked",
        ] {
            assert_eq!(code(&admin, sql).await, "ok", "{sql}");
        }
        // A role that exists is that role: its privileges, its LOGIN.
        let v = login(server.pg, "viewer", "").await.unwrap();
        assert_eq!(code(&v, "SELECT * FROM t").await, "42501");
        assert_eq!(login(server.pg, "locked", "").await.err().unwrap(), "28000");
    });
}

fn sasl(addr: &str, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "6000")
        .set("socket.timeout.ms", "5000");
    c
}

#[test]
fn kafka_sasl_and_topic_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start_with(
        BIN,
        dir.path(),
        &[
            "--kafka-sasl",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "--superuser-password",
            "adminpw",
        ],
    );
    let kafka = server.kafka.clone();
    rt().block_on(async {
        let admin = login(server.pg, "eddy", "adminpw").await.unwrap();
        for sql in [
            "CREATE STREAM events (n int) WITH (topic = 'events', format = 'json')",
            "CREATE ROLE writer LOGIN PASSWORD 'w-pw'",
            "CREATE ROLE reader LOGIN PASSWORD 'r-pw'",
            "GRANT INSERT ON events TO writer",
            "GRANT SELECT ON events TO reader",
        ] {
            assert_eq!(code(&admin, sql).await, "ok", "{sql}");
        }
        // Each mechanism logs in and produces; a role without INSERT, a
        // wrong password and a client without SASL cannot.
        // The rdkafka crate's bundled librdkafka is built without OpenSSL,
        // so PLAIN only here; kcat and confluent-kafka below use SCRAM.
        for (i, mechanism) in ["PLAIN"].iter().enumerate() {
            let p: FutureProducer = sasl(&kafka, mechanism, "writer", "w-pw").create().unwrap();
            let r = p
                .send(
                    FutureRecord::to("events")
                        .key("k")
                        .payload(&format!("{{\"n\": {i}}}")),
                    Duration::from_secs(10),
                )
                .await;
            assert!(r.is_ok(), "{mechanism}: {r:?}");

            let p: FutureProducer = sasl(&kafka, mechanism, "reader", "r-pw").create().unwrap();
            let r = p
                .send(
                    FutureRecord::to("events").key("k").payload("{\"n\": 99}"),
                    Duration::from_secs(10),
                )
                .await;
            let err = format!("{:?}", r.err().map(|(e, _)| e));
            assert!(
                err.contains("TopicAuthorizationFailed"),
                "{mechanism}: {err}"
            );

            let p: FutureProducer = sasl(&kafka, mechanism, "writer", "bad").create().unwrap();
            let r = p
                .send(
                    FutureRecord::to("events").key("k").payload("{\"n\": 98}"),
                    Duration::from_secs(5),
                )
                .await;
            assert!(r.is_err(), "{mechanism}: a wrong password produced");
        }
        let mut plain = ClientConfig::new();
        plain
            .set("bootstrap.servers", &kafka)
            .set("message.timeout.ms", "4000");
        let p: FutureProducer = plain.create().unwrap();
        assert!(
            p.send(
                FutureRecord::<(), _>::to("events").payload("{\"n\": 97}"),
                Duration::from_secs(5)
            )
            .await
            .is_err(),
            "a client without SASL produced"
        );

        assert_eq!(code(&admin, "FLUSH").await, "ok");
        assert_eq!(
            first_column(&admin, "SELECT sum(n) FROM events").await,
            ["0"]
        );

        // The reader consumes; the writer may not; nobody reads eddy's roles.
        let fetch = |user: &str, password: &str, topic: &str| {
            let c: BaseConsumer = sasl(&kafka, "PLAIN", user, password)
                .set("group.id", format!("g-{user}-{topic}"))
                .set("auto.offset.reset", "earliest")
                .create()
                .unwrap();
            c.subscribe(&[topic]).unwrap();
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && got.is_empty() {
                match c.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => got.push(Ok(rdkafka::Message::offset(&m))),
                    Some(Err(e)) => {
                        got.push(Err(format!("{e:?}")));
                        break;
                    }
                    None => {}
                }
            }
            got
        };
        assert_eq!(fetch("reader", "r-pw", "events"), vec![Ok(0)]);
        let denied = fetch("writer", "w-pw", "events");
        assert!(
            matches!(denied.as_slice(), [Err(e)] if e.contains("TopicAuthorizationFailed")),
            "{denied:?}"
        );
        let denied = fetch("eddy", "adminpw", "__eddy_roles");
        assert!(
            matches!(denied.as_slice(), [Err(e)] if e.contains("TopicAuthorizationFailed")),
            "{denied:?}"
        );
    });

    // kcat and confluent-kafka, as their users configure SASL.
    let mut p = Command::new("kcat")
        .args([
            "-b",
            &kafka,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-256",
            "-X",
            "sasl.username=writer",
            "-X",
            "sasl.password=w-pw",
            "-P",
            "-t",
            "events",
        ])
        // cargo test points LD_LIBRARY_PATH at the rdkafka crate's own
        // librdkafka (PLAIN only); kcat is to use its own.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is required (apt-get install kcat, or scripts/test)");
    p.stdin.take().unwrap().write_all(b"{\"n\": 10}\n").unwrap();
    assert!(p.wait().unwrap().success());
    let out = Command::new("kcat")
        .args([
            "-b",
            &kafka,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-512",
            "-X",
            "sasl.username=reader",
            "-X",
            "sasl.password=r-pw",
            "-C",
            "-t",
            "events",
            "-e",
            "-f",
            "%s\n",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let script = format!(
        "from confluent_kafka import Producer, Consumer\n\
         conf = {{'bootstrap.servers': '{kafka}', 'security.protocol': 'SASL_PLAINTEXT',\n\
                 'sasl.mechanism': 'SCRAM-SHA-512', 'sasl.username': 'writer', 'sasl.password': 'w-pw'}}\n\
         p = Producer(conf)\n\
         errors = []\n\
         p.produce('events', value=b'{{\"n\": 100}}', on_delivery=lambda e, m: errors.append(e))\n\
         p.flush(15)\n\
         print('produced', errors)\n\
         c = Consumer({{**conf, 'sasl.username': 'reader', 'sasl.password': 'r-pw',\n\
                       'group.id': 'py', 'auto.offset.reset': 'earliest'}})\n\
         c.subscribe(['events'])\n\
         n = 0\n\
         for _ in range(100):\n\
         \x20   m = c.poll(0.2)\n\
         \x20   if m is not None and m.error() is None:\n\
         \x20       n += 1\n\
         \x20   if n == 3:\n\
         \x20       break\n\
         print('consumed', n)\n\
         c.close()\n"
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&py.stdout).to_string();
    assert!(
        py.status.success() && out.contains("produced [None]") && out.contains("consumed 3"),
        "{out}{}",
        String::from_utf8_lossy(&py.stderr)
    );
}

#[test]
fn an_open_kafka_listener_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--kafka-addr",
            "0.0.0.0:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--kafka-sasl"), "{err}");
}

#[test]
fn an_open_schema_registry_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "serve"])
        .args(["--kafka-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"])
        .args(["--registry-addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--registry-allow-remote"), "{err}");
}
