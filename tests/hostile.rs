//! Hostile and careless clients against a real `eddy serve` process (a
//! crash would end the process, which an in-process server would hide):
//! each case below once aborted the server or altered data; each now gets
//! a SQLSTATE, a Kafka error code or a decode error, and the server goes on
//! serving — across a restart too.
//!
//! - SQL nested past `max_depth` (2,000 `+`, `AND` or `||` terms, 3,000
//!   `UNION`s, 5,000 `UNION ALL`s): 54001;
//! - 200,000 statements in one Query message: 54000, answered at once;
//! - a query string over `max_query_bytes`: 54000;
//! - a JSON record nested 30,000 deep, `-0.5` for an int, `1e400`,
//!   `{"a":1,,}`: decode errors, counted, the view fine, and the server
//!   starts again over them;
//! - a Kafka client producing to `__eddy_catalog` (a tombstone for a table)
//!   or creating `__…` topics: TOPIC_AUTHORIZATION_FAILED, the table still
//!   there after a restart;
//! - a SUBSCRIBE client that stops reading: disconnected after
//!   `max_subscriber_stall_ms`;
//! - SIGTERM while a client runs a long query: the process exits promptly.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::time::{Duration, Instant};

use common::slt::connect;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use serve::Serve;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_eddy");

async fn sqlstate(c: &tokio_postgres::Client, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("not a server error: {e}")),
    }
}

async fn alive(c: &tokio_postgres::Client) {
    let rows = c.query("SELECT 40 + 2", &[]).await.expect("server alive");
    assert_eq!(rows[0].get::<_, i64>(0), 42);
}

#[test]
fn oversized_and_deep_sql_is_refused_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    rt().block_on(async {
        let c = connect(server.pg).await;
        let cases = [
            (
                "2,000 + terms",
                format!("SELECT {}", vec!["1"; 2_000].join("+")),
            ),
            (
                "2,000 AND terms",
                format!("SELECT {}", vec!["true"; 2_000].join(" AND ")),
            ),
            (
                "2,000 || terms",
                format!("SELECT {}", vec!["'a'"; 2_000].join(" || ")),
            ),
            ("3,000 UNIONs", vec!["SELECT 1"; 3_001].join(" UNION ")),
            (
                "5,000 UNION ALLs",
                vec!["SELECT 1"; 5_001].join(" UNION ALL "),
            ),
            (
                "parentheses 10,000 deep",
                format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            ),
        ];
        for (what, sql) in &cases {
            assert_eq!(sqlstate(&c, sql).await, "54001", "{what}");
            alive(&c).await;
        }
        // Within the limits, a long expression still runs.
        let rows = c
            .simple_query(&format!("SELECT {}", vec!["1"; 500].join("+")))
            .await
            .unwrap();
        assert!(rows.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("500"))
        ));

        let started = Instant::now();
        assert_eq!(sqlstate(&c, &"SELECT 1;".repeat(200_000)).await, "54000");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        alive(&c).await;

        let big = format!("SELECT '{}'", "x".repeat(17 * 1024 * 1024));
        assert_eq!(sqlstate(&c, &big).await, "54000");
        alive(&c).await;

        let limits = c
            .simple_query("SELECT name, value FROM eddy_catalog.limits ORDER BY name")
            .await
            .unwrap();
        let names: Vec<String> = limits
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "max_depth",
                "max_query_bytes",
                "max_statements",
                "max_subscriber_stall_ms"
            ]
        );
    });
}

