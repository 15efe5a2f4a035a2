//! Materialize's load generators, for trying eddy without a producer:
//! `CREATE SOURCE c FROM LOAD GENERATOR COUNTER [(TICK INTERVAL '1s',
//! UP TO n)]` is a stream with one column `counter bigint` over a topic
//! (one partition) into which a task appends `{"counter": n}`, n = 1, 2, …,
//! one record per tick, fsynced like an INSERT; with UP TO, it stops at n.
//! The topic is the generator's progress: after a restart it goes on from
//! the topic's end offset, so the values stay dense. DROP SOURCE stops it.
//! (AUCTION, MARKETING, TPCH and KEY VALUE are refused with 0A000.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogStore};

/// The options of `LOAD GENERATOR COUNTER`.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub tick: Duration,
    pub up_to: Option<i64>,
}

impl Counter {
    /// Materialize's defaults: a tick a second, no end.
    pub fn new() -> Counter {
        Counter {
            tick: Duration::from_secs(1),
            up_to: None,
        }
    }

    /// As stream options (`load_generator`, `tick_ms`, `up_to`): the
    /// parse hands them to CREATE SOURCE through its option map.
    pub fn to_options(&self, options: &mut std::collections::BTreeMap<String, String>) {
        options.insert("load_generator".into(), "counter".into());
        options.insert("tick_ms".into(), self.tick.as_millis().to_string());
        if let Some(n) = self.up_to {
            options.insert("up_to".into(), n.to_string());
        }
    }

    pub fn from_options(options: &std::collections::BTreeMap<String, String>) -> Option<Counter> {
        if options.get("load_generator").map(String::as_str) != Some("counter") {
            return None;
        }
        Some(Counter {
            tick: Duration::from_millis(options.get("tick_ms")?.parse().ok()?),
            up_to: options.get("up_to").and_then(|n| n.parse().ok()),
        })
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// Append the counter's records to partition 0 of `topic` until `up_to`
/// (forever without it), one per tick, from the topic's end.
pub async fn run(topic: String, counter: Counter, log: Arc<dyn LogStore>) {
    let mut ticks = tokio::time::interval(counter.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if log.is_closed() {
            return;
        }
        let next = match log.offsets(&topic, 0) {
            Ok((_, end)) => end + 1,
            // The topic went (DROP … DELETE TOPIC) or the log closed.
            Err(_) => return,
        };
        if counter.up_to.is_some_and(|n| next > n) {
            return;
        }
        let log = Arc::clone(&log);
        let topic = topic.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let record = NewRecord {
                key: None,
                value: Some(Bytes::from(format!("{{\"counter\":{next}}}"))),
                timestamp: chrono::Utc::now().timestamp_millis(),
                headers: vec![],
            };
            let bytes = batch::encode(std::slice::from_ref(&record)).map_err(|e| e.to_string())?;
            log.append(&topic, 0, bytes, Durability::Fsync)
                .map_err(|e| e.to_string())
        })
        .await;
        match appended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "load generator: append failed; stopping");
                return;
            }
            Err(_) => return,
        }
    }
}
