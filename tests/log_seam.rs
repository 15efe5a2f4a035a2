//! The engine reads and writes its log only through the `LogStore` trait,
//! the seam a second log (an external Kafka cluster) plugs into. Run over a
//! store that wraps eddy's log and counts what passes through it, streams,
//! upsert tables, materialized views, a sink, DELETE and a checkpoint
//! restore all work and give the same rows as a from-scratch query; and
//! the engine's appends and reads all went through the trait.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use eddy::engine::{Engine, EngineOptions, Output, parse};
use eddy::log::{
    AppendInfo, CommittedOffset, Durability, Log, LogOptions, LogStore, ReadResult, Result,
    TopicInfo,
};

/// eddy's log behind the trait, counting appends and reads.
struct Watched {
    inner: Arc<Log>,
    appends: AtomicU64,
    reads: AtomicU64,
}

impl LogStore for Watched {
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        self.inner.create_topic(name, partitions, config)
    }
    fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.delete_topic(name)
    }
    fn topics(&self) -> Vec<TopicInfo> {
        self.inner.topics()
    }
    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        self.inner.topic_info(name)
    }
    fn alter_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        self.inner.alter_topic_config(name, changes)
    }
    fn create_partitions(&self, name: &str, count: i32) -> Result<()> {
        self.inner.create_partitions(name, count)
    }
    fn append(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<AppendInfo> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append(topic, partition, batches, durability)
    }
    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(topic, partition, offset, max_bytes)
    }
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.inner.offsets(topic, partition)
    }
    fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.inner.offset_for_timestamp(topic, partition, timestamp)
    }
    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        self.inner.commit_offsets(group, offsets)
    }
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.inner.committed_offset(group, topic, partition)
    }
    fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.inner.group_offsets(group)
    }
    fn groups(&self) -> Vec<String> {
        self.inner.groups()
    }
    fn sync_to(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        self.inner.sync_to(topic, partition, offset)
    }
    fn is_closed(&self) -> bool {
        LogStore::is_closed(&*self.inner)
    }
    // `disk_usage` is left to the trait's default: a store without local
    // segments.
}

async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in parse(sql).unwrap() {
        let df = match engine.execute(stmt).await.unwrap() {
            Output::PassThrough(text) => engine.session().sql(&text).await.unwrap(),
            Output::Rows { df, .. } => df,
            _ => continue,
        };
        out.extend(common::lines(&df.collect().await.unwrap()));
    }
    out
}

async fn open(store: &Arc<Watched>, dir: PathBuf) -> Arc<Engine> {
    let options = EngineOptions {
        checkpoint_interval: Some(std::time::Duration::from_secs(3600)),
        ..EngineOptions::default()
    };
    Engine::open_on(Arc::clone(store) as Arc<dyn LogStore>, dir, options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_on_any_log_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let store = Arc::new(Watched {
        inner: Arc::clone(&log),
        appends: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    });
    let state = dir.path().join("engine-state");
    std::fs::create_dir_all(&state).unwrap();
    let engine = open(&store, state.clone()).await;
    rows(
        &engine,
        "CREATE STREAM ev (k int, v int) WITH (partitions = 3);
         CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k;
         CREATE MATERIALIZED VIEW named AS SELECT t.name, p.n FROM per_k p JOIN t ON t.id = p.k;
         CREATE SINK out FROM per_k INTO TOPIC 'per_k_out';
         INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    )
    .await;
    let mut values = Vec::new();
    for i in 0..300 {
        values.push(format!("({}, {i})", i % 4));
    }
    rows(
        &engine,
        &format!("INSERT INTO ev VALUES {};", values.join(", ")),
    )
    .await;
    rows(
        &engine,
        "DELETE FROM t WHERE id = 2; UPDATE t SET name = 'uno' WHERE id = 1;",
    )
    .await;
    engine.tick().await.unwrap();

    let view = |e: Arc<Engine>| async move {
        let mut v = rows(&e, "SELECT k, n, s FROM per_k").await;
        v.sort();
        let mut j = rows(&e, "SELECT name, n FROM named").await;
        j.sort();
        (v, j)
    };
    let recomputed = {
        let mut v = rows(&engine, "SELECT k, count(*), sum(v) FROM ev GROUP BY k").await;
        v.sort();
        let mut j = rows(
            &engine,
            "SELECT t.name, count(*) FROM ev JOIN t ON t.id = ev.k GROUP BY t.name",
        )
        .await;
        j.sort();
        (v, j)
    };
    assert_eq!(view(Arc::clone(&engine)).await, recomputed);
    assert_eq!(recomputed.0.len(), 4);
    assert_eq!(recomputed.1, vec!["three 75", "uno 75"]);

    // A checkpoint in the engine's own directory, restored by the next
    // engine over the same store.
    assert!(engine.checkpoint().unwrap().is_some());
    assert!(state.join("checkpoints").join("dataflows.ckpt").exists());
    assert!(!dir.path().join("checkpoints").exists());
    drop(engine);
    let engine = open(&store, state.clone()).await;
    let mut restored = engine.restored();
    restored.sort();
    assert!(restored.contains(&"per_k".to_string()), "{restored:?}");
    assert_eq!(view(Arc::clone(&engine)).await, recomputed);

    // The sink's topic holds the view's rows (Debezium envelopes).
    assert!(LogStore::topic_info(&*log, "per_k_out").is_ok());
    // Partition sizes: this store keeps no local segments, and says so.
    let sizes = rows(
        &engine,
        "SELECT size_bytes IS NULL FROM eddy_catalog.partitions WHERE topic = 'ev'",
    )
    .await;
    assert_eq!(sizes, vec!["true"; 3]);

    assert!(store.appends.load(Ordering::Relaxed) > 0);
    assert!(store.reads.load(Ordering::Relaxed) > 0);
    drop(engine);
    log.close().unwrap();
}