fn producer(addr: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

/// Produce one record; the delivery error's text, or "ok".
fn produce_one(addr: &str, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> String {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let mut record = FutureRecord::<[u8], [u8]>::to(topic);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    match futures::executor::block_on(p.send(record, Duration::from_secs(15))) {
        Ok(_) => "ok".into(),
        Err((e, _)) => e.to_string(),
    }
}

#[test]
fn bad_records_are_decode_errors_and_a_restart_survives_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute(
            "CREATE STREAM ev (id int, amount double precision, at timestamp) WITH (topic = 'ev', format = 'json');
             CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(id) AS ids FROM ev;",
        )
        .await
        .unwrap();
    });
    let nested = format!("{{\"id\": {}1{}}}", "[".repeat(30_000), "]".repeat(30_000));
    let good = [
        r#"{"id": 1, "amount": 2.5, "at": 1700000000000}"#,
        r#"{"id": 2, "amount": 1, "at": "2023-11-14 22:13:20"}"#,
    ];
    let bad = [
        nested.as_str(),
        r#"{"id": -0.5}"#,
        r#"{"id": 1, "amount": 1e400}"#,
        r#"{"a":1,,}"#,
        r#"{"id": 99999999999}"#,
    ];
    let p = producer(&server.kafka);
    for v in good.iter().chain(bad.iter()) {
        p.send(BaseRecord::<[u8], [u8]>::to("ev").payload(v.as_bytes()))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(15)).unwrap();
    let check = |pg| {
        rt().block_on(async move {
            let c = connect(pg).await;
            c.simple_query("FLUSH").await.unwrap();
            let row = c.query_one("SELECT n, ids FROM totals", &[]).await.unwrap();
            assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 3));
            let rows = c
                .query("SELECT id, at FROM ev ORDER BY id", &[])
                .await
                .unwrap();
            assert_eq!(rows.len(), 2);
            let at: Vec<String> = c
                .simple_query("SELECT at FROM ev ORDER BY id")
                .await
                .unwrap()
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap().to_string())
                    }
                    _ => None,
                })
                .collect();
            // Epoch milliseconds, and a string, both 2023-11-14 22:13:20.
            assert_eq!(at, ["2023-11-14 22:13:20", "2023-11-14 22:13:20"]);
            let errors = c
                .query_one(
                    "SELECT errors FROM eddy_catalog.decode_errors WHERE relation = 'ev'",
                    &[],
                )
                .await
                .unwrap();
            assert!(errors.get::<_, i64>(0) >= 5, "{}", errors.get::<_, i64>(0));
        })
    };
    check(server.pg);
    // Killed and started again over the same records: the view rebuilds
    // past them.
    server.kill9();
    let server = Serve::start_with(BIN, dir.path(), &["--checkpoint-interval-ms", "0"]);
    check(server.pg);
}

#[test]
fn internal_topics_are_read_only_to_kafka_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute("CREATE TABLE keep (id int PRIMARY KEY); INSERT INTO keep VALUES (1);")
            .await
            .unwrap();
    });
    // A tombstone for every key the catalog might use, and a record: each
    // refused.
    for (key, value) in [
        (Some(&b"keep"[..]), None),
        (Some(&b"table:keep"[..]), None),
        (None, Some(&b"garbage"[..])),
    ] {
        let outcome = produce_one(&server.kafka, "__eddy_catalog", key, value);
        assert!(
            outcome.contains("authoriz") || outcome.contains("Authoriz"),
            "produce to __eddy_catalog: {outcome}"
        );
    }
    let outcome = produce_one(&server.kafka, "__table_keep", None, Some(b"{\"id\": 2}"));
    assert!(outcome.to_lowercase().contains("authoriz"), "{outcome}");
    let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &server.kafka)
        .create()
        .unwrap();
    let created = futures::executor::block_on(admin.create_topics(
        &[rdkafka::admin::NewTopic::new(
            "__mine",
            1,
            rdkafka::admin::TopicReplication::Fixed(1),
        )],
        &rdkafka::admin::AdminOptions::new(),
    ))
    .unwrap();
    assert!(
        matches!(
            &created[0],
            Err((
                _,
                rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
            ))
        ),
        "{created:?}"
    );
    drop(admin);
    server.kill9();
    let server = Serve::start(BIN, dir.path());
    rt().block_on(async {
        let c = connect(server.pg).await;
        let rows = c.query("SELECT id FROM keep", &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), 1);
    });
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start_with(BIN, dir.path(), &["--max-subscriber-stall-ms", "1000"]);
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute("CREATE TABLE big (id int, pad text)")
            .await
            .unwrap();
        let sub = connect(server.pg).await;
        let stream = sub
            .copy_out("COPY (SUBSCRIBE big) TO STDOUT")
            .await
            .unwrap();
        // Never read `stream` while far more than the socket buffers hold
        // arrives.
        for i in 0..40 {
            c.simple_query(&format!(
                "INSERT INTO big SELECT x, repeat('p', 1000) FROM generate_series({}, {}) AS g(x)",
                i * 5_000,
                i * 5_000 + 4_999
            ))
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The server is fine, and the subscriber was cut off: reading its
        // stream now ends in an error rather than 200,000 rows.
        alive(&c).await;
        use futures::StreamExt;
        let mut stream = std::pin::pin!(stream);
        let mut rows = 0usize;
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => rows += b.iter().filter(|c| **c == b'\n').count(),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
        .expect("the stream ends");
        assert!(
            ended.is_err() || sub.is_closed(),
            "the subscriber read on after stalling"
        );
        assert!(
            rows < 200_000,
            "{rows} rows reached a subscriber that stalled"
        );
    });
}

