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
           SELECT tag, k % 3 AS m, count(*) AS c FROM kv GROUP BY tag, k % 3;
         CREATE INDEX kv_by_tag ON kv (tag);",
    )
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for step in 0..150 {
        // An index made over the rows there are, and one dropped.
        match step {
            50 => run(&engine, "CREATE INDEX by_count ON by_tag (c)").await,
            100 => run(&engine, "DROP INDEX kv_by_tag").await,
            _ => {}
        }
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
        let n = rng.random_range(1..6);
        let got = query(
            &engine,
            &format!(
                "SELECT * FROM
                   (SELECT count(*) FROM kv WHERE k >= {lo} AND k < {hi}) AS a,
                   (SELECT count(*) FROM kv WHERE abs(k) >= {lo} AND abs(k) < {hi}) AS b,
                   (SELECT coalesce(sum(c), 0) FROM by_tag WHERE tag = 't{t}') AS c,
                   (SELECT count(*) FROM kv WHERE tag = 't{t}') AS d,
                   (SELECT count(*) FROM kv WHERE tag || '' = 't{t}') AS e,
                   (SELECT count(*) FROM by_tag WHERE c = {n}) AS f,
                   (SELECT count(*) FROM by_tag WHERE c + 0 = {n}) AS g"
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
        assert_eq!(
            cells[3], cells[4],
            "step {step} after {write}: tag t{t} by index {got:?} (seed {seed})"
        );
        assert_eq!(
            cells[5], cells[6],
            "step {step} after {write}: count {n} by index {got:?} (seed {seed})"
        );
    }
}

/// Rows the scan of `sql` read: the input of its filter, from EXPLAIN
/// ANALYZE's `selectivity=…% (passed/read)`.
async fn rows_read(c: &tokio_postgres::Client, sql: &str) -> u64 {
    let plan = common::slt::rows(c, &format!("EXPLAIN ANALYZE {sql}")).await;
    let text = plan.join("\n");
    let ratio = text
        .split("selectivity=")
        .nth(1)
        .and_then(|m| m.split_once('(')?.1.split_once(')'))
        .and_then(|(r, _)| r.split_once('/'))
        .unwrap_or_else(|| panic!("no filter selectivity in {text}"));
    // Counts past 1,000 print as `2.00 K`.
    let read = ratio.1.trim();
    let (n, scale) = match read.split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        _ => (read, 1.0),
    };
    let n: f64 = n
        .parse()
        .unwrap_or_else(|_| panic!("rows read {read:?} in {text}"));
    (n * scale).round() as u64
}

/// A named index makes a read by its columns read only the matching rows,
/// through the real server; it is built again after a restart, and gone
/// after DROP INDEX.
#[test]
fn an_index_reads_only_its_rows_and_outlives_a_restart() {
    let mut server = common::TestServer::start();
    let setup = async |addr| {
        let c = common::slt::connect(addr).await;
        let values: Vec<String> = (0..2000)
            .map(|i| format!("({i}, {}, 'p{i}')", i % 100))
            .collect();
        c.batch_execute(&format!(
            "CREATE TABLE big (id int PRIMARY KEY, grp int, pad text);
             INSERT INTO big VALUES {};
             CREATE MATERIALIZED VIEW sizes AS SELECT grp, count(*) AS n, max(id) AS top FROM big GROUP BY grp;
             CREATE INDEX big_by_grp ON big (grp);
             CREATE INDEX sizes_by_top ON sizes (top);
             CREATE VIEW spans AS SELECT grp, min(id) AS low FROM big GROUP BY grp;
             CREATE DEFAULT INDEX ON spans;",
            values.join(", ")
        ))
        .await
        .unwrap();
    };
    let check = async |addr, indexed: bool| {
        let c = common::slt::connect(addr).await;
        let by_grp = "SELECT * FROM big WHERE grp = 7";
        let got = common::slt::rows(&c, by_grp).await;
        assert_eq!(got.len(), 20);
        assert_eq!(
            got,
            common::slt::rows(&c, "SELECT * FROM big WHERE grp + 0 = 7").await
        );
        let by_top = "SELECT * FROM sizes WHERE top = 1907";
        assert_eq!(common::slt::rows(&c, by_top).await, ["7\t20\t1907"]);
        let (grp_rows, top_rows) = (rows_read(&c, by_grp).await, rows_read(&c, by_top).await);
        if indexed {
            assert_eq!((grp_rows, top_rows), (20, 1));
        } else {
            assert_eq!((grp_rows, top_rows), (2000, 100));
        }
        assert_eq!(
            rows_read(&c, "SELECT * FROM big WHERE grp + 0 = 7").await,
            2000
        );
        // A plain view, kept while indexed.
        let by_span = "SELECT * FROM spans WHERE grp = 7";
        assert_eq!(common::slt::rows(&c, by_span).await, ["7\t7"]);
        if indexed {
            assert_eq!(rows_read(&c, by_span).await, 1);
        }
    };
    server.rt.block_on(setup(server.pg_addr));
    server.rt.block_on(check(server.pg_addr, true));
    server.restart();
    server.rt.block_on(check(server.pg_addr, true));
    server.rt.block_on(async {
        let c = common::slt::connect(server.pg_addr).await;
        assert_eq!(
            common::slt::rows(&c, "SHOW INDEXES").await,
            [
                "big_by_grp\tbig\tdefault\t{grp}",
                "sizes_by_top\tsizes\tdefault\t{top}",
                "spans_primary_idx\tspans\tdefault\t{grp}"
            ]
        );
        c.batch_execute(
            "DROP INDEX big_by_grp; DROP INDEX sizes_by_top; DROP INDEX spans_primary_idx",
        )
        .await
        .unwrap();
    });
    server.rt.block_on(check(server.pg_addr, false));
    server.restart();
    server.rt.block_on(check(server.pg_addr, false));
}
