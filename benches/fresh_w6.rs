//! Benchmark W6 (`../shared/bench/README.md`): freshness. Events are
//! produced at a fixed rate (default 100,000/s) by librdkafka into a
//! stream feeding a q17-style materialized view (count, max and sum of
//! bids per auction); meanwhile a probe produces one marker event (an
//! auction of its own) every 20 ms, waits for its ack (acks=1), then
//! polls `SELECT … FROM w6_stats WHERE auction = <marker>` over pgwire
//! until the row is there. The figure is the time from the producer's ack
//! to the row being visible: p50 and p99 of the probes, median of W6_RUNS
//! (default 3) runs of W6_SECONDS (default 10) each.
//!
//! Run through `scripts/bench.sh`; EDDY_BIN names the server binary,
//! W6_RATE the background rate.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/serve.rs"]
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// One run: (p50 ms, p99 ms, events/s produced in the background).
fn run(bin: &str, rate: u64, secs: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let server = serve::Serve::start(bin, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pg = server.pg;
    let client = rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(
            &format!("host={} port={} user=eddy dbname=eddy", pg.ip(), pg.port()),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE STREAM w6 (auction bigint, price bigint, bidder bigint) WITH (topic = 'w6', partitions = 1);
                 CREATE MATERIALIZED VIEW w6_stats AS
                   SELECT auction, count(*) AS bids, max(price) AS top, sum(price) AS total
                   FROM w6 GROUP BY auction;",
            )
            .await
            .unwrap();
        client
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let background = {
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        let brokers = server.kafka.clone();
        std::thread::spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "2")
                .set("acks", "1")
                .create()
                .unwrap();
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Keep to `rate` per second, in slices of 1 ms.
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    let value = format!(
                        r#"{{"auction":{},"price":{},"bidder":{}}}"#,
                        n % 10_000,
                        100 + n % 9_000,
                        n % 7_919
                    );
                    match producer.send(BaseRecord::<(), String>::to("w6").payload(&value)) {
                        Ok(()) => n += 1,
                        Err(_) => {
                            producer.poll(Duration::from_millis(1));
                        }
                    }
                }
                producer.poll(Duration::from_millis(1));
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            sent.store(n, Ordering::Relaxed);
        })
    };
    let probe: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &server.kafka)
        .set("linger.ms", "0")
        .set("acks", "1")
        .create()
        .unwrap();
    // Let the background load settle in.
    std::thread::sleep(Duration::from_secs(1));
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut i: u64 = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        i += 1;
        let auction = 1_000_000_000 + i;
        let value = format!(r#"{{"auction":{auction},"price":1,"bidder":0}}"#);
        let acked = rt.block_on(async {
            probe
                .send(
                    FutureRecord::<(), String>::to("w6").payload(&value),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            Instant::now()
        });
        let sql = format!("SELECT bids FROM w6_stats WHERE auction = {auction}");
        let seen = rt.block_on(async {
            loop {
                let rows = client.simple_query(&sql).await.unwrap();
                if rows
                    .iter()
                    .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                {
                    return Instant::now();
                }
                assert!(
                    acked.elapsed() < Duration::from_secs(10),
                    "probe {auction} never seen"
                );
            }
        });
        latencies.push((seen - acked).as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64() + 1.0;
    stop.store(true, Ordering::Relaxed);
    background.join().unwrap();
    latencies.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        sent.load(Ordering::Relaxed) as f64 / elapsed,
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = env("W6_RUNS", 3);
    let secs: u64 = env("W6_SECONDS", 10);
    let rate: u64 = env("W6_RATE", 100_000);
    let bin = std::env::var("EDDY_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/eddy", env!("CARGO_MANIFEST_DIR")));
    let (mut p50, mut p99, mut rates) = (vec![], vec![], vec![]);
    for r in 0..runs {
        eprintln!("W6 run {}/{runs}", r + 1);
        let (a, b, c) = run(&bin, rate, secs);
        p50.push(a);
        p99.push(b);
        rates.push(c);
    }
    let (r, rlo, rhi) = median(rates);
    println!(
        "librdkafka (rdkafka crate) producing JSON bids at a target {rate}/s (achieved {:.0}/s, {:.0}–{:.0}) into a one-partition stream under a q17-style view (count, max, sum per auction over 10,000 auctions); a probe event every 20 ms with its own auction, acks=1; time from the probe's ack to its row in a SELECT over pgwire (polled); {secs} s per run, median of {runs} runs (min–max).",
        r, rlo, rhi
    );
    println!();
    println!("| W6 measure | ms |");
    println!("|---|---|");
    let (m, lo, hi) = median(p50);
    println!("| producer ack → visible in SELECT, p50 | {m:.2} ({lo:.2}–{hi:.2}) |");
    let (m, lo, hi) = median(p99);
    println!("| producer ack → visible in SELECT, p99 | {m:.2} ({lo:.2}–{hi:.2}) |");
}
