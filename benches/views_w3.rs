//! Benchmark W3 (`../shared/bench/README.md`): the seed 000 group-by
//! (`COUNT(id), SUM(viewer_count) GROUP BY game_id, game_name`) as an
//! incremental materialized view over a stream of JSON events, 100,000 keys.
//!
//! 1. Throughput: N events (default 10 M) are appended to the stream's topic
//!    through the log, then the view is created and backfills them; events
//!    per second of that backfill, on the one thread a dataflow runs on
//!    (JSON decoding included).
//! 2. Freshness after the load: 1,000 new events appended, time until the
//!    view reflects them (the tick that follows returns), median of 20.
//! 3. DuckDB (PyPI) recomputing the same query over the same N rows in the
//!    same run (`scripts/w3_duckdb.py`), A B A B interleaved; the ratio.
//! 4. Flat per-event cost: the view's state at 10,000, 100,000 and 1,000,000
//!    keys; 200,000 events over those keys, 1,000 per tick; nanoseconds per
//!    event.
//! 5. Restart time as history grows: the view over 1/10 and all of the N
//!    events, restarted rebuilding from the log and restarted from a
//!    checkpoint of its state; seconds until the view is served.
//!
//! Run through `scripts/bench.sh`. Environment: W3_EVENTS (default
//! 10,000,000), W3_RUNS (default 3), W3_DUCKDB (python command, default
//! `python3`), W3_ONLY=backfill (only one backfill, for profiling;
//! W3_CHECKPOINTS=off without the checkpoint timer).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::engine::{Engine, EngineOptions};
use eddy::log::batch::{NewRecord, encode};
use eddy::log::{Durability, Log, LogOptions};

const KEYS: u64 = 100_000;

#[path = "support/exec.rs"]
mod support;
use support::exec;

/// Event `i` of the workload; `scripts/w3_duckdb.py` generates the same rows.
fn event(i: u64, keys: u64) -> Bytes {
    let k = i % keys;
    Bytes::from(format!(
        r#"{{"game_id":"g{k}","game_name":"game {k}","id":"{i}","viewer_count":{}}}"#,
        i % 1000
    ))
}

/// Append events `from..to` to partition 0 of `topic`, 2,000 per batch.
fn append(log: &Log, topic: &str, from: u64, to: u64, keys: u64) {
    let p = log.partition(topic, 0).unwrap();
    let mut i = from;
    while i < to {
        let end = (i + 2000).min(to);
        let records: Vec<NewRecord> = (i..end)
            .map(|j| NewRecord {
                key: None,
                value: Some(event(j, keys)),
                timestamp: 0,
                headers: vec![],
            })
            .collect();
        p.append(encode(&records).unwrap(), Durability::Os).unwrap();
        i = end;
    }
}

const VIEW: &str = "CREATE MATERIALIZED VIEW mv_agg_stream_game AS \
    SELECT game_id, game_name, COUNT(id) AS cnt_streams, SUM(viewer_count) AS agg_viewer_cnt \
    FROM twitch WHERE game_id IS NOT NULL GROUP BY game_id, game_name";

struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    engine: Arc<Engine>,
}

/// `checkpoints`: the server's default timer (30 s), else none.
async fn setup(checkpoints: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let options = if checkpoints {
        EngineOptions::default()
    } else {
        EngineOptions {
            checkpoint_interval: None,
            ..Default::default()
        }
    };
    let engine = Engine::open_with(Arc::clone(&log), options).await.unwrap();
    exec(
        &engine,
        "CREATE STREAM twitch (game_id text, game_name text, id text, viewer_count int) \
         WITH (topic = 'twitch', partitions = 1)",
    )
    .await;
    Setup {
        _dir: dir,
        log,
        engine,
    }
}

struct EddyRun {
    backfill: Duration,
    fresh: Duration,
}

