//! The Kafka listener against hostile and broken peers, and against the
//! command-line and Python clients people actually use:
//!
//! - garbage, truncated, negative-size and oversized frames, unknown API
//!   keys and unsupported versions close only the offending connection; a
//!   well-behaved connection keeps working throughout;
//! - ApiVersions with a version from the future answers UNSUPPORTED_VERSION
//!   with our versions, as Kafka does, so clients can downgrade;
//! - hundreds of concurrent connections;
//! - kcat: metadata listing, produce, consume;
//! - the seed notes' kafka-python and confluent-kafka scripts, with only the
//!   bootstrap address changed.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;

/// An ApiVersions v`version` request frame with correlation id `cid`.
fn api_versions_frame(version: i16, cid: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&cid.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes()); // client id "test"
    body.extend_from_slice(b"test");
    if version >= 3 {
        body.push(0); // tagged fields of the header
        body.push(5); // client_software_name (compact string "eddy")
        body.extend_from_slice(b"eddy");
        body.push(4); // client_software_version "0.1"
        body.extend_from_slice(b"0.1");
        body.push(0); // tagged fields
    }
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Send a request and read one response frame; returns the body after the
/// size prefix.
fn round_trip(s: &mut TcpStream, frame: &[u8]) -> Vec<u8> {
    s.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

/// The server closed the connection: a read returns EOF (or a reset).
fn assert_closed(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection to close, got {n} bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "unexpected error {e}"
        ),
    }
}

#[test]
fn bad_frames_close_only_their_connection() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    let mut good = connect(&addr);
    let resp = round_trip(&mut good, &api_versions_frame(0, 1));
    assert_eq!(&resp[0..4], &1i32.to_be_bytes(), "correlation id echoed");
    assert_eq!(&resp[4..6], &0i16.to_be_bytes(), "no error");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage body", {
            let mut f = 12i32.to_be_bytes().to_vec();
            f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]);
            f
        }),
        ("negative size", (-5i32).to_be_bytes().to_vec()),
        ("oversized", i32::MAX.to_be_bytes().to_vec()),
        ("too short for a header", {
            let mut f = 3i32.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 18, 0]);
            f
        }),
        ("unknown api key", {
            let mut f = 10i32.to_be_bytes().to_vec();
            f.extend_from_slice(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0]);
            f
        }),
        ("truncated metadata request", {
            // Metadata v1 header claims a topic array it does not contain.
            let mut body = vec![0, 3, 0, 1, 0, 0, 0, 9, 0, 0];
            body.extend_from_slice(&[0, 0, 0, 5]);
            let mut f = (body.len() as i32).to_be_bytes().to_vec();
            f.extend_from_slice(&body);
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = connect(&addr);
        bad.write_all(&bytes).unwrap();
        assert_closed(bad);
        // The good connection and new connections still work.
        let resp = round_trip(&mut good, &api_versions_frame(2, 7));
        assert_eq!(&resp[0..4], &7i32.to_be_bytes(), "after {what}");
        let mut fresh = connect(&addr);
        round_trip(&mut fresh, &api_versions_frame(1, 8));
    }

    // A frame cut off mid-way by a client that then disconnects.
    {
        let mut bad = connect(&addr);
        let f = api_versions_frame(0, 9);
        bad.write_all(&f[..f.len() - 3]).unwrap();
    }
    round_trip(&mut good, &api_versions_frame(0, 10));
}

#[test]
fn api_versions_from_the_future_gets_unsupported_version() {
    let server = TestServer::start();
    let mut s = connect(&server.addr);
    let mut frame = api_versions_frame(0, 42);
    // Claim version 99 (header v1 layout is the same as v0 here).
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    let resp = round_trip(&mut s, &frame);
    assert_eq!(&resp[0..4], &42i32.to_be_bytes());
    assert_eq!(&resp[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    // The versions table follows (non-empty).
    let n = i32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]);
    assert!(n > 10);
    // The connection stays usable.
    round_trip(&mut s, &api_versions_frame(0, 43));
}

