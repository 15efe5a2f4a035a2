//! Lookups against recomputation, while writes land: a table read by its
//! PRIMARY KEY and a materialized view read by its GROUP BY key must give,
//! in the same query (so at the same epoch), what reading every row gives
//! — and the view what recomputing its query from the table gives.
//!
//! The engine runs in-process over a real log; a writer upserts and deletes
//! through SQL while readers query, and the dataflow timer ticks as well.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eddy::engine::{Engine, Output, parse};
use eddy::log::{Log, LogOptions};
use rand::{Rng, SeedableRng};

async fn run(engine: &Engine, sql: &str) {
    for stmt in parse(sql).unwrap() {
        match engine.execute(stmt).await.unwrap() {
            Output::PassThrough(text) => {
                engine
                    .session()
                    .sql(&text)
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
            }
            Output::Rows { df, .. } => {
                df.collect().await.unwrap();
            }
            _ => {}
        }
    }
}

async fn query(engine: &Engine, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in parse(sql).unwrap() {
        if let Output::Rows { df, .. } = engine.execute(stmt).await.unwrap() {
            out.extend(common::lines(&df.collect().await.unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_agree_with_full_reads_and_recomputation_under_writes() {
    let seed: u64 = std::env::var("EDDY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (EDDY_SEED replays)");
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let engine = Arc::new(Engine::open(Arc::clone(&log)).await.unwrap());
    run(
        &engine,
        "CREATE TABLE kv (v int, k int PRIMARY KEY, tag text);
         CREATE MATERIALIZED VIEW agg AS
           SELECT sum(v) AS s, count(*) AS c, k % 20 AS g FROM kv GROUP BY k % 20;
         CREATE MATERIALIZED VIEW by_tag AS
           SELECT tag, k % 3 AS m, count(*) AS c FROM kv GROUP BY tag, k % 3;",
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let engine = Arc::clone(&engine);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut writes = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = rng.random_range(0..200);
                let t0 = std::time::Instant::now();
                if rng.random_bool(0.25) {
                    run(&engine, &format!("DELETE FROM kv WHERE k = {k}")).await;
                } else {
                    let values: Vec<String> = (0..rng.random_range(1..8))
                        .map(|i| {
                            format!(
                                "({}, {}, 't{}')",
                                rng.random_range(-50..50),
                                (k + i * 7) % 200,
                                rng.random_range(0..4)
                            )
                        })
                        .collect();
                    // One key twice in a statement: the last one stays.
                    run(
                        &engine,
                        &format!("INSERT INTO kv VALUES {}", values.join(", ")),
                    )
                    .await;
                }
                writes += 1;
                if t0.elapsed() > Duration::from_millis(100) {
                    eprintln!("write {writes} took {:?}", t0.elapsed());
                }
            }
            writes
        })
    };
    let mut readers = Vec::new();
    let n_readers: u64 = std::env::var("EDDY_READERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for r in 0..n_readers {
        let engine = Arc::clone(&engine);
        let stop = Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (r + 1));
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = rng.random_range(0..200);
                let lo = rng.random_range(0..200);
                let hi = lo + rng.random_range(0..40);
                let g = rng.random_range(0..20);
                let t = rng.random_range(0..4);
                // Left: a lookup; right: the same rows through a predicate
                // no arrangement answers (abs) or recomputed from kv.
                let sql = format!(
                    "SELECT * FROM
                       (SELECT count(*) FROM kv WHERE k = {k}) AS q0,
                       (SELECT count(*) FROM kv WHERE abs(k) = {k}) AS q1,
                       (SELECT coalesce(sum(v), -999) FROM kv WHERE k IN ({k}, {lo}, {hi})) AS q2,
                       (SELECT coalesce(sum(v), -999) FROM kv WHERE abs(k) IN ({k}, {lo}, {hi})) AS q3,
                       (SELECT count(*) FROM kv WHERE k >= {lo} AND k < {hi}) AS q4,
                       (SELECT count(*) FROM kv WHERE abs(k) >= {lo} AND abs(k) < {hi}) AS q5,
                       (SELECT coalesce(max(s), -999) || '/' || coalesce(max(c), 0) FROM agg WHERE g = {g}) AS q6,
                       (SELECT coalesce(max(s), -999) || '/' || coalesce(max(c), 0) FROM agg WHERE abs(g) = {g}) AS q7,
                       (SELECT coalesce(sum(v), -999) || '/' || count(*) FROM kv WHERE k % 20 = {g}) AS q8,
                       (SELECT coalesce(sum(c), 0) FROM by_tag WHERE tag = 't{t}') AS q9,
                       (SELECT coalesce(sum(c), 0) FROM by_tag WHERE tag || '' = 't{t}') AS q10,
                       (SELECT count(*) FROM kv WHERE tag = 't{t}') AS q11"
                );
                let row = query(&engine, &sql).await;
                let cells: Vec<&str> = row[0].split(' ').collect();
                assert_eq!(cells[0], cells[1], "k = {k}: {row:?} (seed {seed})");
                assert_eq!(cells[2], cells[3], "k IN: {row:?} (seed {seed})");
                assert_eq!(cells[4], cells[5], "range: {row:?} (seed {seed})");
                assert_eq!(cells[6], cells[7], "view g = {g}: {row:?} (seed {seed})");
                let recomputed = if cells[8].ends_with("/0") {
                    "-999/0"
                } else {
                    cells[8]
                };
                assert_eq!(cells[6], recomputed, "view vs kv: {row:?} (seed {seed})");
                assert_eq!(cells[9], cells[10], "by_tag: {row:?} (seed {seed})");
                assert_eq!(cells[9], cells[11], "by_tag vs kv: {row:?} (seed {seed})");
                checks += 1;
            }
            checks
        }));
    }
    // Subqueries in the SELECT list run as applies, each a query of its
    // own: they read at the outer query's epoch too.
    readers.push({
        let engine = Arc::clone(&engine);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 99);
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                let g = rng.random_range(0..20);
                let row = query(
                    &engine,
                    &format!(
                        "SELECT (SELECT coalesce(max(c), 0) FROM agg WHERE g = {g}),
                                (SELECT count(*) FROM kv WHERE k % 20 = {g})"
                    ),
                )
                .await;
                let cells: Vec<&str> = row[0].split(' ').collect();
                assert_eq!(cells[0], cells[1], "applies: {row:?} (seed {seed})");
                checks += 1;
            }
            checks
        })
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let mut checks = 0;
    for r in readers {
        checks += r.await.unwrap();
    }
    eprintln!("{writes} writes, {checks} checked queries");
    assert!(
        writes > 10 && checks > 10,
        "{writes} writes, {checks} checks"
    );

    // And at rest, every key looked up one by one equals the full read.
    let all = query(&engine, "SELECT k, v, tag FROM kv ORDER BY k").await;
    let mut one_by_one = Vec::new();
    for k in 0..200 {
        one_by_one.extend(query(&engine, &format!("SELECT k, v, tag FROM kv WHERE k = {k}")).await);
    }
    assert_eq!(all, one_by_one, "seed {seed}");
}

