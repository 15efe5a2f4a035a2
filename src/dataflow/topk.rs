//! Top-k: `ORDER BY … LIMIT k [OFFSET s]` in a view, and per group
//! `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) <= k`.
//!
//! State per partition (one partition without PARTITION BY): the rows in
//! sort order (`sorted.rs`). The output of a partition is its window [s, s+k), each row with
//! its 1-based position when the operator ranks (ROW_NUMBER). A change
//! compares the windows of the partitions it touches before and after:
//! O(k + change · log n) per touched partition, never the whole state.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::checkpoint::{Reader, Writer};
use super::rows::RowBytes;
use super::sorted::{SortKeys, SortedPartitions};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub struct TopK {
    /// The input's schema.
    in_schema: SchemaRef,
    keys: SortKeys,
    skip: usize,
    fetch: usize,
    /// Output schema: the input's columns, then the rank when ranking.
    schema: SchemaRef,
    rank: bool,
    groups: SortedPartitions,
    counts: Counts,
}

impl TopK {
    /// ORDER BY … LIMIT/OFFSET over the whole input.
    pub fn new(
        in_schema: SchemaRef,
        order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
        skip: usize,
        fetch: usize,
    ) -> Result<TopK> {
        let schema = Arc::clone(&in_schema);
        Self::ranked(in_schema, vec![], order, skip, fetch, schema, false)
    }

    /// Per-partition top-k; with `rank`, `schema` has one more column than
    /// the input holding each row's position in its partition (from 1).
    pub fn ranked(
        in_schema: SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
        skip: usize,
        fetch: usize,
        schema: SchemaRef,
        rank: bool,
    ) -> Result<TopK> {
        Ok(TopK {
            keys: SortKeys::new(&in_schema, partition, order)?,
            in_schema,
            skip,
            fetch,
            schema,
            rank,
            groups: SortedPartitions::default(),
            counts: Counts::default(),
        })
    }

    /// A partition's output: (row, rank) → multiplicity (rank 0 when not
    /// ranking, so equal rows add up).
    fn window(&self, key: &[u8]) -> AHashMap<(RowBytes, u64), i64> {
        let mut out = AHashMap::new();
        let Some(sorted) = self.groups.get(key) else {
            return out;
        };
        let mut pos = 0usize;
        let end = self.skip.saturating_add(self.fetch);
        for ((_, row), n) in sorted {
            if pos >= end {
                break;
            }
            let n = (*n).max(0) as usize;
            let lo = pos.max(self.skip);
            let hi = (pos + n).min(end);
            if self.rank {
                for p in lo..hi {
                    out.insert((row.clone(), (p - self.skip + 1) as u64), 1);
                }
            } else if hi > lo {
                *out.entry((row.clone(), 0)).or_insert(0) += (hi - lo) as i64;
            }
            pos += n;
        }
        out
    }
}

impl Operator for TopK {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.counts.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let keyed = self.keys.keyed(&input.batch)?;

        // Windows of the touched partitions before the change.
        let touched: AHashSet<RowBytes> = (0..input.len()).map(|i| keyed.partition(i)).collect();
        let mut change: AHashMap<(RowBytes, u64), i64> = AHashMap::new();
        for p in &touched {
            for (k, c) in self.window(p) {
                *change.entry(k).or_insert(0) -= c;
            }
        }
        for (i, d) in input.diffs.iter().enumerate() {
            self.groups
                .add(&keyed.partition(i), keyed.key(i), keyed.row(i), *d);
        }
        for p in &touched {
            for (k, c) in self.window(p) {
                *change.entry(k).or_insert(0) += c;
            }
        }
        let change: Vec<((RowBytes, u64), i64)> =
            change.into_iter().filter(|(_, c)| *c != 0).collect();
        self.counts.rows_out += change.len() as u64;
        if change.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let in_schema = Arc::clone(&self.in_schema);
        let batch = self
            .keys
            .rows()
            .decode_batch(&in_schema, change.iter().map(|((r, _), _)| r.as_ref()))?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if self.rank {
            let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(
                change.iter().map(|((_, rank), _)| *rank),
            ));
            let want = self.schema.field(columns.len()).data_type();
            columns.push(if ranks.data_type() == want {
                ranks
            } else {
                cast(&ranks, want)?
            });
        }
        let batch = RecordBatch::try_new(self.schema(), columns)?;
        Ok(Delta::new(
            batch,
            change.into_iter().map(|(_, c)| c).collect(),
        ))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.groups.sized(self.counts.stats("topk")));
    }

    fn save(&self, w: &mut Writer) {
        self.groups.save(w, "topk");
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.groups.restore(r, "topk")
    }
}
