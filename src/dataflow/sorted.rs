//! Rows kept per partition in a sort order: the state of operators whose
//! output for a partition depends on its rows' order (`topk.rs`,
//! `window.rs`). A partition (one, empty-keyed, without PARTITION BY) is an
//! ordered multiset keyed by (sort key, row): ties in the sort key are
//! broken by the row's bytes, so the order, and every output computed from
//! it, is a function of the multiset alone.

use std::collections::BTreeMap;

use ahash::AHashMap;

use super::Result;
use super::checkpoint::{Reader, Writer};
use super::rows::{RowBytes, state_bytes};

/// One partition: (sort key, row) → multiplicity.
pub type Sorted = BTreeMap<(RowBytes, RowBytes), i64>;

#[derive(Default)]
pub struct SortedPartitions {
    groups: AHashMap<RowBytes, Sorted>,
    rows: u64,
    bytes: u64,
}

impl SortedPartitions {
    pub fn get(&self, partition: &[u8]) -> Option<&Sorted> {
        self.groups.get(partition)
    }

    /// Add `diff` copies of `row` (sort key `key`) to `partition`.
    pub fn add(&mut self, partition: &RowBytes, key: RowBytes, row: RowBytes, diff: i64) {
        let size = state_bytes(partition.len() + key.len() + row.len());
        let sorted = self.groups.entry(partition.clone()).or_default();
        let k = (key, row);
        let e = sorted.entry(k.clone()).or_insert(0);
        if *e == 0 {
            self.bytes += size;
            self.rows += 1;
        }
        *e += diff;
        if *e == 0 {
            self.bytes = self.bytes.saturating_sub(size);
            self.rows = self.rows.saturating_sub(1);
            sorted.remove(&k);
            if sorted.is_empty() {
                self.groups.remove(partition);
            }
        }
    }

    /// Distinct rows held (the state-size counters).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn save(&self, w: &mut Writer, tag: &str) {
        w.tag(tag);
        w.u64(self.groups.len() as u64);
        for (p, sorted) in &self.groups {
            w.bytes(p);
            w.u64(sorted.len() as u64);
            for ((k, row), n) in sorted {
                w.bytes(k);
                w.bytes(row);
                w.i64(*n);
            }
        }
    }

    pub fn restore(&mut self, r: &mut Reader<'_>, tag: &str) -> Result<()> {
        r.tag(tag)?;
        *self = SortedPartitions::default();
        for _ in 0..r.len(16)? {
            let p: RowBytes = r.bytes()?.into();
            let mut sorted = Sorted::new();
            for _ in 0..r.len(24)? {
                let k: RowBytes = r.bytes()?.into();
                let row: RowBytes = r.bytes()?.into();
                self.rows += 1;
                self.bytes += state_bytes(p.len() + k.len() + row.len());
                sorted.insert((k, row), r.i64()?);
            }
            self.groups.insert(p, sorted);
        }
        Ok(())
    }
}
