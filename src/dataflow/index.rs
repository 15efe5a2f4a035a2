//! The state of a table or a materialized view: the multiset of its rows
//! (row bytes → count). Applying a delta costs O(delta); reading builds an
//! Arrow snapshot once per change and caches it until the next change.
//!
//! A snapshot lists rows ordered by their row encoding (which sorts as the
//! columns do, in order, nulls first), so a `SELECT` or `COPY` without
//! `ORDER BY` lists rows in the same order every time; the state itself is
//! a hash map, so applying a change does not pay for ordering.

use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes, state_bytes};
use super::{Delta, Result};

pub struct Index {
    schema: SchemaRef,
    codec: Codec,
    rows: AHashMap<RowBytes, i64>,
    /// Rows counting multiplicity.
    len: i64,
    bytes: u64,
    /// Retractions of rows that were not there (a bug upstream, or a
    /// changelog written by hand): counted, never applied below zero.
    pub negative: u64,
    snapshot: Option<RecordBatch>,
}

impl Index {
    pub fn new(schema: SchemaRef) -> Result<Index> {
        Ok(Index {
            codec: Codec::for_schema(&schema)?,
            schema,
            rows: AHashMap::new(),
            len: 0,
            bytes: 0,
            negative: 0,
            snapshot: None,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows, counting duplicates.
    pub fn len(&self) -> u64 {
        self.len.max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len <= 0
    }

    pub fn distinct_rows(&self) -> u64 {
        self.rows.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Apply a change.
    pub fn apply(&mut self, delta: &Delta) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        self.snapshot = None;
        let rows = self.codec.encode(delta.batch.columns())?;
        // Net change per row first, so a retraction that precedes its
        // insertion in the same delta is not mistaken for a missing row.
        let mut net: AHashMap<&[u8], i64> = AHashMap::with_capacity(delta.len());
        let mut order: Vec<&[u8]> = Vec::with_capacity(delta.len());
        for (i, d) in delta.diffs.iter().enumerate() {
            let key = rows.row(i);
            let e = net.entry(key).or_insert_with(|| {
                order.push(key);
                0
            });
            *e += d;
        }
        for key in order {
            let d = &net[key];
            let before = self.rows.get(key).copied().unwrap_or(0);
            let mut after = before + d;
            if after < 0 {
                self.negative += 1;
                after = 0;
            }
            self.len += after - before;
            if after == 0 {
                if self.rows.remove(key).is_some() {
                    self.bytes = self.bytes.saturating_sub(state_bytes(key.len()));
                }
            } else if before == 0 {
                self.bytes += state_bytes(key.len());
                self.rows.insert(key.into(), after);
            } else if let Some(v) = self.rows.get_mut(key) {
                *v = after;
            }
        }
        Ok(())
    }

    /// Every row (duplicates repeated), as one batch.
    pub fn snapshot(&mut self) -> Result<RecordBatch> {
        if let Some(s) = &self.snapshot {
            return Ok(s.clone());
        }
        let mut keys: Vec<(&RowBytes, &i64)> = self.rows.iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut rows: Vec<&[u8]> = Vec::with_capacity(self.len() as usize);
        for (k, n) in keys {
            for _ in 0..*n {
                rows.push(k.as_ref());
            }
        }
        let batch = if rows.is_empty() {
            RecordBatch::new_empty(Arc::clone(&self.schema))
        } else {
            self.codec.decode_batch(&self.schema, rows)?
        };
        self.snapshot = Some(batch.clone());
        Ok(batch)
    }

    /// Every row as it was before `undo` (changes applied since) — an
    /// earlier epoch's contents, for a query pinned to it. Not cached.
    pub fn snapshot_before(&mut self, undo: &[Arc<Delta>]) -> Result<RecordBatch> {
        if undo.iter().all(|d| d.is_empty()) {
            return self.snapshot();
        }
        let mut adjust: AHashMap<Vec<u8>, i64> = AHashMap::new();
        for d in undo {
            let rows = self.codec.encode(d.batch.columns())?;
            for (i, diff) in d.diffs.iter().enumerate() {
                *adjust.entry(rows.row(i).to_vec()).or_insert(0) -= diff;
            }
        }
        let mut counts: Vec<(&[u8], i64)> = self
            .rows
            .iter()
            .map(|(k, n)| (k.as_ref(), n + adjust.get(k.as_ref()).copied().unwrap_or(0)))
            .collect();
        counts.extend(
            adjust
                .iter()
                .filter(|(k, _)| !self.rows.contains_key(k.as_slice()))
                .map(|(k, n)| (k.as_slice(), *n)),
        );
        counts.retain(|(_, n)| *n > 0);
        counts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let rows: Vec<&[u8]> = counts
            .iter()
            .flat_map(|(k, n)| std::iter::repeat_n(*k, *n as usize))
            .collect();
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        self.codec.decode_batch(&self.schema, rows)
    }

    /// Write the rows (checkpoints).
    pub fn save(&self, w: &mut Writer) {
        w.tag("index");
        w.counts(
            self.rows.len(),
            self.rows.iter().map(|(k, n)| (k.as_ref(), *n)),
        );
        w.u64(self.negative);
    }

    /// Replace the rows with what `save` wrote.
    pub fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("index")?;
        let rows = r.counts()?;
        if rows.iter().any(|(_, n)| *n <= 0) {
            return Err(super::DataflowError::Checkpoint(
                "an index row with no multiplicity".into(),
            ));
        }
        self.len = rows.iter().map(|(_, n)| n).sum();
        self.bytes = rows.iter().map(|(k, _)| state_bytes(k.len())).sum();
        self.rows = rows.into_iter().collect();
        self.negative = r.u64()?;
        self.snapshot = None;
        Ok(())
    }

    /// The contents as a delta of insertions (backfill of a new reader).
    pub fn as_delta(&mut self) -> Result<Delta> {
        Ok(Delta::inserts(self.snapshot()?))
    }
}
