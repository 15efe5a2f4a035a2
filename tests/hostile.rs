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
//! - SIGTERM while a client runs a long query: the process exits promptly;
//! - seeded fuzzers, bounded in time (fixed seeds; `EDDY_FUZZ_SEED=n`
//!   replays one, `EDDY_FUZZ_SEED=random` explores): garbage
//!   and mutated pgwire (simple and extended) and Kafka frames, including
//!   messages shorter than their fields that panic pgwire's decoders (FATAL
//!   08P01, the connection closed); mutated SQL from `slt/`'s statements;
//!   mutated JSON, CSV and text records under views (each view checked
//!   against its query recomputed). The server's stderr must hold no panic.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::time::{Duration, Instant};

use common::slt::{connect, rows};
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

        // A query string over max_query_bytes is refused from its
        // message's header, before the rest is read into memory: FATAL
        // 54000, and that connection is closed (its remaining bytes are
        // not read); the server serves a new one.
        let big = format!("SELECT '{}'", "x".repeat(100 * 1024 * 1024));
        let other = connect(server.pg).await;
        assert_eq!(sqlstate(&other, &big).await, "54000");
        assert!(other.is_closed() || other.simple_query("SELECT 1").await.is_err());
        drop(big);
        alive(&c).await;
        // Just under the limit (16 MiB) is read and run.
        let near = format!("SELECT length('{}')", "x".repeat(16 * 1024 * 1024 - 64));
        assert_eq!(sqlstate(&c, &near).await, "ok");
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
    let log = dir.path().join("server.log");
    let server = Serve::start_logging(BIN, &dir.path().join("data"), &[], &log);
    let seed = fuzz_seed(1);
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
    // The extended protocol, as drivers send it: Parse, Bind (one text
    // parameter), Describe, Execute, Sync.
    let extended = {
        let msg = |tag: u8, body: &[u8]| {
            let mut m = vec![tag];
            m.extend_from_slice(&((4 + body.len()) as u32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let mut parse = b"\0SELECT $1::int + 1\0".to_vec();
        parse.extend_from_slice(&[0, 1, 0, 0, 0, 23]);
        let mut bind = b"\0\0".to_vec();
        bind.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
        bind.extend_from_slice(b"41");
        bind.extend_from_slice(&[0, 1, 0, 0]);
        [
            msg(b'P', &parse),
            msg(b'B', &bind),
            msg(b'D', b"P\0"),
            msg(b'E', &[0, 0, 0, 0, 0]),
            msg(b'S', &[]),
        ]
        .concat()
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
            1 if to_pg => [startup.clone(), query.clone(), query.clone()].concat(),
            _ if to_pg => [startup.clone(), extended.clone(), query.clone()].concat(),
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
    // A Bind shorter than its fields (pgwire's decoder panics on it):
    // FATAL 08P01 and the connection closed, as PostgreSQL answers a
    // malformed message.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.pg).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&startup).unwrap();
        let mut greeting = vec![0u8; 4096];
        let _ = s.read(&mut greeting).unwrap();
        s.write_all(&[b'B', 0, 0, 0, 6, 0, 0]).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("08P01") && text.contains("FATAL"), "{text:?}");
    }
    // pgwire's decoders panic on short messages; those are caught and
    // logged at debug, so none reaches stderr.
    unharmed(&server, &log);
}

/// After a fuzzer: no panic report in the server's stderr (`log`), and
/// Kafka still takes a record.
fn unharmed(server: &Serve, log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        !text.contains("panicked"),
        "the server panicked:\n{}",
        text.lines()
            .filter(|l| l.contains("panicked"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let p = producer(&server.kafka);
    p.send(BaseRecord::<[u8], [u8]>::to("after-fuzz").payload(&b"{}"[..]))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(15))
        .expect("Kafka serves after the fuzzing");
}

/// The fuzzers' seed: `EDDY_FUZZ_SEED` (a number replays a run; `random`
/// explores), else a fixed one, so the suite is the same run every time
/// and a newly found crash does not fail an unrelated change's CI.
fn fuzz_seed(fixed: u64) -> u64 {
    use rand::Rng;
    match std::env::var("EDDY_FUZZ_SEED").ok().as_deref() {
        Some("random") => rand::rng().random(),
        Some(s) => s.parse().unwrap_or(fixed),
        None => fixed,
    }
}

/// Statements of eddy's own `slt/` files: the seed corpus the SQL fuzzer
/// mutates.
fn slt_statements() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("statement") || line.starts_with("query")) {
                continue;
            }
            let sql: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty() && *l != "----")
                .collect();
            if !sql.is_empty() {
                out.push(sql.join("\n"));
            }
        }
    }
    out
}

