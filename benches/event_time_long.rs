//! A windowed view over a long simulated stream keeps bounded state.
//!
//! ksqlDB's `CREATE TABLE hourly AS SELECT k, COUNT(*), SUM(v) FROM ev
//! WINDOW TUMBLING (SIZE 1 HOUR, GRACE PERIOD 10 MINUTES) GROUP BY k EMIT
//! FINAL` over ET_EVENTS events (default 100 million) spread over 30
//! simulated days, 40 keys, each event up to 5 minutes out of order. The
//! events are appended to the stream's topic through the log in chunks of
//! 100,000, the view ticking after each; after every chunk the aggregate's
//! state (`eddy_catalog.dataflow_operators.state_rows` / `state_bytes`)
//! is read. At the end, the view's closed windows are compared with a
//! batch recomputation from the generated events (every window whose end
//! plus grace is at or before the greatest event time).
//!
//! Prints: events, simulated span, appends' and ticks' time, events/s
//! through the view, the most state held at any point against what the
//! whole stream would need, and the comparison. Run through
//! `scripts/bench.sh et`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::util::display::array_value_to_string;
use eddy::engine::Engine;
use eddy::log::batch::{NewRecord, encode};
use eddy::log::{Durability, Log, LogOptions};

#[path = "support/exec.rs"]
mod support;
use support::exec;

const KEYS: u64 = 40;
const START_MS: i64 = 1_704_067_200_000;
const DAYS: i64 = 30;
const HOUR_MS: i64 = 3_600_000;
const GRACE_MS: i64 = 600_000;
const JITTER_MS: u64 = 300_000;
const CHUNK: u64 = 100_000;

fn rows(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, i).unwrap())
                    .collect(),
            );
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::var("ET_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let step_ms = (DAYS * 24 * HOUR_MS) as f64 / events as f64;
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let engine = Engine::open(Arc::clone(&log)).await.unwrap();
    exec(
        &engine,
        "CREATE STREAM ev (k VARCHAR KEY, v INT) WITH (KAFKA_TOPIC = 'ev', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1); \
         CREATE TABLE hourly AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev \
         WINDOW TUMBLING (SIZE 1 HOUR, GRACE PERIOD 10 MINUTES) GROUP BY k EMIT FINAL",
    )
    .await;
    let partition = log.partition("ev", 0).unwrap();
    // The batch recomputation: (key, window start) → (count, sum).
    let mut want: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let mut newest = i64::MIN;
    let (mut most_rows, mut most_bytes) = (0u64, 0u64);
    let (mut appending, mut ticking) = (Duration::ZERO, Duration::ZERO);
    let mut from = 0;
    while from < events {
        let to = (from + CHUNK).min(events);
        let t = Instant::now();
        let records: Vec<NewRecord> = (from..to)
            .map(|i| {
                let key = format!("k{}", (i * 31) % KEYS);
                let v = (i % 100) as i64;
                let jitter = ((i * 7919) % JITTER_MS) as i64;
                let ts = START_MS + (i as f64 * step_ms) as i64 - jitter;
                newest = newest.max(ts);
                let w = want
                    .entry((key.clone(), ts - ts.rem_euclid(HOUR_MS)))
                    .or_default();
                w.0 += 1;
                w.1 += v;
                NewRecord {
                    key: Some(Bytes::from(key)),
                    value: Some(Bytes::from(format!(r#"{{"v":{v}}}"#))),
                    timestamp: ts,
                    headers: vec![],
                }
            })
            .collect();
        // Batches under the log's 1 MiB limit.
        for batch in records.chunks(20_000) {
            partition
                .append(encode(batch).unwrap(), Durability::Os)
                .unwrap();
        }
        appending += t.elapsed();
        let t = Instant::now();
        engine.tick().await.unwrap();
        ticking += t.elapsed();
        let state = rows(
            &exec(
                &engine,
                "SELECT state_rows, state_bytes FROM eddy_catalog.dataflow_operators \
                 WHERE dataflow = 'hourly' AND operator = 'aggregate'",
            )
            .await,
        );
        most_rows = most_rows.max(state[0][0].parse().unwrap());
        most_bytes = most_bytes.max(state[0][1].parse().unwrap());
        from = to;
    }
    let late = rows(
        &exec(
            &engine,
            "SELECT sum(late_rows) FROM eddy_catalog.dataflow_operators WHERE dataflow = 'hourly'",
        )
        .await,
    );
    let closed: BTreeMap<(String, i64), (i64, i64)> = want
        .iter()
        .filter(|((_, start), _)| start + HOUR_MS + GRACE_MS <= newest)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let got: BTreeMap<(String, i64), (i64, i64)> =
        rows(&exec(&engine, "SELECT k, n, s, windowstart FROM hourly").await)
            .into_iter()
            .map(|r| {
                (
                    (r[0].clone(), r[3].parse().unwrap()),
                    (r[1].parse().unwrap(), r[2].parse().unwrap()),
                )
            })
            .collect();
    let equal = got == closed;
    let secs = |d: Duration| d.as_secs_f64();
    println!("ksqlDB `WINDOW TUMBLING (SIZE 1 HOUR, GRACE PERIOD 10 MINUTES) … EMIT FINAL`,");
    println!("{KEYS} keys, events up to 5 minutes out of order, one partition, in process");
    println!("(appended through the log, a tick per {CHUNK} events).");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| events | {events} |");
    println!("| simulated span | {DAYS} days |");
    println!("| appending (encode + write) | {:.1} s |", secs(appending));
    println!(
        "| view maintenance (ticks) | {:.1} s, {:.2} M events/s |",
        secs(ticking),
        events as f64 / secs(ticking) / 1e6
    );
    println!(
        "| most aggregate state at any point | {most_rows} groups, {:.1} KiB |",
        most_bytes as f64 / 1024.0
    );
    println!(
        "| groups the whole stream has (windows × keys) | {} |",
        want.len()
    );
    println!("| late rows dropped | {} |", late[0][0]);
    println!(
        "| closed windows equal to the batch recomputation | {} ({} windows) |",
        if equal { "yes" } else { "NO" },
        closed.len()
    );
    drop(engine);
    log.close().unwrap();
    assert!(equal, "closed windows differ from the recomputation");
}
