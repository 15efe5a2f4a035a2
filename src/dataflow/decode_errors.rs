//! Records that do not decode: counted per relation with the last reason,
//! logged, and skipped (the `eddy_catalog.decode_errors` system table
//! reads this). Shared by the dataflow sources and the engine's scans of
//! streams.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

/// Counts of records that failed to decode, per relation, with the last
/// reason (the `eddy_catalog.decode_errors` system table reads this).
///
/// A record is counted once however many readers meet it (a view's
/// dataflow and every SELECT of the stream decode the same records): each
/// reader reads a partition in offset order, so a record at or below the
/// highest offset already counted for its relation and partition was
/// counted by the reader that got there first.
#[derive(Debug, Default)]
pub struct DecodeErrors {
    inner: Mutex<BTreeMap<String, (u64, String)>>,
    /// (relation, topic, partition) → the highest offset counted.
    counted: Mutex<HashMap<(String, String, i32), i64>>,
    total: AtomicU64,
}

impl DecodeErrors {
    pub fn record(&self, relation: &str, topic: &str, partition: i32, offset: i64, reason: &str) {
        if let Ok(mut counted) = self.counted.lock() {
            let high = counted
                .entry((relation.to_string(), topic.to_string(), partition))
                .or_insert(-1);
            if offset <= *high {
                return;
            }
            *high = offset;
        }
        warn!(
            relation,
            topic, partition, offset, reason, "record does not decode; skipped"
        );
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.inner.lock() {
            let e = m.entry(relation.to_string()).or_insert((0, String::new()));
            e.0 += 1;
            e.1 = format!("{topic}/{partition}@{offset}: {reason}");
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u64, String)> {
        self.inner
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, (n, r))| (k.clone(), *n, r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
