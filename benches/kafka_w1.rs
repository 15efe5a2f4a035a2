//! Benchmark W1 (`../shared/bench/README.md`): the log through the Kafka
//! protocol with librdkafka as the client. 100-byte records, 6 partitions,
//! one producer (acks=1, then acks=all) and one consumer, client and server
//! on the same machine, the server a separate `eddy serve` process (release
//! build). Prints Markdown; `scripts/bench.sh` puts it in BENCHMARKS.md.
//!
//! Run: `cargo bench --bench kafka_w1` (builds the release binary first via
//! the runner script). Environment: W1_RECORDS (default 2,000,000), W1_RUNS
//! (default 3), EDDY_BIN (default target/release/eddy).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

#[path = "../tests/common/serve.rs"]
mod serve;

fn create_topic(addr: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let r = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(name, 6, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    for x in r {
        x.unwrap();
    }
}

fn produce(addr: &str, topic: &str, n: usize, acks: &str) -> f64 {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .create()
        .unwrap();
    let value = [b'x'; 100];
    let start = Instant::now();
    for i in 0..n {
        let part = (i % 6) as i32;
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(&value[..])
            .partition(part);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 10_000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records per second from the first record received to the last (the
/// steady rate), and the time to the first record (assignment, offset
/// lookup and the first fetch).
fn consume(addr: &str, topic: &str, n: usize) -> (f64, Duration) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "w1")
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", "1000000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut seen = 0usize;
    while seen < n {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            assert_eq!(m.payload().map(|p| p.len()), Some(100));
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "consumer stalled at {seen}"
        );
    }
    let first = first.unwrap_or(start);
    let rate = (n - 1) as f64 / first.elapsed().as_secs_f64();
    (rate, first - start)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo test --benches` runs bench targets with no arguments in test
    // mode; only run when invoked as a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("W1_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let runs: usize = std::env::var("W1_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bin = std::env::var("EDDY_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/eddy", env!("CARGO_MANIFEST_DIR")));
    let (mut p1, mut pall, mut c, mut startup) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        eprintln!("W1 run {}/{runs}", run + 1);
        let dir = tempfile::tempdir().unwrap();
        let server = serve::Serve::start(&bin, dir.path());
        create_topic(&server.kafka, "w1-acks1");
        create_topic(&server.kafka, "w1-acksall");
        p1.push(produce(&server.kafka, "w1-acks1", n, "1"));
        pall.push(produce(&server.kafka, "w1-acksall", n, "all"));
        let (rate, first) = consume(&server.kafka, "w1-acks1", n);
        c.push(rate);
        startup.push(first.as_secs_f64() * 1e3);
    }
    println!(
        "librdkafka {} (rdkafka crate) producer and consumer, {n} records of 100 bytes, 6 partitions; server `eddy serve` (release) on the same machine; median of {runs} runs (min–max).",
        rdkafka::util::get_rdkafka_version().1
    );
    println!();
    println!("| W1 scenario | records/s | MB/s of values |");
    println!("|---|---|---|");
    for (name, v) in [
        ("produce acks=1", p1),
        ("produce acks=all (fsync)", pall),
        ("consume (first record to last)", c),
    ] {
        let (m, lo, hi) = median(v);
        println!(
            "| {name} | {:.2} M ({:.2}–{:.2} M) | {:.0} |",
            m / 1e6,
            lo / 1e6,
            hi / 1e6,
            m * 100.0 / 1e6
        );
    }
    let (m, lo, hi) = median(startup);
    println!();
    println!(
        "Consumer time to first record (assign, ListOffsets, first Fetch): {m:.0} ms ({lo:.0}–{hi:.0} ms)."
    );
}
