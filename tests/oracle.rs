//! Oracle tests for the stateful operators: random inserts, updates and
//! deletes into tables; after each round every materialized view must equal
//! its query recomputed from scratch by DataFusion over the tables' current
//! contents; again after a restart that rebuilds them from the log, and
//! after one that restores them from a checkpoint and replays what came
//! after it.
//!
//! Runs the engine in-process over a real log in a temporary directory.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use eddy::engine::{Engine, Output, parse};
use eddy::log::{Log, LogOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn run(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for stmt in parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")) {
        match engine.execute(stmt).await {
            Ok(Output::PassThrough(text)) => {
                let df = engine
                    .session()
                    .sql(&text)
                    .await
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                out.extend(df.collect().await.unwrap_or_else(|e| panic!("{text}: {e}")));
            }
            Ok(Output::Rows { df, .. }) => {
                out.extend(df.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}")));
            }
            Ok(_) => {}
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    out
}

/// Rows as sorted strings (a multiset).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let row: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(i) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(c, i).unwrap_or_default()
                    }
                })
                .collect();
            out.push(row.join("|"));
        }
    }
    out.sort();
    out
}

/// (name, query) of the views under test: every stateful operator.
const VIEWS: &[(&str, &str)] = &[
    (
        "agg",
        "SELECT g, COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi, \
         AVG(v) AS mean, COUNT(DISTINCT v) AS dv, BOOL_OR(v > 5) AS any_big, \
         BOOL_AND(v > 0) AS all_pos, STRING_AGG(s, ',' ORDER BY s) AS ss, \
         SUM(v) FILTER (WHERE s = 'x') AS sx \
         FROM a GROUP BY g",
    ),
    (
        "agg_interval_array",
        "SELECT g, SUM(CASE WHEN v IS NULL THEN NULL WHEN v > 5 THEN INTERVAL '2 days 1 hour' \
         ELSE INTERVAL '1 minute 30 seconds' END) AS dur, \
         ARRAY_AGG(v ORDER BY v NULLS FIRST) AS vs FROM a GROUP BY g",
    ),
    (
        "agg_having",
        "SELECT g, s, SUM(v) AS total FROM a GROUP BY g, s HAVING COUNT(*) > 1",
    ),
    (
        "agg_global",
        "SELECT COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(s) AS hi FROM a",
    ),
    ("j_inner", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k"),
    (
        "j_left",
        "SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k",
    ),
    (
        "j_right",
        "SELECT a.v, b.k, b.w FROM a RIGHT JOIN b ON a.k = b.k",
    ),
    (
        "j_full",
        "SELECT a.k AS ak, a.v, b.k AS bk, b.w FROM a FULL JOIN b ON a.k = b.k",
    ),
    (
        "j_residual",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k AND a.v < b.w",
    ),
    (
        "semi",
        "SELECT k, v FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
    ),
    (
        "anti",
        "SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
    ),
    (
        "semi_residual",
        "SELECT k, v FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > a.v)",
    ),
    (
        "anti_residual",
        "SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > a.v)",
    ),
    ("dist", "SELECT DISTINCT g, s FROM a"),
    ("uni", "SELECT k FROM a UNION SELECT k FROM b"),
    ("exc", "SELECT k FROM a EXCEPT SELECT k FROM b"),
    ("inter", "SELECT k FROM a INTERSECT SELECT k FROM b"),
    ("exc_all", "SELECT k FROM a EXCEPT ALL SELECT k FROM b"),
    ("inter_all", "SELECT k FROM a INTERSECT ALL SELECT k FROM b"),
    (
        "topk",
        "SELECT k, v, s FROM a ORDER BY v DESC, k, s LIMIT 3",
    ),
    (
        "j_left_residual",
        "SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k AND b.w > a.v",
    ),
    (
        "j_full_residual",
        "SELECT a.k, a.v, b.k AS bk, b.w FROM a FULL JOIN b ON a.k = b.k AND b.w > a.v",
    ),
    (
        "topk_per_group",
        "SELECT g, k, v, s, rn FROM (SELECT g, k, v, s, ROW_NUMBER() OVER \
         (PARTITION BY g ORDER BY v DESC NULLS LAST, k, s) AS rn FROM a) WHERE rn <= 2",
    ),
    (
        "join_agg",
        "SELECT b.w, COUNT(*) AS n, SUM(a.v) AS s FROM a JOIN b ON a.k = b.k GROUP BY b.w",
    ),
    // UNNEST: a row per list element, NULL and empty lists giving none.
    ("unnested", "SELECT k, unnest(make_array(v, g)) AS e FROM a"),
    (
        "unnest_agg",
        "SELECT g, e, COUNT(*) AS n FROM (SELECT g, unnest(range(0, v % 4)) AS e FROM a) \
         GROUP BY g, e",
    ),
    // Window functions (`window.rs`): each partition recomputed when it
    // changes. Stacked windows of different partitions and orders; ties
    // in rank's ORDER BY are peers, so the result does not depend on how
    // they are broken.
    (
        "win_rank",
        "SELECT g, k, v, RANK() OVER (PARTITION BY g ORDER BY v DESC NULLS LAST) AS r, \
         DENSE_RANK() OVER (PARTITION BY g ORDER BY v) AS dr, \
         SUM(v) OVER (PARTITION BY g ORDER BY k) AS running, \
         COUNT(*) OVER (PARTITION BY g) AS n, \
         PERCENT_RANK() OVER (PARTITION BY g ORDER BY v) AS pr FROM a",
    ),
    // Ordered by every column: only identical rows tie, and they give
    // identical rows.
    (
        "win_offsets",
        "SELECT g, k, v, s, LAG(v) OVER w AS prev, LEAD(s, 1, 'none') OVER w AS next, \
         ROW_NUMBER() OVER w AS rn, FIRST_VALUE(k) OVER w AS first_k, \
         NTILE(2) OVER w AS half \
         FROM a WINDOW w AS (PARTITION BY g ORDER BY k, v, s)",
    ),
    // No PARTITION BY: one partition, a sliding frame.
    (
        "win_frame",
        "SELECT k, v, s, SUM(v) OVER (ORDER BY k, v, s ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
         AS moving, MAX(v) OVER (ORDER BY k RANGE BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS near \
         FROM a",
    ),
    // A view over a view.
    (
        "on_view",
        "SELECT n, COUNT(*) AS groups FROM agg GROUP BY n",
    ),
];

fn value(rng: &mut StdRng, domain: i64) -> String {
    if rng.random_ratio(1, 10) {
        "NULL".into()
    } else {
        rng.random_range(0..domain).to_string()
    }
}

/// Random inserts, deletes and updates into `a` and `b`.
async fn random_changes(engine: &Engine, rng: &mut StdRng) {
    for _ in 0..rng.random_range(1..4) {
        let stmt = match rng.random_range(0..10) {
            0..=3 => {
                let n = rng.random_range(1..4);
                let vals: Vec<String> = (0..n)
                    .map(|_| {
                        format!(
                            "({}, {}, {}, {})",
                            value(rng, 6),
                            value(rng, 3),
                            value(rng, 10),
                            ["'x'", "'y'", "'z'", "NULL"][rng.random_range(0..4)]
                        )
                    })
                    .collect();
                format!("INSERT INTO a VALUES {}", vals.join(", "))
            }
            4..=5 => format!(
                "INSERT INTO b VALUES ({}, {})",
                value(rng, 6),
                value(rng, 12)
            ),
            6 => format!("DELETE FROM a WHERE k = {}", rng.random_range(0..6)),
            7 => format!("DELETE FROM b WHERE k = {}", rng.random_range(0..6)),
            8 => format!(
                "UPDATE a SET g = {}, v = v + 1 WHERE k = {}",
                value(rng, 3),
                rng.random_range(0..6)
            ),
            _ => format!(
                "UPDATE b SET k = {} WHERE w = {}",
                value(rng, 6),
                rng.random_range(0..12)
            ),
        };
        run(engine, &stmt).await;
    }
}

/// Every view equals its query recomputed from scratch.
async fn assert_views(engine: &Engine, when: &str) {
    for (name, query) in VIEWS {
        let got = rows(&run(engine, &format!("SELECT * FROM {name}")).await);
        let want = rows(&run(engine, query).await);
        assert_eq!(got, want, "view {name} differs from recomputation ({when})");
    }
    // The multiset operations against counts taken here, not by the
    // engine's own set operations.
    let left = rows(&run(engine, "SELECT k FROM a").await);
    let right = rows(&run(engine, "SELECT k FROM b").await);
    let count = |v: &[String]| {
        let mut m = std::collections::BTreeMap::<String, i64>::new();
        for k in v {
            *m.entry(k.clone()).or_default() += 1;
        }
        m
    };
    let (l, r) = (count(&left), count(&right));
    for (name, keep) in [
        (
            "exc_all",
            (|l: i64, r: i64| (l - r).max(0)) as fn(i64, i64) -> i64,
        ),
        ("inter_all", |l: i64, r: i64| l.min(r)),
    ] {
        let mut want: Vec<String> = l
            .iter()
            .flat_map(|(k, n)| {
                std::iter::repeat_n(k.clone(), keep(*n, r.get(k).copied().unwrap_or(0)) as usize)
            })
            .collect();
        want.sort();
        let got = rows(&run(engine, &format!("SELECT * FROM {name}")).await);
        assert_eq!(got, want, "view {name} differs from the multiset ({when})");
    }
}

/// Close the engine's log (without a checkpoint) and open both again.
async fn reopen(
    dir: &std::path::Path,
    engine: Arc<Engine>,
    log: Arc<Log>,
) -> (Arc<Engine>, Arc<Log>) {
    drop(engine);
    log.close().expect("close");
    drop(log);
    let log = Log::open(dir, LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    (engine, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_recomputation_under_random_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(&engine, "CREATE TABLE a (k int, g int, v int, s text)").await;
    run(&engine, "CREATE TABLE b (k int, w int)").await;
    // Some rows before the views exist (backfill), the rest after.
    run(
        &engine,
        "INSERT INTO a VALUES (1, 1, 3, 'x'), (2, 1, 7, 'y'), (2, 2, NULL, 'x')",
    )
    .await;
    run(&engine, "INSERT INTO b VALUES (2, 10), (3, 1)").await;
    for (name, query) in VIEWS {
        run(
            &engine,
            &format!("CREATE MATERIALIZED VIEW {name} AS {query}"),
        )
        .await;
    }
    for seed in 0..3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..25 {
            random_changes(&engine, &mut rng).await;
            assert_views(&engine, &format!("seed {seed}, round {round}")).await;
        }
    }
    // After a restart with no checkpoint: every view rebuilt from the log.
    let (engine, log) = reopen(dir.path(), engine, log).await;
    assert!(engine.restored().is_empty());
    assert_views(&engine, "rebuilt from the log").await;

    // A checkpoint, more changes, a restart without one (a crash): the
    // state comes from the checkpoint, the changes since from the log.
    let info = engine.checkpoint().expect("checkpoint").expect("written");
    assert_eq!(info.relations, VIEWS.len() + 2);
    assert!(
        engine.checkpoint().expect("checkpoint").is_none(),
        "nothing changed"
    );
    let mut rng = StdRng::seed_from_u64(10);
    for _ in 0..20 {
        random_changes(&engine, &mut rng).await;
    }
    let (engine, log) = reopen(dir.path(), engine, log).await;
    let mut want: Vec<String> = VIEWS.iter().map(|(n, _)| n.to_string()).collect();
    want.extend(["a".to_string(), "b".to_string()]);
    want.sort();
    assert_eq!(engine.restored(), want, "every relation restored");
    assert_views(&engine, "restored from a checkpoint").await;
    // Restored operators go on incrementally.
    for round in 0..20 {
        random_changes(&engine, &mut rng).await;
        assert_views(&engine, &format!("after the restore, round {round}")).await;
    }

    // A damaged checkpoint is not used: everything is rebuilt from the log.
    engine.checkpoint().expect("checkpoint").expect("written");
    let path = dir.path().join("checkpoints").join("dataflows.ckpt");
    let mut bytes = std::fs::read(&path).expect("checkpoint file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).expect("damage it");
    let (engine, log) = reopen(dir.path(), engine, log).await;
    assert!(engine.restored().is_empty());
    assert_views(&engine, "after a damaged checkpoint").await;
    drop(engine);
    log.close().expect("close");
}

/// The upsert operator of keyed tables: random inserts (new and existing
/// keys), deletes and updates (also of the key) against a model map from
/// key to row; a view over the table against its recomputation; both again
/// after a restart (the state rebuilt from the keyed changelog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_table_equals_model_under_random_upserts() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(&engine, "CREATE TABLE kv (k int PRIMARY KEY, g int, v int)").await;
    let view = "SELECT g, count(*) AS n, sum(v) AS s FROM kv GROUP BY g";
    run(&engine, &format!("CREATE MATERIALIZED VIEW kv_g AS {view}")).await;
    let mut model: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let model_rows = |m: &BTreeMap<i64, (i64, i64)>| -> Vec<String> {
        let mut v: Vec<String> = m.iter().map(|(k, (g, v))| format!("{k}|{g}|{v}")).collect();
        v.sort();
        v
    };
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..90 {
        if round == 60 {
            // Half the history in a checkpoint, the rest replayed at restart.
            engine.checkpoint().expect("checkpoint").expect("written");
        }
        let k = rng.random_range(0..8i64);
        let g = rng.random_range(0..3i64);
        let v = rng.random_range(0..100i64);
        match rng.random_range(0..6) {
            0..=2 => {
                // Two rows in one statement, possibly the same key twice:
                // the later one wins.
                let k2 = rng.random_range(0..8i64);
                run(
                    &engine,
                    &format!(
                        "INSERT INTO kv VALUES ({k}, {g}, {v}), ({k2}, {g}, {})",
                        v + 1
                    ),
                )
                .await;
                model.insert(k, (g, v));
                model.insert(k2, (g, v + 1));
            }
            3 => {
                run(&engine, &format!("DELETE FROM kv WHERE k = {k}")).await;
                model.remove(&k);
            }
            4 => {
                run(&engine, &format!("UPDATE kv SET v = v + 1 WHERE g = {g}")).await;
                for (_, (gg, vv)) in model.iter_mut() {
                    if *gg == g {
                        *vv += 1;
                    }
                }
            }
            _ => {
                // Move a key onto another (which it replaces).
                let to = rng.random_range(0..8i64);
                run(&engine, &format!("UPDATE kv SET k = {to} WHERE k = {k}")).await;
                if let Some(row) = model.remove(&k) {
                    model.insert(to, row);
                }
            }
        }
        let got = rows(&run(&engine, "SELECT * FROM kv").await);
        assert_eq!(got, model_rows(&model), "round {round}");
        let got = rows(&run(&engine, "SELECT * FROM kv_g").await);
        let want = rows(&run(&engine, view).await);
        assert_eq!(got, want, "view, round {round}");
    }
    let (engine, log) = reopen(dir.path(), engine, log).await;
    assert_eq!(
        engine.restored(),
        vec!["kv".to_string(), "kv_g".to_string()]
    );
    assert_eq!(
        rows(&run(&engine, "SELECT * FROM kv").await),
        model_rows(&model)
    );
    let got = rows(&run(&engine, "SELECT * FROM kv_g").await);
    assert_eq!(got, rows(&run(&engine, view).await));
    log.close().expect("close");
}

/// Temporal filters (`mz_now()` compared with an expression over the row):
/// with the engine's clock under the test's control, random inserts and
/// deletes of rows stamped around the current time while the clock moves
/// on in random steps; after each tick every view equals its query
/// recomputed from scratch at that time (DataFusion evaluating `mz_now()`
/// from the same clock); again after restarts that restore the scheduled
/// changes from a checkpoint and that rebuild them from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_filters_equal_recomputation_as_time_passes() {
    use eddy::dataflow::temporal::Clock;
    use eddy::engine::EngineOptions;
    const VIEWS: &[(&str, &str)] = &[
        (
            "recent",
            "SELECT id, v FROM ev WHERE mz_now() <= ts + INTERVAL '10 seconds'",
        ),
        (
            "window",
            "SELECT id, v FROM ev WHERE mz_now() >= ts AND mz_now() < ts + INTERVAL '5 seconds' \
             AND v > 2",
        ),
        (
            "recent_by_group",
            "SELECT v % 3 AS g, count(*) AS n, sum(v) AS s FROM ev \
             WHERE ts + INTERVAL '8 seconds' > mz_now() GROUP BY v % 3",
        ),
        ("at_second", "SELECT id FROM ev WHERE mz_now() = ts"),
        (
            "shifted",
            "SELECT id, v FROM ev WHERE ts > mz_now() - INTERVAL '6 seconds' \
             AND mz_now() + INTERVAL '2 seconds' >= ts",
        ),
    ];
    let second = 1_000_000i64;
    let clock = Clock::manual(1_700_000_000 * second);
    let open = |log: Arc<Log>, clock: Clock| async move {
        Engine::open_with(
            log,
            EngineOptions {
                clock,
                ..Default::default()
            },
        )
        .await
        .expect("engine")
    };
    let check = |engine: Arc<Engine>, when: String| async move {
        engine.tick().await.expect("tick");
        for (name, query) in VIEWS {
            let got = rows(&run(&engine, &format!("SELECT * FROM {name}")).await);
            let want = rows(&run(&engine, query).await);
            assert_eq!(got, want, "view {name} differs from recomputation ({when})");
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = open(Arc::clone(&log), clock.clone()).await;
    run(&engine, "CREATE TABLE ev (id int, ts timestamp, v int)").await;
    let mut rng = StdRng::seed_from_u64(3);
    let mut next_id = 0;
    let mut changes = |engine: Arc<Engine>, rng: &mut StdRng| {
        // Rows stamped from 15 s before to 10 s after now, whole seconds
        // sometimes (so `mz_now() = ts` can hold), deletes of random ids.
        let now = clock.now_us();
        let mut stmts = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let offset = if rng.random_ratio(1, 3) {
                rng.random_range(-15..10) * second
            } else {
                rng.random_range(-15 * second..10 * second)
            };
            let ts = chrono::DateTime::from_timestamp_micros(now - now % second + offset)
                .expect("time")
                .naive_utc();
            stmts.push(format!(
                "INSERT INTO ev VALUES ({next_id}, '{ts}', {})",
                rng.random_range(0..6)
            ));
            next_id += 1;
        }
        if rng.random_ratio(1, 3) {
            stmts.push(format!(
                "DELETE FROM ev WHERE id = {}",
                rng.random_range(0..next_id.max(1))
            ));
        }
        async move {
            for s in stmts {
                run(&engine, &s).await;
            }
        }
    };
    changes(Arc::clone(&engine), &mut rng).await;
    for (name, query) in VIEWS {
        run(
            &engine,
            &format!("CREATE MATERIALIZED VIEW {name} AS {query}"),
        )
        .await;
    }
    for round in 0..60 {
        changes(Arc::clone(&engine), &mut rng).await;
        check(Arc::clone(&engine), format!("round {round}, after changes")).await;
        // The clock moves on by up to 3 s, sometimes exactly to a second.
        let step = if rng.random_ratio(1, 4) {
            second - clock.now_us() % second
        } else {
            rng.random_range(0..3 * second)
        };
        clock.set_us(clock.now_us() + step);
        check(
            Arc::clone(&engine),
            format!("round {round}, after the clock moved"),
        )
        .await;
        if round == 30 {
            engine.checkpoint().expect("checkpoint").expect("written");
        }
    }
    // Restored from the checkpoint (with the changes scheduled then), the
    // rest replayed from the log; then rebuilt from the log alone.
    drop(engine);
    log.close().expect("close");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = open(Arc::clone(&log), clock.clone()).await;
    assert!(engine.restored().contains(&"recent".to_string()));
    check(Arc::clone(&engine), "restored from a checkpoint".into()).await;
    for round in 0..10 {
        clock.set_us(clock.now_us() + rng.random_range(0..2 * second));
        changes(Arc::clone(&engine), &mut rng).await;
        check(
            Arc::clone(&engine),
            format!("after the restore, round {round}"),
        )
        .await;
    }
    drop(engine);
    log.close().expect("close");
    std::fs::remove_file(dir.path().join("checkpoints").join("dataflows.ckpt"))
        .expect("remove checkpoint");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = open(Arc::clone(&log), clock.clone()).await;
    assert!(engine.restored().is_empty());
    check(Arc::clone(&engine), "rebuilt from the log".into()).await;
    clock.set_us(clock.now_us() + 20 * second);
    check(Arc::clone(&engine), "everything expired".into()).await;
    assert!(rows(&run(&engine, "SELECT * FROM recent").await).is_empty());
    drop(engine);
    log.close().expect("close");
}

/// Windows closed by event time (ksqlDB's WINDOW … GRACE PERIOD, EMIT
/// FINAL) against a model: rows stamped around a moving stream time, some
/// late, in random batches (each batch one tick). The model judges each
/// (row, window) as ksqlDB does: late when the window had closed (end plus
/// grace) by the stream time at that row; a window closes (its state
/// freed) once the stream time after a tick passes its end plus grace.
/// EMIT CHANGES views hold every window with a row, EMIT FINAL views the
/// closed ones; late rows and the open groups are compared with
/// `dataflow_operators`. Again after a restore from a checkpoint and after
/// a rebuild from the log (in one read: the result does not depend on how
/// the records were batched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_windows_equal_a_model() {
    use std::collections::{BTreeMap, BTreeSet};
    /// (name, size ms, advance ms, grace ms, final)
    const VIEWS: &[(&str, i64, i64, i64, bool)] = &[
        ("t_changes", 10_000, 10_000, 3_000, false),
        ("t_final", 10_000, 10_000, 3_000, true),
        ("h_changes", 10_000, 5_000, 2_000, false),
        ("h_final", 10_000, 5_000, 2_000, true),
    ];
    const BASE_MS: i64 = 1_704_067_200_000; // 2024-01-01 00:00:00

    #[derive(Default, Clone)]
    struct Model {
        stream_time: Option<i64>,
        /// (key, window start) → (count, sum)
        windows: BTreeMap<(String, i64), (i64, i64)>,
        freed: BTreeSet<(String, i64)>,
        late: u64,
    }
    impl Model {
        fn batch(&mut self, size: i64, adv: i64, grace: i64, rows: &[(String, i64, i64)]) {
            for (k, v, t) in rows {
                let st = self.stream_time.map_or(*t, |s| s.max(*t));
                self.stream_time = Some(st);
                let mut start = t - t.rem_euclid(adv);
                while start + size > *t {
                    // Counted per window a row falls in.
                    if start + size + grace <= st {
                        self.late += 1;
                    } else {
                        let e = self.windows.entry((k.clone(), start)).or_default();
                        e.0 += 1;
                        e.1 += v;
                    }
                    start -= adv;
                }
            }
            if let Some(st) = self.stream_time {
                for (key, start) in self.windows.keys() {
                    if start + size + grace <= st {
                        self.freed.insert((key.clone(), *start));
                    }
                }
            }
        }

        fn rows(&self, fin: bool) -> Vec<String> {
            let mut out: Vec<String> = self
                .windows
                .iter()
                .filter(|(w, _)| !fin || self.freed.contains(w))
                .map(|((k, start), (n, s))| format!("{k}|{n}|{s}|{}", BASE_MS + start))
                .collect();
            out.sort();
            out
        }

        fn open(&self) -> u64 {
            self.windows
                .keys()
                .filter(|w| !self.freed.contains(*w))
                .count() as u64
        }
    }

    async fn check(engine: &Engine, models: &[Model], when: &str) {
        engine.tick().await.expect("tick");
        for ((name, .., fin), model) in VIEWS.iter().zip(models) {
            let got = rows(&run(engine, &format!("SELECT k, n, s, windowstart FROM {name}")).await);
            assert_eq!(got, model.rows(*fin), "view {name} ({when})");
            let stats = rows(
                &run(
                    engine,
                    &format!(
                        "SELECT sum(late_rows), sum(CASE WHEN operator = 'aggregate' \
                         THEN state_rows ELSE 0 END) FROM eddy_catalog.dataflow_operators \
                         WHERE dataflow = '{name}'"
                    ),
                )
                .await,
            );
            assert_eq!(
                stats,
                vec![format!("{}|{}", model.late, model.open())],
                "late rows and open groups of {name} ({when})"
            );
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(
        &engine,
        "CREATE STREAM ev (k VARCHAR KEY, v INT) WITH (KAFKA_TOPIC = 'ev', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1)",
    )
    .await;
    for (name, size, adv, grace, fin) in VIEWS {
        let window = if size == adv {
            format!(
                "TUMBLING (SIZE {} SECONDS, GRACE PERIOD {} SECONDS)",
                size / 1000,
                grace / 1000
            )
        } else {
            format!(
                "HOPPING (SIZE {} SECONDS, ADVANCE BY {} SECONDS, GRACE PERIOD {} SECONDS)",
                size / 1000,
                adv / 1000,
                grace / 1000
            )
        };
        let emit = if *fin { "FINAL" } else { "CHANGES" };
        run(
            &engine,
            &format!(
                "CREATE TABLE {name} AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev \
                 WINDOW {window} GROUP BY k EMIT {emit}"
            ),
        )
        .await;
    }
    let mut models = vec![Model::default(); VIEWS.len()];
    let mut rng = StdRng::seed_from_u64(7);
    let mut now = 0i64;
    let mut round = |engine: Arc<Engine>, models: &mut Vec<Model>, rng: &mut StdRng| {
        now += rng.random_range(0..4_000);
        let rows: Vec<(String, i64, i64)> = (0..rng.random_range(1..6))
            .map(|_| {
                let t = (now + rng.random_range(-20_000..1_000)).max(0);
                let k = ["a", "b", "c"][rng.random_range(0..3)].to_string();
                (k, rng.random_range(0..10), t)
            })
            .collect();
        for ((_, size, adv, grace, _), m) in VIEWS.iter().zip(models.iter_mut()) {
            m.batch(*size, *adv, *grace, &rows);
        }
        let values: Vec<String> = rows
            .iter()
            .map(|(k, v, t)| {
                let ts = chrono::DateTime::from_timestamp_millis(BASE_MS + t)
                    .expect("time")
                    .naive_utc();
                format!("('{k}', {v}, '{ts}')")
            })
            .collect();
        let sql = format!(
            "INSERT INTO ev (k, v, rowtime) VALUES {}",
            values.join(", ")
        );
        async move {
            run(&engine, &sql).await;
            engine.tick().await.expect("tick");
        }
    };
    for r in 0..80 {
        round(Arc::clone(&engine), &mut models, &mut rng).await;
        check(&engine, &models, &format!("round {r}")).await;
        if r == 50 {
            engine.checkpoint().expect("checkpoint").expect("written");
        }
    }
    assert!(
        models[0].late > 0 && models[2].late > 0,
        "the test saw late rows"
    );
    assert!(!models[1].freed.is_empty(), "the test saw windows close");
    // Restored from the checkpoint, the rest replayed from the log.
    drop(engine);
    log.close().expect("close");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    assert!(engine.restored().contains(&"t_final".to_string()));
    check(&engine, &models, "restored from a checkpoint").await;
    for r in 0..20 {
        round(Arc::clone(&engine), &mut models, &mut rng).await;
        check(&engine, &models, &format!("after the restore, round {r}")).await;
    }
    // Rebuilt from the log in one read: the same windows, late rows and
    // open groups.
    drop(engine);
    log.close().expect("close");
    std::fs::remove_file(dir.path().join("checkpoints").join("dataflows.ckpt"))
        .expect("remove checkpoint");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    assert!(engine.restored().is_empty());
    check(&engine, &models, "rebuilt from the log").await;
    drop(engine);
    log.close().expect("close");
}

/// Session windows against their recomputation from scratch: records
/// arrive in random order (so sessions grow at both ends and merge), in
/// random batches; after each, the persistent query's sessions must equal
/// DataFusion's recomputation over the whole stream (consecutive times per
/// key no further apart than the gap form one session), with no session
/// closing (the default grace is a day). Again after a restore from a
/// checkpoint and after a rebuild from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_equal_recomputation() {
    const SESSIONS: &str = "SELECT uid, c, total, windowstart, windowend FROM sess";
    const RECOMPUTED: &str = "SELECT uid, count(*) AS c, sum(n) AS total, \
        CAST(EXTRACT(EPOCH FROM min(rowtime)) * 1000 AS BIGINT) AS ws, \
        CAST(EXTRACT(EPOCH FROM max(rowtime)) * 1000 AS BIGINT) AS we FROM ( \
          SELECT *, SUM(brk) OVER (PARTITION BY uid ORDER BY rowtime \
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM ( \
            SELECT uid, n, rowtime, CASE WHEN rowtime - LAG(rowtime) OVER \
              (PARTITION BY uid ORDER BY rowtime) <= INTERVAL '10 seconds' \
              THEN 0 ELSE 1 END AS brk FROM acts) x) y \
        GROUP BY uid, sid";
    async fn check(engine: &Engine, when: &str) {
        engine.tick().await.expect("tick");
        let got = rows(&run(engine, SESSIONS).await);
        let want = rows(&run(engine, RECOMPUTED).await);
        assert_eq!(got, want, "sessions differ from recomputation ({when})");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(
        &engine,
        "CREATE STREAM acts (uid VARCHAR KEY, n INT) WITH (KAFKA_TOPIC = 'acts', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1)",
    )
    .await;
    run(
        &engine,
        "CREATE TABLE sess AS SELECT uid, COUNT(*) AS c, SUM(n) AS total FROM acts \
         WINDOW SESSION (10 SECONDS) GROUP BY uid EMIT CHANGES",
    )
    .await;
    let mut rng = StdRng::seed_from_u64(11);
    let batch = |engine: Arc<Engine>, rng: &mut StdRng| {
        // Times over 5 minutes in whole seconds (so gaps of exactly 10 s
        // happen), for 3 keys: about one record per 7 s per key.
        let values: Vec<String> = (0..rng.random_range(1..8))
            .map(|_| {
                let t =
                    chrono::DateTime::from_timestamp(1_704_067_200 + rng.random_range(0..300), 0)
                        .expect("time")
                        .naive_utc();
                let k = ["a", "b", "c"][rng.random_range(0..3)];
                format!("('{k}', {}, '{t}')", rng.random_range(0..10))
            })
            .collect();
        let sql = format!(
            "INSERT INTO acts (uid, n, rowtime) VALUES {}",
            values.join(", ")
        );
        async move {
            run(&engine, &sql).await;
        }
    };
    for round in 0..40 {
        batch(Arc::clone(&engine), &mut rng).await;
        check(&engine, &format!("round {round}")).await;
        if round == 25 {
            engine.checkpoint().expect("checkpoint").expect("written");
        }
    }
    drop(engine);
    log.close().expect("close");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    assert!(engine.restored().contains(&"sess".to_string()));
    check(&engine, "restored from a checkpoint").await;
    for round in 0..10 {
        batch(Arc::clone(&engine), &mut rng).await;
        check(&engine, &format!("after the restore, round {round}")).await;
    }
    drop(engine);
    log.close().expect("close");
    std::fs::remove_file(dir.path().join("checkpoints").join("dataflows.ckpt"))
        .expect("remove checkpoint");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    assert!(engine.restored().is_empty());
    check(&engine, "rebuilt from the log").await;
    drop(engine);
    log.close().expect("close");
}

/// ksqlDB's stream-table join in a persistent query against a model: each
/// click is joined with the users table as it is when the click comes
/// (NULL when the user is missing), and later upserts and deletes of users
/// revise nothing. Random batches of table changes and of clicks, each a
/// tick. After a restore from a checkpoint every click is there once; the
/// changes since the checkpoint are replayed in one tick, table first, so
/// those clicks meet the table as it was at the end of the replay (the
/// join is by processing order, not by event time: a documented limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_table_lookup_join_equals_a_model() {
    use std::collections::BTreeMap;
    async fn check(engine: &Engine, want: &[String], when: &str) {
        engine.tick().await.expect("tick");
        let got = rows(&run(engine, "SELECT userid, url, region FROM enriched").await);
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "stream-table join ({when})");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(
        &engine,
        "CREATE TABLE users (id VARCHAR PRIMARY KEY, region VARCHAR) WITH (KAFKA_TOPIC = 'users', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1); \
         CREATE STREAM clicks (userid VARCHAR KEY, url VARCHAR) WITH (KAFKA_TOPIC = 'clicks', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1); \
         CREATE STREAM enriched AS SELECT c.userid, c.url, u.region FROM clicks c \
         LEFT JOIN users u ON c.userid = u.id EMIT CHANGES",
    )
    .await;
    let mut users: BTreeMap<String, String> = BTreeMap::new();
    let mut want: Vec<String> = Vec::new();
    let mut rng = StdRng::seed_from_u64(5);
    let mut next = 0;
    let mut round = |engine: Arc<Engine>,
                     users: &mut BTreeMap<String, String>,
                     want: &mut Vec<String>,
                     rng: &mut StdRng| {
        let mut stmts = Vec::new();
        // Table changes, one tick.
        for _ in 0..rng.random_range(0..3) {
            let id = format!("u{}", rng.random_range(0..5));
            if rng.random_ratio(1, 4) {
                users.remove(&id);
                stmts.push((format!("DELETE FROM users WHERE id = '{id}'"), true));
            } else {
                let region = ["eu", "us", "asia"][rng.random_range(0..3)].to_string();
                stmts.push((
                    format!("INSERT INTO users VALUES ('{id}', '{region}')"),
                    true,
                ));
                users.insert(id, region);
            }
        }
        // Clicks, another tick.
        let clicks: Vec<(String, String)> = (0..rng.random_range(1..4))
            .map(|_| {
                next += 1;
                (format!("u{}", rng.random_range(0..6)), format!("/p{next}"))
            })
            .collect();
        for (u, url) in &clicks {
            let region = users.get(u).cloned().unwrap_or_else(|| "NULL".into());
            want.push(format!("{u}|{url}|{region}"));
        }
        let values: Vec<String> = clicks
            .iter()
            .map(|(u, url)| format!("('{u}', '{url}')"))
            .collect();
        stmts.push((
            format!(
                "INSERT INTO clicks (userid, url) VALUES {}",
                values.join(", ")
            ),
            false,
        ));
        async move {
            for (s, _) in stmts {
                run(&engine, &s).await;
                engine.tick().await.expect("tick");
            }
        }
    };
    for r in 0..40 {
        round(Arc::clone(&engine), &mut users, &mut want, &mut rng).await;
        check(&engine, &want, &format!("round {r}")).await;
        if r == 25 {
            engine.checkpoint().expect("checkpoint").expect("written");
        }
    }
    drop(engine);
    log.close().expect("close");
    let log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    assert!(engine.restored().contains(&"enriched".to_string()));
    engine.tick().await.expect("tick");
    let got = rows(&run(&engine, "SELECT count(*) FROM enriched").await);
    assert_eq!(
        got,
        vec![want.len().to_string()],
        "every click once after the restore"
    );
    for r in 0..10 {
        round(Arc::clone(&engine), &mut users, &mut want, &mut rng).await;
        let got = rows(&run(&engine, "SELECT count(*) FROM enriched").await);
        assert_eq!(
            got,
            vec![want.len().to_string()],
            "after the restore, round {r}"
        );
    }
    drop(engine);
    log.close().expect("close");
}
