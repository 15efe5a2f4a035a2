//! `/metrics` scraped as Prometheus scrapes it, and read with
//! Prometheus' own text-format parser (`prometheus_client`, through
//! `tests/python/parse_metrics.py`): every metric README.md names is
//! served, and the figures read from the system tables equal them,
//! after a real load (a Kafka producer, a consumer group, a view).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

/// GET `path` over plain HTTP/1.1: (status line, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    // The body may be chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut rest = body;
        let mut plain = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            plain.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        plain
    } else {
        body.to_string()
    };
    (status, body)
}

/// The exposition parsed by prometheus_client: families (name → type)
/// and samples ((name, labels) → value).
type Samples = BTreeMap<(String, String), f64>;

fn parse(text: &str) -> (BTreeMap<String, String>, Samples) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/parse_metrics.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["family", name, kind] => {
                families.insert(name.to_string(), kind.to_string());
            }
            ["sample", name, labels, value] => {
                samples.insert(
                    (name.to_string(), labels.to_string()),
                    value.parse().unwrap(),
                );
            }
            _ => panic!("unexpected parser line {line}"),
        }
    }
    (families, samples)
}

fn python_ok(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The metric names README.md's "Metrics" section lists.
fn readme_metrics() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("README.md has a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let mut names: Vec<String> = section
        .split('`')
        .filter(|w| {
            w.starts_with("eddy_")
                && *w != "eddy_catalog"
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn metrics_are_served_and_agree_with_the_system_tables() {
    assert!(
        python_ok("prometheus_client") && python_ok("confluent_kafka"),
        "prometheus-client and confluent-kafka are required (run scripts/test, which installs them)"
    );
    let server = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt.block_on(common::slt::connect(server.pg_addr));
    rt.block_on(pg.batch_execute(
        "CREATE STREAM plays (user_id int, game text, _timestamp timestamp) \
         WITH (topic = 'plays', partitions = 2);
         CREATE MATERIALIZED VIEW per_game AS SELECT game, count(*) AS n FROM plays GROUP BY game",
    ))
    .unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/metrics_load.py"
        ))
        .env("BOOTSTRAP", &server.addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The view has every play.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = rt
            .block_on(pg.query_one("SELECT coalesce(sum(n), 0) FROM per_game", &[]))
            .unwrap()
            .get(0);
        if n == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the view has {n} of 100 plays");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (status, body) = get(server.http_addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let (families, samples) = parse(&body);
    let value = |name: &str, labels: &str| -> f64 {
        *samples
            .get(&(name.to_string(), labels.to_string()))
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in\n{body}"))
    };

    // Every metric README names is served.
    let named = readme_metrics();
    assert!(named.len() >= 20, "{named:?}");
    for name in &named {
        // The parser names a counter's family without its `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            families.contains_key(name.as_str()) || families.contains_key(family),
            "README names {name}, which /metrics does not serve:\n{body}"
        );
    }

    // Partitions: as eddy_catalog.partitions says.
    for row in rt
        .block_on(pg.query(
            "SELECT \"partition\", start_offset, end_offset FROM eddy_catalog.partitions \
             WHERE topic = 'plays'",
            &[],
        ))
        .unwrap()
    {
        let p: i32 = row.get(0);
        let labels = format!("partition={p},topic=plays");
        assert_eq!(
            value("eddy_partition_start_offset", &labels),
            row.get::<_, i64>(1) as f64
        );
        assert_eq!(
            value("eddy_partition_end_offset", &labels),
            row.get::<_, i64>(2) as f64
        );
    }
    assert_eq!(
        value("eddy_partition_end_offset", "partition=0,topic=plays")
            + value("eddy_partition_end_offset", "partition=1,topic=plays"),
        101.0
    );
    // The consumer group read 20 of partition 0's 50.
    assert_eq!(
        value(
            "eddy_consumer_group_committed_offset",
            "group=readers,partition=0,topic=plays"
        ),
        20.0
    );
    assert_eq!(
        value(
            "eddy_consumer_group_lag",
            "group=readers,partition=0,topic=plays"
        ),
        30.0
    );
    // The view: its rows, and caught up.
    let rows: i64 = rt
        .block_on(pg.query_one(
            "SELECT \"rows\" FROM eddy_catalog.materialized_views WHERE name = 'per_game'",
            &[],
        ))
        .unwrap()
        .get(0);
    assert_eq!(rows, 7);
    assert_eq!(value("eddy_view_rows", "view=per_game"), 7.0);
    assert_eq!(value("eddy_view_records_behind", "view=per_game"), 0.0);
    assert_eq!(value("eddy_view_up", "view=per_game"), 1.0);
    let state: i64 = rt
        .block_on(pg.query_one(
            "SELECT sum(state_bytes) FROM eddy_catalog.dataflow_operators \
             WHERE dataflow = 'per_game'",
            &[],
        ))
        .unwrap()
        .get(0);
    assert_eq!(
        value("eddy_dataflow_state_bytes", "dataflow=per_game"),
        state as f64
    );
    // The record that is not JSON.
    assert_eq!(value("eddy_decode_errors", "relation=plays"), 1.0);
    // Counters of the work done.
    assert!(value("eddy_kafka_produced_records_total", "-") >= 101.0);
    assert!(value("eddy_kafka_produced_bytes_total", "-") > 0.0);
    assert!(value("eddy_kafka_requests_total", "api=Produce") >= 1.0);
    assert!(value("eddy_kafka_request_duration_seconds_count", "api=Fetch") >= 1.0);
    assert!(value("eddy_kafka_fetched_bytes_total", "-") > 0.0);
    assert!(value("eddy_connections", "protocol=pg") >= 1.0);
    assert!(value("eddy_connections_accepted_total", "protocol=kafka") >= 1.0);
    assert!(value("eddy_dataflow_tick_duration_seconds_count", "-") >= 1.0);
    assert_eq!(families["eddy_dataflow_tick_duration_seconds"], "histogram");
    assert!(value("eddy_dataflow_last_tick_timestamp_seconds", "-") > 1.7e9);

    // Anything else is 404.
    let (status, _) = get(server.http_addr, "/nothing");
    assert!(status.contains("404"), "{status}");
}
