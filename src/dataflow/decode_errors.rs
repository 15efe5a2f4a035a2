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
/// dataflow and every SELECT of the stream decode the same records). The
/// offsets counted are remembered per relation and partition within a
/// window of [`WINDOW`] offsets below the highest: readers go through a
/// partition in offset order (out of order only within one read, far
/// smaller than the window), so a record further below was counted by
/// the reader that got there first.
#[derive(Debug, Default)]
pub struct DecodeErrors {
    inner: Mutex<BTreeMap<String, (u64, String)>>,
    /// (relation, topic, partition) → the offsets counted in the window.
    counted: Mutex<HashMap<(String, String, i32), std::collections::BTreeSet<i64>>>,
    total: AtomicU64,
}

/// How far below the highest offset counted a partition's counted
/// offsets are remembered.
const WINDOW: i64 = 1 << 20;

impl DecodeErrors {
    pub fn record(&self, relation: &str, topic: &str, partition: i32, offset: i64, reason: &str) {
        if let Ok(mut counted) = self.counted.lock() {
            let seen = counted
                .entry((relation.to_string(), topic.to_string(), partition))
                .or_default();
            let high = seen.last().copied().unwrap_or(offset).max(offset);
            let below_window = seen.first().is_some() && offset <= high - WINDOW;
            if below_window || !seen.insert(offset) {
                return;
            }
            // Forget what fell out of the window.
            while seen.first().is_some_and(|&o| o <= high - WINDOW) {
                seen.pop_first();
            }
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
