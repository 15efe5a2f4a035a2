//! Benchmark W4 (`../shared/bench/README.md`): Nexmark q5, the auctions
//! with the most bids in each sliding window (HOP 10 s, slide 2 s), as an
//! incremental materialized view over a stream of JSON bids.
//!
//! N bids (default 2,000,000) are appended to the stream's topic through
//! the log, then the view is created and backfills them; events per second
//! of that backfill, on the one thread a dataflow runs on (JSON decoding
//! included). In the same run, interleaved, the same query with HOP spelled
//! as eddy spelled it before the window became one pass: a UNION ALL of the
//! five shifted copies (each reading and decoding the stream). Both views
//! are checked equal.
//!
//! Bids follow the Nexmark generator's shape (bids are 46 of every 50
//! events; half go to a hot auction, one in 100 of the auctions so far; a
//! hot bidder three times in four; prices log-uniform from 1 to 10^6
//! dollars) at 10,000,000 events per second of event time, as published
//! runs use. Environment: W4_EVENTS (default 2,000,000), W4_RUNS (default
//! 3). Run through `scripts/bench.sh w4`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::engine::{Engine, EngineOptions};
use eddy::log::batch::{NewRecord, encode};
use eddy::log::{Durability, Log, LogOptions};

#[path = "support/exec.rs"]
mod support;
use support::exec;

/// A 64-bit mix of `x` (splitmix64): the generator's randomness, seeded by
/// the event number so every run writes the same bids.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// 2024-01-01 00:00:00 UTC in milliseconds.
const BASE_MS: u64 = 1_704_067_200_000;

/// Bid `i` as JSON.
fn bid(i: u64) -> Bytes {
    // Event number of the i-th bid (46 of every 50 events are bids).
    let event = i / 46 * 50 + 4 + i % 46;
    let auctions = (event / 50 * 3).max(1);
    let r = mix(i);
    let auction = if r.is_multiple_of(2) {
        1000 + auctions / 100 * 100
    } else {
        1000 + (r >> 8) % auctions
    };
    let persons = (event / 50).max(1);
    let bidder = if !(r >> 1).is_multiple_of(4) {
        1000 + persons / 100 * 100
    } else {
        1000 + (r >> 16) % persons
    };
    let price = 10f64.powf(((r >> 24) % 1_000_000) as f64 / 1_000_000.0 * 8.0) as u64;
    // 10,000,000 events per second of event time.
    let ms = BASE_MS + event / 10_000;
    Bytes::from(format!(
        r#"{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"channel-{}","url":"https://www.nexmark.com/item.htm?query=1","date_time":{ms},"extra":"{}"}}"#,
        r % 5,
        "x".repeat(40)
    ))
}

fn append(log: &Log, from: u64, to: u64) {
    let p = log.partition("bid", 0).unwrap();
    let mut i = from;
    while i < to {
        let end = (i + 2000).min(to);
        let records: Vec<NewRecord> = (i..end)
            .map(|j| NewRecord {
                key: None,
                value: Some(bid(j)),
                timestamp: 0,
                headers: vec![],
            })
            .collect();
        p.append(encode(&records).unwrap(), Durability::Os).unwrap();
        i = end;
    }
}

/// Nexmark q5 over `windows` (a FROM item giving bids with window_start).
fn q5(name: &str, windows: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {name} AS \
         SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime FROM ( \
           SELECT auction, count(*) AS num, window_start AS starttime \
           FROM {windows} GROUP BY window_start, auction) AS AuctionBids \
         JOIN ( \
           SELECT max(CountBids.num) AS maxn, CountBids.starttime FROM ( \
             SELECT count(*) AS num, window_start AS starttime \
             FROM {windows} GROUP BY auction, window_start) AS CountBids \
           GROUP BY CountBids.starttime) AS MaxBids \
         ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.num >= MaxBids.maxn"
    )
}

const HOP: &str = "HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)";

/// The UNION ALL of shifted copies eddy's HOP was rewritten into before.
fn copies() -> String {
    let copies: Vec<String> = (0..5)
        .map(|back| {
            let mut start = "date_bin(INTERVAL '2' SECOND, date_time)".to_string();
            for _ in 0..back {
                start = format!("{start} - INTERVAL '2' SECOND");
            }
            format!("SELECT *, {start} AS window_start FROM bid")
        })
        .collect();
    format!("({}) AS w", copies.join(" UNION ALL "))
}

/// Backfill time of q5 spelled with `windows`, and the view's rows.
async fn run(events: u64, name: &str, windows: &str) -> (Duration, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let engine = Engine::open_with(
        Arc::clone(&log),
        EngineOptions {
            checkpoint_interval: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    exec(
        &engine,
        "CREATE STREAM bid (auction bigint, bidder bigint, price bigint, channel text, \
         url text, date_time timestamp, extra text) WITH (topic = 'bid', partitions = 1)",
    )
    .await;
    append(&log, 0, events);
    let t = Instant::now();
    exec(&engine, &q5(name, windows)).await;
    let took = t.elapsed();
    let batches = exec(&engine, &format!("SELECT * FROM {name}")).await;
    let mut rows: Vec<String> = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    (took, rows)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let events: u64 = std::env::var("W4_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let runs: usize = std::env::var("W4_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let copies = copies();
    let (mut one_pass, mut shifted, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (a, rows_a) = rt.block_on(run(events, "q5", HOP));
        let (b, rows_b) = rt.block_on(run(events, "q5_copies", &copies));
        assert_eq!(rows_a, rows_b, "the two spellings of q5 disagree");
        assert!(!rows_a.is_empty());
        let (a, b) = (
            events as f64 / a.as_secs_f64(),
            events as f64 / b.as_secs_f64(),
        );
        one_pass.push(a);
        shifted.push(b);
        ratio.push(a / b);
    }
    let k = |v: f64| format!("{:.0}k", v / 1000.0);
    let (a, a_lo, a_hi) = median(one_pass);
    let (b, b_lo, b_hi) = median(shifted);
    let (r, r_lo, r_hi) = median(ratio);
    println!(
        "{events} Nexmark-shaped bids (JSON, about 190 bytes) at 10,000,000 events/s of event \
         time, loaded through the log; then `CREATE MATERIALIZED VIEW` of q5 (HOP 10 s, slide \
         2 s) backfills them on one dataflow thread; events per second of the backfill. The \
         same query with HOP written as the UNION ALL of five shifted copies (eddy's rewrite \
         before HOP became `unnest(hop_starts(…))`), interleaved; both views checked equal. \
         Median of {runs} runs (min–max).\n"
    );
    println!("| W4 q5 | events/s (one core) |");
    println!("|---|---|");
    println!(
        "| HOP as one pass (hop_starts + unnest) | {} ({}–{}) |",
        k(a),
        k(a_lo),
        k(a_hi)
    );
    println!(
        "| HOP as five shifted copies (UNION ALL) | {} ({}–{}) |",
        k(b),
        k(b_lo),
        k(b_hi)
    );
    println!("| ratio one pass / copies | {r:.2} ({r_lo:.2}–{r_hi:.2})× |");
    println!("\nTarget (README): ≥ 400k events/s per core.");
}
