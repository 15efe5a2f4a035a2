//! Epochs: one query reads every table and materialized view as of one
//! epoch, the last published before the query started, even when ticks
//! land between its scans (a view is scanned when the query is planned,
//! one relation at a time). And a write acknowledged before a query starts
//! is in what it reads.
//!
//! The engine runs in-process over a real log; the race is made
//! deterministic by holding a query's planning state (which carries its
//! start time) across writes.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::prelude::DataFrame;
use eddy::engine::{Engine, Output, parse};
use eddy::log::{Log, LogOptions};

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

/// Run `sql` with a given query state (and so its start time).
async fn query_as(state: &SessionState, sql: &str) -> Vec<String> {
    let plan = state.create_logical_plan(sql).await.unwrap();
    let batches: Vec<RecordBatch> = DataFrame::new(state.clone(), plan).collect().await.unwrap();
    common::lines(&batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_all_views_at_one_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let engine = Engine::open(Arc::clone(&log)).await.unwrap();
    run(
        &engine,
        "CREATE TABLE t (k int);
         CREATE MATERIALIZED VIEW a AS SELECT count(*) AS n FROM t;
         CREATE MATERIALIZED VIEW b AS SELECT count(*) AS n, sum(k) AS s FROM t;
         INSERT INTO t VALUES (1), (2);",
    )
    .await;

    // A query starts; it scans view a.
    let started = engine.session().state();
    assert_eq!(query_as(&started, "SELECT n FROM a").await, vec!["2"]);
    // Writes land and tick before the same query scans b and t.
    run(&engine, "INSERT INTO t VALUES (3), (4), (5)").await;
    run(&engine, "DELETE FROM t WHERE k = 1").await;
    // It still reads the epoch it started at, in every relation.
    assert_eq!(query_as(&started, "SELECT n, s FROM b").await, vec!["2 3"]);
    assert_eq!(
        query_as(&started, "SELECT a.n, b.n, b.s FROM a, b").await,
        vec!["2 2 3"]
    );
    assert_eq!(
        query_as(&started, "SELECT count(*), sum(k) FROM t").await,
        vec!["2 3"]
    );
    // A query that starts after the writes were acknowledged sees them.
    let later = engine.session().state();
    assert_eq!(
        query_as(&later, "SELECT a.n, b.n, b.s FROM a, b").await,
        vec!["4 4 14"]
    );
    // Replacing a view does not let its predecessor's changes leak in.
    run(
        &engine,
        "CREATE OR REPLACE MATERIALIZED VIEW a AS SELECT max(k) AS n FROM t",
    )
    .await;
    let after_replace = engine.session().state();
    run(&engine, "INSERT INTO t VALUES (9)").await;
    assert_eq!(query_as(&after_replace, "SELECT n FROM a").await, vec!["5"]);
    assert_eq!(
        query_as(&engine.session().state(), "SELECT n FROM a").await,
        vec!["9"]
    );
}
