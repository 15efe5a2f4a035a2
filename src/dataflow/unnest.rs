//! UNNEST of one list column: each input row becomes one row per element
//! of its list, every one with the input row's diff; a NULL or empty list
//! gives no row (PostgreSQL's `unnest`, DataFusion's SQL with
//! `preserve_nulls = false`). The other columns are repeated. Stateless:
//! a retraction of the row retracts each of its elements' rows, so the
//! work per change is the change's rows times their lists' lengths.
//!
//! HOP windows are this operator over `hop_starts(ts, slide, size)`
//! (`engine/windows.rs`): one pass over the stream puts every row into each
//! window holding it, where a UNION ALL of shifted copies read and decoded
//! the stream once per window.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::checkpoint::{Reader, Writer};
use super::{Counts, DataflowError, Delta, Operator, OperatorStats, Result, StepContext};

pub struct Unnest {
    /// The input column holding the lists.
    list: usize,
    /// For each output column, the input column it comes from.
    deps: Vec<usize>,
    /// The output column holding the elements.
    elements: usize,
    schema: SchemaRef,
    counts: Counts,
}

impl Unnest {
    pub fn new(
        list: usize,
        deps: Vec<usize>,
        elements: usize,
        schema: SchemaRef,
    ) -> Result<Unnest> {
        if deps.len() != schema.fields().len() || deps.get(elements) != Some(&list) {
            return Err(DataflowError::Other(
                "unnest: output columns do not match their inputs".into(),
            ));
        }
        Ok(Unnest {
            list,
            deps,
            elements,
            schema,
            counts: Counts::default(),
        })
    }

    fn apply(&self, batch: &RecordBatch, diffs: &[i64]) -> Result<Delta> {
        let lists = batch.column(self.list);
        // Each element's (row, position in the values array).
        let (values, ranges): (ArrayRef, Vec<(usize, usize)>) = match lists.data_type() {
            DataType::List(_) => {
                let l = lists.as_list::<i32>();
                let o = l.value_offsets();
                let r = (0..l.len())
                    .map(|i| (o[i] as usize, o[i + 1] as usize))
                    .collect();
                (Arc::clone(l.values()), r)
            }
            DataType::LargeList(_) => {
                let l = lists.as_list::<i64>();
                let o = l.value_offsets();
                let r = (0..l.len())
                    .map(|i| (o[i] as usize, o[i + 1] as usize))
                    .collect();
                (Arc::clone(l.values()), r)
            }
            DataType::FixedSizeList(_, n) => {
                let l = lists.as_fixed_size_list();
                let n = *n as usize;
                let r = (0..l.len()).map(|i| (i * n, (i + 1) * n)).collect();
                (Arc::clone(l.values()), r)
            }
            other => {
                return Err(DataflowError::Other(format!(
                    "unnest of a {other} column (a list is needed)"
                )));
            }
        };
        let mut rows = Vec::new();
        let mut elements = Vec::new();
        let mut out_diffs = Vec::new();
        for (row, (start, end)) in ranges.into_iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            for e in start..end {
                rows.push(row as u32);
                elements.push(e as u32);
                out_diffs.push(diffs[row]);
            }
        }
        let rows = UInt32Array::from(rows);
        let elements = UInt32Array::from(elements);
        let columns = self
            .deps
            .iter()
            .zip(self.schema.fields())
            .enumerate()
            .map(|(j, (dep, field))| {
                let c = if j == self.elements {
                    take(&values, &elements, None)?
                } else {
                    take(batch.column(*dep), &rows, None)?
                };
                if c.data_type() == field.data_type() {
                    Ok(c)
                } else {
                    cast(&c, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let out = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(out_diffs.len())),
        )?;
        Ok(Delta::new(out, out_diffs))
    }
}

impl Operator for Unnest {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.counts.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let out = self.apply(&input.batch, &input.diffs)?;
        self.counts.rows_out += out.len() as u64;
        Ok(out)
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.counts.stats("unnest"));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("unnest");
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("unnest")?;
        Ok(())
    }
}
