//! Window functions in a materialized view (`dataflow/window.rs`): the
//! work per change is proportional to the partitions it touches, not to
//! the view.
//!
//! A stream of JSON events `{k, v}` and the view
//! `SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v DESC),
//! sum(v) OVER (PARTITION BY k ORDER BY v) FROM events`.
//!
//! 1. Partitions of one size (S = 10 rows), more of them (K = 1,000 …
//!    100,000): 20,000 new events (at most 2 per partition) spread over
//!    every partition, 1,000 per tick; nanoseconds per event. Flat when
//!    the work follows the partitions touched.
//! 2. One number of partitions (K = 1,000), bigger ones (S = 10 … 1,000):
//!    the same; the cost grows with S, since a touched partition is
//!    recomputed whole (the stated cost model).
//! 3. The same query recomputed from scratch as a plain SELECT over the
//!    largest state of (1), against one tick of 1,000 events; the ratio.
//!
//! Run through `scripts/bench.sh wf`. Environment: WF_RUNS (default 3),
//! WF_SCALE (divides every K, default 1: a quick check of the runner).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use eddy::engine::{Engine, EngineOptions};
use eddy::log::batch::{NewRecord, encode};
use eddy::log::{Durability, Log, LogOptions};

#[path = "support/exec.rs"]
mod support;
use support::exec;

const QUERY: &str = "SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v DESC) AS r, \
     sum(v) OVER (PARTITION BY k ORDER BY v) AS running FROM events";

/// Event `i` over `keys` partitions.
fn event(i: u64, keys: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"k":{},"v":{}}}"#,
        (i * 7919) % keys,
        (i * 104_729) % 10_007
    ))
}

fn batches(from: u64, to: u64, keys: u64, per: u64) -> Vec<bytes::BytesMut> {
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        let end = (i + per).min(to);
        let records: Vec<NewRecord> = (i..end)
            .map(|j| NewRecord {
                key: None,
                value: Some(event(j, keys)),
                timestamp: 0,
                headers: vec![],
            })
            .collect();
        out.push(encode(&records).unwrap());
        i = end;
    }
    out
}

struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    engine: Arc<Engine>,
}

/// A view over `keys` partitions of `size` rows each, caught up.
async fn setup(keys: u64, size: u64) -> Setup {
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
        "CREATE STREAM events (k bigint, v bigint) WITH (topic = 'events', partitions = 1)",
    )
    .await;
    let p = log.partition("events", 0).unwrap();
    for b in batches(0, keys * size, keys, 5000) {
        p.append(b, Durability::Os).unwrap();
    }
    exec(&engine, &format!("CREATE MATERIALIZED VIEW w AS {QUERY}")).await;
    Setup {
        _dir: dir,
        log,
        engine,
    }
}

/// Nanoseconds per event for 20,000 events (2 per partition when there
/// are fewer than 10,000 partitions, so every partition keeps about its
/// size), 1,000 per tick, into a view of `keys` partitions of `size` rows;
/// and the median milliseconds of a tick.
async fn per_event(s: &Setup, keys: u64, size: u64) -> (f64, f64) {
    let n = 20_000.min(2 * keys);
    let start = keys * size;
    let p = s.log.partition("events", 0).unwrap();
    let mut ticks = Vec::new();
    let t = Instant::now();
    for b in batches(start, start + n, keys, 1000) {
        let tick = Instant::now();
        p.append(b, Durability::Os).unwrap();
        s.engine.tick().await.unwrap();
        ticks.push(tick.elapsed().as_secs_f64() * 1e3);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    // The view holds every event.
    let got = exec(&s.engine, "SELECT count(*) FROM w").await;
    let got = datafusion::arrow::util::display::array_value_to_string(got[0].column(0), 0).unwrap();
    assert_eq!(got, (start + n).to_string());
    ticks.sort_by(f64::total_cmp);
    (ns, ticks[ticks.len() / 2])
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt(v: &mut [f64], digits: usize) -> String {
    let m = median(v);
    format!(
        "{m:.digits$} ({:.digits$}–{:.digits$})",
        v[0],
        v[v.len() - 1]
    )
}

fn main() {
    let runs: usize = std::env::var("WF_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Stream of JSON events `{{k, v}}`; view `{QUERY}`; 20,000 new events (at most 2 \
         per partition) spread over every partition, 1,000 per tick (append, tick and view \
         update included); median of {runs} runs (min–max).\n"
    );
    println!("| partitions (K) × rows each (S) | ns per event | ratio to the first row |");
    println!("|---|---|---|");
    let scale: u64 = std::env::var("WF_SCALE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut last_tick = Vec::new();
    for (keys, size) in [
        (1_000u64, 10u64),
        (10_000, 10),
        (100_000, 10),
        (1_000, 100),
        (1_000, 1_000),
    ] {
        if keys == 1_000 && size == 100 {
            println!("| | | |");
        }
        let largest = (keys, size) == (100_000, 10);
        let keys = keys / scale;
        let mut ns = Vec::new();
        for _ in 0..runs {
            let s = rt.block_on(setup(keys, size));
            let (n, tick) = rt.block_on(per_event(&s, keys, size));
            ns.push(n);
            if largest {
                last_tick.push(tick);
            }
        }
        let m = median(&mut ns);
        let base = *BASE.get_or_init(|| m);
        println!(
            "| {keys} × {size} | {} | {:.2} |",
            fmt(&mut ns, 0),
            m / base
        );
    }
    println!();
    // The same query from scratch over 1,000,000 rows, against a tick.
    let s = rt.block_on(setup(100_000 / scale, 10));
    let mut recompute = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = rt.block_on(exec(
            &s.engine,
            &format!("SELECT count(*) FROM ({QUERY}) q"),
        ));
        recompute.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out[0].num_rows(), 1);
    }
    let r = median(&mut recompute);
    let t = median(&mut last_tick);
    println!("| over 100,000 partitions × 10 rows | ms |");
    println!("|---|---|");
    println!(
        "| the view: one tick of 1,000 events (median) | {} |",
        fmt(&mut last_tick, 2)
    );
    println!(
        "| the query recomputed as a plain SELECT | {} |",
        fmt(&mut recompute, 1)
    );
    println!("| ratio recompute / tick | {:.1}× |", r / t);
}

static BASE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