async fn eddy_run(events: u64, checkpoints: bool) -> EddyRun {
    let s = setup(checkpoints).await;
    append(&s.log, "twitch", 0, events, KEYS);
    let t = Instant::now();
    exec(&s.engine, VIEW).await;
    let backfill = t.elapsed();
    let groups = exec(&s.engine, "SELECT count(*) FROM mv_agg_stream_game").await;
    let n = groups[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, KEYS.min(events));
    let mut fresh = Vec::new();
    let mut next = events;
    for _ in 0..20 {
        let t = Instant::now();
        append(&s.log, "twitch", next, next + 1000, KEYS);
        s.engine.tick().await.unwrap();
        fresh.push(t.elapsed());
        next += 1000;
    }
    // The view saw every event.
    let total = exec(&s.engine, "SELECT sum(cnt_streams) FROM mv_agg_stream_game").await;
    let total =
        datafusion::arrow::util::display::array_value_to_string(total[0].column(0), 0).unwrap();
    assert_eq!(total, next.to_string());
    fresh.sort();
    EddyRun {
        backfill,
        fresh: fresh[fresh.len() / 2],
    }
}

/// DuckDB recomputing the query over the same rows: seconds per recompute
/// (median of its own 3), or None when DuckDB is not installed.
fn duckdb_run(events: u64) -> Option<f64> {
    let python = std::env::var("W3_DUCKDB").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/w3_duckdb.py");
    let out = Command::new(python)
        .args([script, &events.to_string(), &KEYS.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("duckdb: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Nanoseconds per event for `n` events into a view whose state holds
/// `keys` groups (loaded first, not timed).
async fn per_event_ns(keys: u64, n: u64) -> f64 {
    let s = setup(true).await;
    append(&s.log, "twitch", 0, keys, keys);
    exec(&s.engine, VIEW).await;
    // Updates spread over every key: event i goes to key (i * 7919) % keys.
    let p = s.log.partition("twitch", 0).unwrap();
    let mut i = 0;
    let mut batches = Vec::new();
    while i < n {
        let end = (i + 1000).min(n);
        let records: Vec<NewRecord> = (i..end)
            .map(|j| NewRecord {
                key: None,
                value: Some(event(keys + (j * 7919) % keys, keys)),
                timestamp: 0,
                headers: vec![],
            })
            .collect();
        batches.push(encode(&records).unwrap());
        i = end;
    }
    // 1,000 events per tick: every case touches about 1,000 groups per
    // tick, so only the size of the state differs.
    let t = Instant::now();
    for b in batches {
        p.append(b, Durability::Os).unwrap();
        s.engine.tick().await.unwrap();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Seconds to restart over a stream of `events` events with the view
/// caught up: (rebuilding from the log, restoring the checkpoint).
async fn restart_secs(events: u64) -> (f64, f64) {
    let s = setup(true).await;
    append(&s.log, "twitch", 0, events, KEYS);
    exec(&s.engine, VIEW).await;
    let want = exec(
        &s.engine,
        "SELECT sum(cnt_streams), sum(agg_viewer_cnt) FROM mv_agg_stream_game",
    )
    .await;
    s.engine.checkpoint().unwrap().unwrap();
    let dir = s._dir;
    drop(s.engine);
    s.log.close().unwrap();
    drop(s.log);
    let mut secs = Vec::new();
    for interval in [None, Some(Duration::from_secs(3600))] {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let t = Instant::now();
        let engine = Engine::open_with(
            Arc::clone(&log),
            EngineOptions {
                checkpoint_interval: interval,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        secs.push(t.elapsed().as_secs_f64());
        assert_eq!(engine.restored().is_empty(), interval.is_none());
        let got = exec(
            &engine,
            "SELECT sum(cnt_streams), sum(agg_viewer_cnt) FROM mv_agg_stream_game",
        )
        .await;
        assert_eq!(got, want, "the restarted view differs");
        drop(engine);
        log.close().unwrap();
    }
    (secs[0], secs[1])
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let events: u64 = std::env::var("W3_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let runs: usize = std::env::var("W3_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // W3_ONLY=backfill: one backfill and its rate, for profiling.
    if std::env::var("W3_ONLY").as_deref() == Ok("backfill") {
        let checkpoints = std::env::var("W3_CHECKPOINTS").as_deref() != Ok("off");
        let r = rt.block_on(eddy_run(events, checkpoints));
        println!(
            "backfill: {:.3} M events/s, 1,000 visible in {:.2} ms",
            events as f64 / r.backfill.as_secs_f64() / 1e6,
            r.fresh.as_secs_f64() * 1e3
        );
        return;
    }
    let mut rate = Vec::new();
    let mut rate_no_ckpt = Vec::new();
    let mut fresh = Vec::new();
    let mut duck = Vec::new();
    let mut ratio = Vec::new();
    for _ in 0..runs {
        let r = rt.block_on(eddy_run(events, true));
        rate.push(events as f64 / r.backfill.as_secs_f64());
        let off = rt.block_on(eddy_run(events, false));
        rate_no_ckpt.push(events as f64 / off.backfill.as_secs_f64());
        let f = r.fresh.as_secs_f64();
        fresh.push(f * 1e3);
        if let Some(d) = duckdb_run(events) {
            duck.push(d * 1e3);
            ratio.push(d / f);
        }
    }
    let fmt = |v: &mut Vec<f64>, scale: f64, digits: usize| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min) / scale;
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max) / scale;
        let m = median(v) / scale;
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    };
    println!(
        "Stream of JSON events `{{game_id, game_name, id, viewer_count}}` over {KEYS} keys, \
         {events} events loaded through the log, then `CREATE MATERIALIZED VIEW` backfills them \
         on one dataflow thread; then 1,000 new events, time until the view shows them \
         (median of 20 per run). DuckDB: `CREATE TABLE … AS SELECT <same query>` over the same \
         rows in an in-memory database, median of 3 per run. Median of {runs} runs (min–max), \
         eddy and DuckDB interleaved.\n"
    );
    println!("| W3 measure | figure |");
    println!("|---|---|");
    println!(
        "| eddy backfill, events/s (one core), checkpoints every 30 s (the default) | {} M |",
        fmt(&mut rate, 1e6, 2)
    );
    println!(
        "| eddy backfill, events/s (one core), checkpoints off | {} M |",
        fmt(&mut rate_no_ckpt, 1e6, 2)
    );
    println!(
        "| eddy: 1,000 new events visible in the view, ms | {} |",
        fmt(&mut fresh, 1.0, 2)
    );
    if duck.is_empty() {
        println!("| DuckDB recompute over {events} rows | not installed |");
    } else {
        println!(
            "| DuckDB recompute over {events} rows, ms | {} |",
            fmt(&mut duck, 1.0, 1)
        );
        println!(
            "| ratio: DuckDB recompute / eddy 1,000-event update | {}× |",
            fmt(&mut ratio, 1.0, 0)
        );
    }
    println!();
    println!(
        "Per-event cost as the view's state grows: 200,000 events spread over every key of \
         a view already holding K groups, appended and applied 1,000 per tick (append, tick \
         and view update included); median of {runs} runs (min–max).\n"
    );
    println!("| groups in the view (K) | ns per event | ratio to K = 10,000 |");
    println!("|---|---|---|");
    let mut base = None;
    for keys in [10_000u64, 100_000, 1_000_000] {
        let mut v: Vec<f64> = (0..runs)
            .map(|_| rt.block_on(per_event_ns(keys, 200_000)))
            .collect();
        let m = median(&mut v);
        let b = *base.get_or_insert(m);
        println!("| {keys} | {} | {:.2} |", fmt(&mut v, 1.0, 0), m / b);
    }
    println!();
    println!(
        "Restart time as history grows: the view caught up over H events, a checkpoint \
         written, then the engine reopened (time until it serves the view) rebuilding from \
         the log, and restoring the checkpoint then reading what came after it (nothing \
         here); the view's contents checked equal both ways. One run per size.\n"
    );
    println!(
        "| events in history (H) | rebuild from the log, s | from the checkpoint, s | rebuild / checkpoint |"
    );
    println!("|---|---|---|---|");
    for h in [events / 10, events] {
        let (rebuild, restore) = rt.block_on(restart_secs(h));
        println!(
            "| {h} | {rebuild:.2} | {restore:.3} | {:.0}× |",
            rebuild / restore
        );
    }
}
