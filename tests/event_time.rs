//! Event time over a long stream: a windowed persistent query over many
//! simulated days keeps state for the open windows only (the figures of
//! `eddy_catalog.dataflow_operators`), while its closed windows equal a
//! batch recomputation over the whole stream. Records are appended to the
//! stream's topic through the log, keyed, with their event time as the
//! record timestamp (ROWTIME), slightly out of order.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use eddy::engine::{Engine, Output, parse};
use eddy::log::batch::{NewRecord, encode};
use eddy::log::{Durability, Log, LogOptions};

async fn run(engine: &Engine, sql: &str) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for stmt in parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")) {
        match engine.execute(stmt).await {
            Ok(Output::PassThrough(text)) => {
                let df = engine.session().sql(&text).await.expect("plan");
                out.extend(df.collect().await.expect("run"));
            }
            Ok(Output::Rows { df, .. }) => out.extend(df.collect().await.expect("run")),
            Ok(_) => {}
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    out
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let row: Vec<String> = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, i).unwrap_or_default())
                .collect();
            out.push(row.join("|"));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_state_stays_bounded_over_simulated_days() {
    const KEYS: u64 = 40;
    const EVENTS: u64 = 240_000;
    // 20 days: one event every 7.2 s, up to 5 minutes out of order.
    const STEP_MS: i64 = 7_200;
    const START_MS: i64 = 1_704_067_200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(
        &engine,
        "CREATE STREAM ev (k VARCHAR KEY, v INT) WITH (KAFKA_TOPIC = 'ev', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1)",
    )
    .await;
    run(
        &engine,
        "CREATE TABLE hourly AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev \
         WINDOW TUMBLING (SIZE 1 HOUR, GRACE PERIOD 10 MINUTES) GROUP BY k EMIT FINAL",
    )
    .await;
    let partition = log.partition("ev", 0).expect("partition");
    let mut most_state = 0u64;
    let chunk = 10_000;
    for from in (0..EVENTS).step_by(chunk as usize) {
        let records: Vec<NewRecord> = (from..from + chunk)
            .map(|i| {
                let jitter = ((i * 7919) % 300_000) as i64;
                NewRecord {
                    key: Some(Bytes::from(format!("k{}", (i * 31) % KEYS))),
                    value: Some(Bytes::from(format!(r#"{{"v":{}}}"#, i % 100))),
                    timestamp: START_MS + i as i64 * STEP_MS - jitter,
                    headers: vec![],
                }
            })
            .collect();
        partition
            .append(encode(&records).expect("encode"), Durability::Os)
            .expect("append");
        engine.tick().await.expect("tick");
        let state = rows(
            &run(
                &engine,
                "SELECT state_rows FROM eddy_catalog.dataflow_operators \
                 WHERE dataflow = 'hourly' AND operator = 'aggregate'",
            )
            .await,
        );
        let state: u64 = state[0].parse().expect("a count");
        most_state = most_state.max(state);
    }
    // Each chunk spans 20 hours; what stays open is the last hour or two.
    assert!(
        most_state <= 3 * KEYS,
        "the aggregate held {most_state} groups; open windows need at most {}",
        3 * KEYS
    );
    let late = rows(
        &run(
            &engine,
            "SELECT sum(late_rows) FROM eddy_catalog.dataflow_operators WHERE dataflow = 'hourly'",
        )
        .await,
    );
    assert_eq!(late, vec!["0".to_string()], "jitter is within the grace");
    // The closed windows against a batch recomputation of the stream.
    let got = rows(&run(&engine, "SELECT k, n, s, windowstart FROM hourly").await);
    let want = rows(
        &run(
            &engine,
            "SELECT k, count(*), sum(v), CAST(EXTRACT(EPOCH FROM window_start) * 1000 AS BIGINT) \
             FROM TUMBLE(ev, rowtime, INTERVAL '1 hour') \
             WHERE window_end + INTERVAL '10 minutes' <= (SELECT max(rowtime) FROM ev) \
             GROUP BY k, window_start",
        )
        .await,
    );
    assert!(
        want.len() > 400 * KEYS as usize / 2,
        "{} windows",
        want.len()
    );
    assert_eq!(got.len(), want.len(), "closed windows");
    assert_eq!(got, want, "closed windows differ from recomputation");
    drop(engine);
    log.close().expect("close");
}

/// Two streams joined WITHIN a window of their record times: the join
/// forgets rows the window has passed, so its state stays that of the
/// last minutes, while its result equals the batch join over both streams
/// (also across a restart restoring the join from a checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_join_state_stays_bounded() {
    const EVENTS: u64 = 40_000;
    // Two days: an order every 4.32 s, its shipment 0–90 s later (some
    // outside the 1-minute window), keys reused every 500 orders.
    const STEP_MS: i64 = 4_320;
    const START_MS: i64 = 1_704_067_200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), LogOptions::default()).expect("open log");
    let mut engine = Engine::open(Arc::clone(&log)).await.expect("engine");
    run(
        &engine,
        "CREATE STREAM orders (id VARCHAR KEY, item INT) WITH (KAFKA_TOPIC = 'orders', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1); \
         CREATE STREAM shipments (oid VARCHAR KEY, carrier INT) WITH (KAFKA_TOPIC = 'shipments', \
         VALUE_FORMAT = 'JSON', PARTITIONS = 1); \
         CREATE STREAM shipped AS SELECT o.id, o.item, s.carrier FROM orders o \
         JOIN shipments s WITHIN 1 MINUTE GRACE PERIOD 1 MINUTE ON o.id = s.oid",
    )
    .await;
    let mut most_state = 0u64;
    let chunk = 2_000;
    for from in (0..EVENTS).step_by(chunk as usize) {
        if from == EVENTS / 2 {
            engine.checkpoint().expect("checkpoint").expect("written");
            drop(engine);
            log.close().expect("close");
            log = Log::open(dir.path(), LogOptions::default()).expect("reopen log");
            engine = Engine::open(Arc::clone(&log)).await.expect("engine");
            assert!(engine.restored().contains(&"shipped".to_string()));
        }
        let orders = log.partition("orders", 0).expect("partition");
        let shipments = log.partition("shipments", 0).expect("partition");
        let mut o = Vec::new();
        let mut s = Vec::new();
        for i in from..from + chunk {
            let t = START_MS + i as i64 * STEP_MS;
            let key = Some(Bytes::from(format!("o{}", i % 500)));
            o.push(NewRecord {
                key: key.clone(),
                value: Some(Bytes::from(format!(r#"{{"item":{i}}}"#))),
                timestamp: t,
                headers: vec![],
            });
            s.push(NewRecord {
                key,
                value: Some(Bytes::from(format!(r#"{{"carrier":{}}}"#, i % 7))),
                timestamp: t + ((i * 7919) % 90_000) as i64,
                headers: vec![],
            });
        }
        orders
            .append(encode(&o).expect("encode"), Durability::Os)
            .expect("append");
        shipments
            .append(encode(&s).expect("encode"), Durability::Os)
            .expect("append");
        engine.tick().await.expect("tick");
        let state = rows(
            &run(
                &engine,
                "SELECT state_rows FROM eddy_catalog.dataflow_operators \
                 WHERE dataflow = 'shipped' AND operator LIKE '%join'",
            )
            .await,
        );
        let state: u64 = state[0].parse().expect("a count");
        most_state = most_state.max(state);
    }
    // A chunk spans 2.4 hours; the window and grace keep ~3 minutes.
    assert!(
        most_state <= 2 * chunk,
        "the join held {most_state} rows; the window needs far fewer"
    );
    let got = rows(&run(&engine, "SELECT count(*) FROM shipped").await);
    let want = rows(
        &run(
            &engine,
            "SELECT count(*) FROM orders o JOIN shipments s ON o.id = s.oid \
             AND s.rowtime BETWEEN o.rowtime - INTERVAL '1 minute' AND o.rowtime + INTERVAL '1 minute'",
        )
        .await,
    );
    assert!(want[0].parse::<u64>().expect("a count") > EVENTS / 2);
    assert_eq!(got, want, "the windowed join against the batch join");
    drop(engine);
    log.close().expect("close");
}