#[test]
fn hundreds_of_connections() {
    let server = TestServer::start();
    let mut conns: Vec<TcpStream> = (0..300).map(|_| connect(&server.addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&api_versions_frame(0, i as i32)).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        c.read_exact(&mut body).unwrap();
        assert_eq!(&body[0..4], &(i as i32).to_be_bytes());
    }
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn kcat_lists_produces_and_consumes() {
    assert!(
        have("kcat", "-V"),
        "kcat is required (apt-get install kcat, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let addr = server.addr.clone();
    let mut p = Command::new("kcat")
        .args([
            "-b",
            &addr,
            "-P",
            "-t",
            "kcat-topic",
            "-K:",
            "-X",
            "acks=all",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(b"a:one\nb:two\nc:three\n")
        .unwrap();
    assert!(p.wait().unwrap().success());

    let out = Command::new("kcat")
        .args(["-b", &addr, "-L", "-t", "kcat-topic"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains("topic \"kcat-topic\" with 1 partitions"),
        "{listing}"
    );
    assert!(listing.contains("leader 1"), "{listing}");

    let out = Command::new("kcat")
        .args([
            "-b",
            &addr,
            "-C",
            "-t",
            "kcat-topic",
            "-e",
            "-f",
            "%k=%s@%o\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a=one@0\nb=two@1\nc=three@2\n"
    );
}

fn python_ok(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_python(script: &str, addr: &str) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .env("BOOTSTRAP", addr)
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
fn kafka_python_seed_scripts() {
    assert!(
        python_ok("kafka"),
        "kafka-python is required (pip install kafka-python, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let out = run_python("seed_003_kafka_python.py", &server.addr);
    assert!(out.contains("consumed 100 messages"), "{out}");
    assert!(out.contains("resumed with 0 messages"), "{out}");
}

#[test]
fn confluent_kafka_seed_scripts() {
    assert!(
        python_ok("confluent_kafka"),
        "confluent-kafka is required (pip install confluent-kafka, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let out = run_python("seed_004_confluent_kafka.py", &server.addr);
    assert!(out.contains("('weather_data_demo', 'London'"), "{out}");
    assert!(out.contains("consumed 20 messages"), "{out}");
}

#[test]
fn confluent_kafka_admin_alters_topic_configs() {
    assert!(
        python_ok("confluent_kafka"),
        "confluent-kafka is required (pip install confluent-kafka, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let out = run_python("admin_configs.py", &server.addr);
    assert_eq!(
        out,
        "retention.ms=3600000 cleanup.policy=compact
retention.ms=3600000
retention.ms=3600000 cleanup.policy=delete
invalid INVALID_CONFIG
retention.ms=604800000 segment.bytes=1048576
internal TOPIC_AUTHORIZATION_FAILED
"
    );
}

#[test]
fn confluent_kafka_admin_deletes_records_and_describes_the_cluster() {
    assert!(
        python_ok("confluent_kafka"),
        "confluent-kafka is required (pip install confluent-kafka, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let out = run_python("admin_records.py", &server.addr);
    assert_eq!(
        out,
        "deleted trim 0 12
watermarks (12, 30)
first (12, 'v12')
past the end OFFSET_OUT_OF_RANGE
cluster True 1 True
"
    );
}

#[test]
fn kafka_python_admin_describes_producers() {
    assert!(
        python_ok("confluent_kafka") && python_ok("kafka"),
        "confluent-kafka and kafka-python are required (run scripts/test, which installs them)"
    );
    let server = TestServer::start();
    let out = run_python("admin_producers.py", &server.addr);
    assert_eq!(
        out,
        "idem producers 1
producer True 0 9 True -1
plain producers 0
"
    );
}

/// A runtime and a pgwire session on `server`, for tests that otherwise
/// drive blocking Kafka clients.
fn pg_session(server: &TestServer) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt.block_on(common::slt::connect(server.pg_addr));
    (rt, pg)
}

/// Records a Kafka producer writes with keys are read over SQL with their
/// metadata: `_key`, `_partition` (the one librdkafka's partitioner chose),
/// `_offset`, `_timestamp`, as kcat itself reports them.
#[test]
fn kcat_records_carry_their_metadata_into_sql() {
    assert!(
        have("kcat", "-V"),
        "kcat is required (apt-get install kcat, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let addr = server.addr.clone();
    let (rt, pg) = pg_session(&server);
    rt.block_on(pg.batch_execute(
        "CREATE STREAM plays (_key text, _partition int, _offset bigint, _timestamp bigint, \
         viewers int) WITH (topic = 'plays', partitions = 4)",
    ))
    .unwrap();
    let mut p = Command::new("kcat")
        .args(["-b", &addr, "-P", "-t", "plays", "-K:", "-X", "acks=all"])
        .args(["-X", "partitioner=murmur2_random"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for i in 0..40 {
        input.push_str(&format!("game-{}:{{\"viewers\": {i}}}\n", i % 7));
    }
    p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(p.wait().unwrap().success());
    let out = Command::new("kcat")
        .args(["-b", &addr, "-C", "-t", "plays", "-e", "-q"])
        .args(["-f", "%k %p %o %T %s\n"])
        .output()
        .unwrap();
    let mut from_kafka: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (meta, value) = l.split_once(" {").unwrap();
            let viewers: serde_json::Value = serde_json::from_str(&format!("{{{value}")).unwrap();
            format!("{meta} {}", viewers["viewers"])
        })
        .collect();
    from_kafka.sort();
    assert_eq!(from_kafka.len(), 40);
    let rows = rt
        .block_on(pg.query(
            "SELECT _key, _partition, _offset, _timestamp, viewers FROM plays",
            &[],
        ))
        .unwrap();
    let mut from_sql: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r.get::<_, String>(0),
                r.get::<_, i32>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i32>(4)
            )
        })
        .collect();
    from_sql.sort();
    assert_eq!(from_sql, from_kafka);
}

/// A table with a primary key over a shared topic is an upsert changelog
/// Kafka producers write too: a keyed record replaces the key's row, a
/// tombstone (kcat -Z: an empty value sent as NULL) deletes it; SQL writes
/// land in the same topic, keyed, for Kafka consumers.
#[test]
fn kcat_upserts_and_tombstones_into_a_keyed_table() {
    assert!(
        have("kcat", "-V"),
        "kcat is required (apt-get install kcat, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let addr = server.addr.clone();
    let (rt, pg) = pg_session(&server);
    rt.block_on(pg.batch_execute(
        "CREATE TABLE users (id text PRIMARY KEY, name text, plan text) WITH (topic = 'users');
         CREATE MATERIALIZED VIEW per_plan AS SELECT plan, count(*) AS n FROM users GROUP BY plan;",
    ))
    .unwrap();
    let produce = |lines: &str| {
        let mut p = Command::new("kcat")
            .args(["-b", &addr, "-P", "-t", "users", "-K:", "-Z"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        assert!(p.wait().unwrap().success());
    };
    produce(concat!(
        "u1:{\"id\": \"u1\", \"name\": \"ann\", \"plan\": \"free\"}\n",
        "u2:{\"id\": \"u2\", \"name\": \"bob\", \"plan\": \"free\"}\n",
        "u1:{\"id\": \"u1\", \"name\": \"ann\", \"plan\": \"pro\"}\n",
        "u3:{\"id\": \"u3\", \"name\": \"cy\", \"plan\": \"pro\"}\n",
        "u2:\n",
    ));
    let rows = |sql: &str| -> Vec<String> {
        rt.block_on(pg.simple_query(sql))
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => None,
            })
            .collect()
    };
    // The timer tick picks up what Kafka producers wrote within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = vec!["u1 ann pro".to_string(), "u3 cy pro".to_string()];
    while rows("SELECT * FROM users ORDER BY id") != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rows("SELECT * FROM users ORDER BY id"), want);
    assert_eq!(rows("SELECT * FROM per_plan ORDER BY plan"), vec!["pro 2"]);
    // SQL writes are keyed records in the same topic.
    rt.block_on(pg.batch_execute(
        "INSERT INTO users VALUES ('u4', 'dee', 'free'); DELETE FROM users WHERE id = 'u1';",
    ))
    .unwrap();
    let out = Command::new("kcat")
        .args(["-b", &addr, "-C", "-t", "users", "-e", "-q", "-Z"])
        .args(["-f", "%k=%s\n", "-o", "5"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "u4={\"id\":\"u4\",\"name\":\"dee\",\"plan\":\"free\"}\nu1=NULL\n"
    );
    assert_eq!(
        rows("SELECT * FROM per_plan ORDER BY plan"),
        vec!["free 1", "pro 1"]
    );
}

/// The values of `SELECT v FROM tx_out`, sorted.
fn tx_values(rt: &tokio::runtime::Runtime, pg: &tokio_postgres::Client) -> Vec<String> {
    let mut v: Vec<String> = rt
        .block_on(pg.query("SELECT v FROM tx_out", &[]))
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

/// The view's (kind, count) rows, sorted.
fn tx_counts(rt: &tokio::runtime::Runtime, pg: &tokio_postgres::Client) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = rt
        .block_on(pg.query("SELECT kind, n FROM tx_counts", &[]))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    v.sort();
    v
}

/// Kafka transactions with confluent-kafka's transactional producer
/// (tests/python/kafka_transactions.py): read_committed consumers see only
/// committed records, an open transaction holds them at its first record,
/// a new instance fences the old, and consume-transform-produce with
/// offsets in the transaction gives every input exactly once. A stream and
/// a materialized view over the same topic, there from the start, never
/// show an aborted or uncommitted record: they read as read_committed
/// consumers do. A transaction its producer abandoned holds them back
/// (with a plain record after it) until its timeout aborts it.
#[test]
fn confluent_kafka_transactions_are_atomic_for_consumers_and_views() {
    assert!(
        python_ok("confluent_kafka"),
        "confluent-kafka is required (pip install confluent-kafka, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let (rt, pg) = pg_session(&server);
    rt.block_on(pg.batch_execute(
        "CREATE STREAM tx_out (v text) WITH (topic = 'tx_out', format = 'text', partitions = 3);
         CREATE MATERIALIZED VIEW tx_counts AS
             SELECT left(v, 1) AS kind, count(*) AS n FROM tx_out GROUP BY 1",
    ))
    .unwrap();
    let out = run_python("kafka_transactions.py", &server.addr);
    let committed: Vec<String> = (0..13).map(|i| format!("c{i}")).collect();
    assert_eq!(
        out,
        format!(
            "committed 13 {}
uncommitted 18
while open 13 20
after commit 15
fenced True
new instance 16
eos 20 20 20 True
left open
",
            committed.join(" ")
        )
    );
    let mut expected: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    expected.sort();
    // The abandoned transaction (h0..h2) is open in partition 0 and the
    // plain record `late` follows it there: neither is visible yet.
    assert_eq!(tx_values(&rt, &pg), expected);
    assert_eq!(tx_counts(&rt, &pg), vec![("c".to_string(), 16)]);
    // Its 3 s timeout aborts it: `late` appears, h0..h2 never do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tx_values(&rt, &pg).len() < 17 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    expected.push("late".to_string());
    expected.sort();
    assert_eq!(tx_values(&rt, &pg), expected);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let want = vec![("c".to_string(), 16), ("l".to_string(), 1)];
    while tx_counts(&rt, &pg) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(tx_counts(&rt, &pg), want);
    // Kafka consumers agree: read_committed sees the same 17 records.
    let out = Command::new("kcat")
        .args(["-b", &server.addr, "-C", "-t", "tx_out", "-e", "-q"])
        .args(["-X", "isolation.level=read_committed", "-f", "%s\n"])
        .output()
        .unwrap();
    let mut seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    seen.sort();
    assert_eq!(seen, expected);
}

/// kafka-python's own transactional producer and isolation levels.
#[test]
fn kafka_python_transactions() {
    assert!(
        python_ok("kafka"),
        "kafka-python is required (pip install kafka-python, or run scripts/test, which installs it)"
    );
    let server = TestServer::start();
    let out = run_python("kafka_python_transactions.py", &server.addr);
    assert_eq!(
        out,
        "read_committed c0 c1 c2 c3 c4 c5\nread_uncommitted a0 a1 a2 c0 c1 c2 c3 c4 c5\n"
    );
}
