//! DISTINCT: the count of every row seen; a row is output while its count
//! is positive. Emits +1 when a count rises from zero, −1 when it falls to
//! zero; the output row is the input row itself (taken from the batch).

use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowCounts};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub struct Distinct {
    schema: SchemaRef,
    codec: Codec,
    counts: RowCounts,
    stats: Counts,
}

impl Distinct {
    pub fn new(schema: SchemaRef) -> Result<Distinct> {
        Ok(Distinct {
            codec: Codec::for_schema(&schema)?,
            schema,
            counts: RowCounts::default(),
            stats: Counts::default(),
        })
    }
}

impl Operator for Distinct {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.stats.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(input);
        }
        let rows = self.codec.encode(input.batch.columns())?;
        let mut take = Vec::new();
        let mut diffs = Vec::new();
        for (i, d) in input.diffs.iter().enumerate() {
            let (before, after) = self.counts.add(rows.row(i), *d);
            if before <= 0 && after > 0 {
                take.push(i as u32);
                diffs.push(1);
            } else if before > 0 && after <= 0 {
                take.push(i as u32);
                diffs.push(-1);
            }
        }
        self.stats.rows_out += take.len() as u64;
        let batch = take_record_batch(&input.batch, &UInt32Array::from(take))?;
        Ok(Delta::new(batch, diffs))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.stats.stats("distinct");
        s.state_rows = self.counts.rows();
        s.state_bytes = self.counts.bytes();
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("distinct");
        self.counts.save(w);
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("distinct")?;
        self.counts.restore(r)
    }
}

/// A leaf that emits a fixed batch once (VALUES, a FROM-less SELECT).
pub struct Constant {
    delta: Option<Delta>,
    schema: SchemaRef,
}

impl Constant {
    pub fn new(delta: Delta) -> Constant {
        Constant {
            schema: delta.schema(),
            delta: Some(delta),
        }
    }
}

impl Operator for Constant {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, _inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        Ok(self
            .delta
            .take()
            .unwrap_or_else(|| Delta::empty(Arc::clone(&self.schema))))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(Counts::default().stats("constant"));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("constant");
        w.bool(self.delta.is_none());
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("constant")?;
        if r.bool()? {
            self.delta = None;
        }
        Ok(())
    }
}