/// One mutation of SQL text, token-wise (words and punctuation), as a
/// careless or hostile client would send it.
fn mutate_sql(rng: &mut rand::rngs::StdRng, sql: &str) -> String {
    use rand::Rng;
    const INSERTS: &[&str] = &[
        "(",
        ")",
        ",",
        "'",
        "\"",
        "-",
        "- -",
        "NULL",
        "SELECT",
        "FROM",
        "WHERE",
        "*",
        "::",
        "::jsonb",
        "::int",
        "::interval",
        "OVER ()",
        "GROUP BY 1",
        "ORDER BY 1",
        "LIMIT -1",
        "UNION",
        "JOIN",
        "LATERAL",
        "1e400",
        "-9223372036854775808",
        "'\\x00'",
        "$1",
        "[",
        "]",
        "->>",
        "ARRAY[",
        "DISTINCT",
        "IN (SELECT 1)",
        "EXISTS (",
        "CASE WHEN",
        "END",
        ";",
        "COPY",
        "SUBSCRIBE",
        "TUMBLE(",
        "INTERVAL '1'",
        "now()",
        "'2024-02-30'",
    ];
    // Tokens as SQL has them: words and numbers (with their dots),
    // quoted strings and identifiers whole, operator runs whole, other
    // punctuation one character each.
    let mut tokens: Vec<String> = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        } else if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            i = (i + 1).min(chars.len());
        } else if c.is_alphanumeric() || c == '_' || c == '.' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '$'))
            {
                i += 1;
            }
        } else if "<>=!:|-+*/~@#%^&".contains(c) {
            while i < chars.len() && "<>=!:|-+*/~@#%^&".contains(chars[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        tokens.push(chars[start..i].iter().collect());
    }
    const VALUES: &[&str] = &[
        "0",
        "-1",
        "1e400",
        "-9223372036854775808",
        "9223372036854775807",
        "NULL",
        "'nan'",
        "''",
        "'2024-02-30'",
        "0.0",
        "-0.0",
        "1e-400",
        "2147483648",
        "'infinity'",
        "'\\x'",
        "99999999999999999999999999999999999999.5",
        "'{}'",
        "'[1,'",
        "true",
    ];
    const OPERATORS: &[&str] = &[
        "+",
        "-",
        "*",
        "/",
        "%",
        "=",
        "<>",
        "<",
        ">=",
        "||",
        "->>",
        "->",
        "::text",
        "::int",
        "::float4",
        "::numeric",
        "::timestamp",
        "^",
        "&",
        "<<",
    ];
    let literal =
        |t: &str| t.starts_with('\'') || t.chars().next().is_some_and(|c| c.is_ascii_digit());
    let identifier = |t: &str| {
        t.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    };
    let operator = |t: &str| t.chars().all(|c| "<>=!:|-+*/~@#%^&".contains(c));
    let n = if rng.random_bool(0.7) { 1 } else { 2 };
    for _ in 0..n {
        if tokens.is_empty() {
            break;
        }
        let i = rng.random_range(0..tokens.len());
        match rng.random_range(0..20) {
            0 | 1 => {
                tokens.remove(i);
            }
            2 => {
                let t = tokens[i].clone();
                tokens.insert(i, t);
            }
            3 => {
                let j = rng.random_range(0..tokens.len());
                tokens.swap(i, j);
            }
            4 | 5 => tokens.insert(i, INSERTS[rng.random_range(0..INSERTS.len())].to_string()),
            6 => tokens.truncate(i.max(1)),
            _ => {
                // A like-for-like replacement, so the statement often still
                // parses: a value for a value, a name for a name, an
                // operator for an operator.
                let picks: Vec<usize> = (0..tokens.len())
                    .filter(|&k| {
                        literal(&tokens[k]) || identifier(&tokens[k]) || operator(&tokens[k])
                    })
                    .collect();
                if picks.is_empty() {
                    continue;
                }
                let k = picks[rng.random_range(0..picks.len())];
                tokens[k] = if literal(&tokens[k]) {
                    VALUES[rng.random_range(0..VALUES.len())].to_string()
                } else if operator(&tokens[k]) {
                    OPERATORS[rng.random_range(0..OPERATORS.len())].to_string()
                } else {
                    let names: Vec<&String> = tokens.iter().filter(|t| identifier(t)).collect();
                    names[rng.random_range(0..names.len())].clone()
                };
            }
        }
    }
    tokens.join(" ")
}

/// A record fuzzer's mutation: bytes flipped, cut, repeated or spliced
/// with JSON and CSV fragments that once altered values.
fn mutate_record(rng: &mut rand::rngs::StdRng, record: &[u8]) -> Vec<u8> {
    use rand::Rng;
    const SPLICES: &[&[u8]] = &[
        b"1e400",
        b"-0.5",
        b"99999999999999999999",
        b"\"\\ud800\"",
        b"[[[[[[",
        b",,",
        b"\0",
        b"\xff\xfe",
        b"{\"id\":",
        b"null",
        b"\"2024-13-45\"",
        b"-1e-400",
        b"\n",
        b"\"",
        b"9223372036854775808",
        b"true",
    ];
    let mut bytes = record.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            bytes.extend_from_slice(SPLICES[0]);
        }
        let i = rng.random_range(0..bytes.len());
        match rng.random_range(0..4) {
            0 => bytes[i] = rng.random(),
            1 => bytes.truncate(i),
            2 => {
                let s = SPLICES[rng.random_range(0..SPLICES.len())];
                bytes.splice(i..i, s.iter().copied());
            }
            _ => {
                let tail = bytes[i..].to_vec();
                bytes.extend_from_slice(&tail);
            }
        }
    }
    bytes
}

