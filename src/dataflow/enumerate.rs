//! ROW_NUMBER() OVER (PARTITION BY every column), with no ORDER BY: the
//! copies of each row numbered 1‥n. The copies of a row are alike, so any
//! numbering is the numbering; `EXCEPT ALL` and `INTERSECT ALL` run as
//! distinct operations over these numbers (`engine/set_ops.rs`).
//!
//! State is each row's count. A change of a row's count from n to n′
//! inserts the numbers n+1‥n′ or retracts n′+1‥n: work proportional to the
//! change.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowCounts};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub struct Enumerate {
    /// The input's columns and the number, last.
    schema: SchemaRef,
    codec: Codec,
    counts: RowCounts,
    stats: Counts,
}

impl Enumerate {
    pub fn new(input: &SchemaRef, schema: SchemaRef) -> Result<Enumerate> {
        Ok(Enumerate {
            codec: Codec::for_schema(input)?,
            schema,
            counts: RowCounts::default(),
            stats: Counts::default(),
        })
    }
}

impl Operator for Enumerate {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.stats.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(Delta::empty(Arc::clone(&self.schema)));
        }
        let rows = self.codec.encode(input.batch.columns())?;
        let (mut take, mut numbers, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, d) in input.diffs.iter().enumerate() {
            let (before, after) = self.counts.add(rows.row(i), *d);
            // The numbers held are 1..=max(count, 0).
            let (lo, hi) = (before.max(0), after.max(0));
            let (range, diff) = if hi > lo {
                (lo + 1..=hi, 1)
            } else {
                (hi + 1..=lo, -1)
            };
            for n in range {
                take.push(i as u32);
                numbers.push(n as u64);
                diffs.push(diff);
            }
        }
        self.stats.rows_out += take.len() as u64;
        let rows = take_record_batch(&input.batch, &UInt32Array::from(take))?;
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from(numbers)));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(Delta::new(batch, diffs))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.stats.stats("enumerate");
        s.state_rows = self.counts.rows();
        s.state_bytes = self.counts.bytes();
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("enumerate");
        self.counts.save(w);
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("enumerate")?;
        self.counts.restore(r)
    }
}