#[test]
fn sigterm_ends_the_server_while_a_query_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    let pg = server.pg;
    let client = std::thread::spawn(move || {
        rt().block_on(async move {
            let c = connect(pg).await;
            // Long enough to outlast the test.
            let _ = c
                .simple_query("SELECT count(*) FROM generate_series(1, 2000000000)")
                .await;
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.is_some(), "eddy ignored SIGTERM for 20 s");
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = client.join();
}

/// A seeded fuzzer, bounded in time: connections that send garbage, or a
/// valid start followed by mutated messages, to both listeners. Each may
/// be closed; the server must answer SQL and Kafka afterwards.
#[test]
fn garbage_frames_close_only_their_connection() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    let seed: u64 = std::env::var("EDDY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("hostile: fuzz seed {seed} (EDDY_FUZZ_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    // A startup message, then a Query, as psql sends them.
    let mut startup = Vec::new();
    let params = b"user\0eddy\0database\0eddy\0\0";
    startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
    startup.extend_from_slice(&196608u32.to_be_bytes());
    startup.extend_from_slice(params);
    let query = {
        let body = b"SELECT 1\0";
        let mut q = vec![b'Q'];
        q.extend_from_slice(&((4 + body.len()) as u32).to_be_bytes());
        q.extend_from_slice(body);
        q
    };
    // ApiVersions v3, as librdkafka starts.
    let kafka_hello: Vec<u8> = {
        let body: &[u8] = &[
            0, 18, 0, 3, 0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z', 0, 2, b'x', 2, b'1', 0,
        ];
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let started = Instant::now();
    let mut cases = 0;
    while started.elapsed() < Duration::from_secs(20) && cases < 400 {
        cases += 1;
        let to_pg = rng.random_bool(0.5);
        let addr: std::net::SocketAddr = if to_pg {
            server.pg
        } else {
            server.kafka.parse().unwrap()
        };
        let mut bytes = match rng.random_range(0..3) {
            0 => (0..rng.random_range(1..2_000))
                .map(|_| rng.random())
                .collect::<Vec<u8>>(),
            _ if to_pg => [startup.clone(), query.clone(), query.clone()].concat(),
            _ => [kafka_hello.clone(), kafka_hello.clone()].concat(),
        };
        // Mutate: flip bytes, cut, or splice huge lengths.
        for _ in 0..rng.random_range(0..8) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes[i] = rng.random(),
                1 => bytes.truncate(i.max(1)),
                _ if bytes.len() >= 4 => {
                    let at = rng.random_range(0..=bytes.len() - 4);
                    bytes[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
                }
                _ => {}
            }
        }
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = s.write_all(&bytes);
            let mut sink = [0u8; 4096];
            let _ = s.read(&mut sink);
        }
    }
    eprintln!(
        "hostile: {cases} fuzzed connections in {:?}",
        started.elapsed()
    );
    rt().block_on(async {
        let c = connect(server.pg).await;
        alive(&c).await;
    });
    let p = producer(&server.kafka);
    p.send(BaseRecord::<[u8], [u8]>::to("after-fuzz").payload(&b"{}"[..]))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(15))
        .expect("Kafka serves after the fuzzing");
}