/// Seeded fuzzers over SQL text (the statements of `slt/`, mutated) and
/// over JSON, CSV and text records (valid ones, mutated) under views,
/// bounded in time. Every statement gets an answer on a connection that
/// stays open; every record is a row or a counted decode error; views
/// agree with their queries recomputed; nothing panics in the server
/// (its stderr is read), and it serves on.
#[test]
fn fuzzed_sql_and_records_crash_nothing() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let server = Serve::start_logging(BIN, &data, &[], &log);
    let seed = fuzz_seed(3183458160202130699);
    eprintln!("hostile: sql/record fuzz seed {seed} (EDDY_FUZZ_SEED replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus = slt_statements();
    assert!(corpus.len() > 500, "{} statements", corpus.len());

    // Records first, under views, so the SQL fuzzer also meets them.
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute(
            "CREATE STREAM fj (id int, name text, amount double precision, at timestamp, tags jsonb) WITH (topic = 'fj', format = 'json');
             CREATE STREAM fc (sensor text, value double precision, at timestamp) WITH (topic = 'fc', value_format = 'DELIMITED');
             CREATE STREAM ft (line text) WITH (topic = 'ft', format = 'text');
             CREATE MATERIALIZED VIEW fj_by_name AS SELECT name, count(*) AS n, sum(id) AS ids, max(amount) AS top FROM fj GROUP BY name;
             CREATE MATERIALIZED VIEW fc_by_sensor AS SELECT sensor, count(*) AS n, sum(value) AS total FROM fc GROUP BY sensor;
             CREATE MATERIALIZED VIEW ft_n AS SELECT count(*) AS n, max(length(line)) AS longest FROM ft;",
        )
        .await
        .unwrap();
    });
    let valid: [(&str, &[&[u8]]); 3] = [
        (
            "fj",
            &[
                br#"{"id": 1, "name": "a", "amount": 2.5, "at": 1700000000000, "tags": {"k": [1, 2]}}"#,
                br#"{"id": 2, "name": "b", "amount": -1, "at": "2023-11-14 22:13:20", "tags": null}"#,
                br#"{"id": 3, "name": "a"}"#,
            ],
        ),
        (
            "fc",
            &[b"s1,1.5,2023-11-14 22:13:20", b"s2,-3,2023-11-14 22:13:21"],
        ),
        ("ft", &[b"hello", "h\u{e9}llo w\u{f6}rld".as_bytes()]),
    ];
    let p = producer(&server.kafka);
    let mut sent = 0;
    for _ in 0..3_000 {
        let (topic, records) = valid[rng.random_range(0..valid.len())];
        let r = records[rng.random_range(0..records.len())];
        let v = if rng.random_bool(0.3) {
            r.to_vec()
        } else {
            mutate_record(&mut rng, r)
        };
        loop {
            match p.send(BaseRecord::<[u8], [u8]>::to(topic).payload(&v)) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(50));
                }
            }
        }
        sent += 1;
    }
    p.flush(Duration::from_secs(30)).unwrap();
    eprintln!("hostile: {sent} fuzzed records");
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.simple_query("FLUSH").await.unwrap();
        // Each view agrees with its query run over the stream.
        for (view, query) in [
            (
                "SELECT name, n, ids, top FROM fj_by_name",
                "SELECT name, count(*), sum(id), max(amount) FROM fj GROUP BY name",
            ),
            (
                "SELECT sensor, n, total FROM fc_by_sensor",
                "SELECT sensor, count(*), sum(value) FROM fc GROUP BY sensor",
            ),
            (
                "SELECT n, longest FROM ft_n",
                "SELECT count(*), max(length(line)) FROM ft",
            ),
        ] {
            assert_eq!(rows(&c, view).await, rows(&c, query).await, "{view}");
        }
        let errors = c
            .query_one(
                "SELECT coalesce(sum(errors), 0)::bigint FROM eddy_catalog.decode_errors",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        eprintln!("hostile: {errors} decode errors counted");
        assert!(errors > 0);
    });

    // SQL: mutated statements, one connection, each answered.
    let started = Instant::now();
    let mut cases = 0;
    let mut refused = 0;
    rt().block_on(async {
        let mut c = connect(server.pg).await;
        // The corpus once as written, so the relations the statements
        // name exist (most mutations are then refused for what they are,
        // not for a missing table).
        for sql in &corpus {
            if started.elapsed() > Duration::from_secs(40) {
                break;
            }
            if let Ok(Err(e)) =
                tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql)).await
                && e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
            {
                let _ = c.simple_query("ROLLBACK").await;
            }
        }
        let started = Instant::now();
        let mut codes = std::collections::BTreeMap::new();
        while started.elapsed() < Duration::from_secs(20) && cases < 30_000 {
            cases += 1;
            let seed_sql = &corpus[rng.random_range(0..corpus.len())];
            let sql = mutate_sql(&mut rng, seed_sql);
            match tokio::time::timeout(Duration::from_secs(10), c.simple_query(&sql)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.as_db_error().is_some() => {
                    refused += 1;
                    *codes
                        .entry(e.code().map(|c| c.code().to_string()))
                        .or_insert(0) += 1;
                    // Out of a failed transaction block (a mutated BEGIN),
                    // or every later statement is refused with 25P02.
                    if e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
                    {
                        let _ = c.simple_query("ROLLBACK").await;
                    }
                }
                Ok(Err(e)) => {
                    let _ = std::fs::copy(&log, std::env::temp_dir().join("eddy-fuzz-server.log"));
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    panic!(
                        "the connection broke on {sql:?}: {e}\nserver log, last lines first:\n{}",
                        tail.join("\n")
                    )
                }
                // Slow, not broken (a mutated query may be costly): carry
                // on with a new connection.
                Err(_) => c = connect(server.pg).await,
            }
        }
        eprintln!("hostile: refusals by SQLSTATE {codes:?}");
        // That session may be in a failed transaction block (a mutated
        // BEGIN); the server answers a new one.
        alive(&connect(server.pg).await).await;
    });
    eprintln!(
        "hostile: {cases} fuzzed statements ({refused} refused) in {:?}",
        started.elapsed()
    );
    unharmed(&server, &log);
}