/// The same checks with no concurrency: a write, then every kind of read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_agree_after_each_write() {
    let seed: u64 = std::env::var("EDDY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (EDDY_SEED replays)");
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let engine = Engine::open(Arc::clone(&log)).await.unwrap();
    run(
        &engine,
        "CREATE TABLE kv (v int, k int PRIMARY KEY, tag text);
         CREATE MATERIALIZED VIEW by_tag AS
           SELECT tag, k % 3 AS m, count(*) AS c FROM kv GROUP BY tag, k % 3;",
    )
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for step in 0..150 {
        let k = rng.random_range(0..50);
        let write = if rng.random_bool(0.25) {
            format!("DELETE FROM kv WHERE k = {k}")
        } else {
            format!(
                "INSERT INTO kv VALUES ({}, {k}, 't{}')",
                rng.random_range(-50..50),
                rng.random_range(0..4)
            )
        };
        run(&engine, &write).await;
        let lo = rng.random_range(0..50);
        let hi = lo + rng.random_range(0..20);
        let t = rng.random_range(0..4);
        let got = query(
            &engine,
            &format!(
                "SELECT * FROM
                   (SELECT count(*) FROM kv WHERE k >= {lo} AND k < {hi}) AS a,
                   (SELECT count(*) FROM kv WHERE abs(k) >= {lo} AND abs(k) < {hi}) AS b,
                   (SELECT coalesce(sum(c), 0) FROM by_tag WHERE tag = 't{t}') AS c,
                   (SELECT count(*) FROM kv WHERE tag = 't{t}') AS d"
            ),
        )
        .await;
        let cells: Vec<&str> = got[0].split(' ').collect();
        assert_eq!(
            cells[0], cells[1],
            "step {step} after {write}: range [{lo}, {hi}) {got:?} (seed {seed})"
        );
        assert_eq!(
            cells[2], cells[3],
            "step {step} after {write}: tag t{t} {got:?} (seed {seed})"
        );
    }
}