/// A query whose client went away, or that was cancelled, stops using CPU
/// at once (not when it would first write a row, minutes later).
#[test]
fn abandoned_and_cancelled_queries_stop_using_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(BIN, dir.path());
    const HEAVY: &str = "SELECT count(*) FROM generate_series(1, 5000000000) a";
    let idle_cpu = |server: &Serve| {
        // CPU over a second, once the query had a moment to stop.
        std::thread::sleep(Duration::from_millis(700));
        let before = server.cpu();
        std::thread::sleep(Duration::from_secs(1));
        server.cpu() - before
    };
    rt().block_on(async {
        // Cancelled (psql's Ctrl-C): 57014, then the server idles.
        let c = connect(server.pg).await;
        let token = c.cancel_token();
        let q = tokio::spawn(async move { c.simple_query(HEAVY).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), q)
            .await
            .expect("the cancelled query answers")
            .unwrap();
        let e = r.expect_err("cancelled");
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    });
    let used = idle_cpu(&server);
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU in 1 s after the cancel"
    );

    // Abandoned: the client process is gone mid-query.
    let mut psql = std::process::Command::new("psql")
        .args([
            "-h",
            &server.pg.ip().to_string(),
            "-p",
            &server.pg.port().to_string(),
        ])
        .args(["-U", "eddy", "-d", "eddy", "-Xc", HEAVY])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql is required");
    std::thread::sleep(Duration::from_millis(1500));
    let before = server.cpu();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.cpu() - before > Duration::from_millis(200),
        "the query was running"
    );
    psql.kill().unwrap();
    psql.wait().unwrap();
    let used = idle_cpu(&server);
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU in 1 s after the client left"
    );
    rt().block_on(async {
        alive(&connect(server.pg).await).await;
    });
}
