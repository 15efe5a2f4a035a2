//! Filter and project: DataFusion physical expressions evaluated on each
//! change batch; diffs pass through (a filter keeps the diffs of the rows it
//! keeps). Stateless.
//!
//! An expression that fails on a batch (division by zero, a bad cast) is
//! re-evaluated row by row: each row that fails becomes an error of the
//! view (with the row's diff, so retracting the row clears it), the rest go
//! on, so one bad row never stops a view.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::checkpoint::{Reader, Writer};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub enum MapKind {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>),
}

pub struct Map {
    kind: MapKind,
    schema: SchemaRef,
    counts: Counts,
}

impl Map {
    /// Rows of `schema` (its input's) that `predicate` is true for.
    pub fn filter(schema: SchemaRef, predicate: Arc<dyn PhysicalExpr>) -> Map {
        Map {
            kind: MapKind::Filter(predicate),
            schema,
            counts: Counts::default(),
        }
    }

    pub fn project(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Map {
        Map {
            kind: MapKind::Project(exprs),
            schema,
            counts: Counts::default(),
        }
    }

    fn apply(&self, batch: &RecordBatch, diffs: &[i64]) -> Result<Delta> {
        match &self.kind {
            MapKind::Filter(p) => {
                let mask = p.evaluate(batch)?.into_array(batch.num_rows())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| super::DataflowError::Other("filter is not boolean".into()))?;
                let out = filter_record_batch(batch, mask)?;
                let kept = diffs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
                    .map(|(_, d)| *d)
                    .collect();
                Ok(Delta::new(super::with_schema(&out, &self.schema)?, kept))
            }
            MapKind::Project(exprs) => {
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
                let out = RecordBatch::try_new_with_options(
                    Arc::clone(&self.schema),
                    columns
                        .into_iter()
                        .zip(self.schema.fields())
                        .map(|(c, f)| {
                            if c.data_type() == f.data_type() {
                                Ok(c)
                            } else {
                                datafusion::arrow::compute::cast(&c, f.data_type())
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?;
                Ok(Delta::new(out, diffs.to_vec()))
            }
        }
    }
}

impl Operator for Map {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.counts.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let out = match self.apply(&input.batch, &input.diffs) {
            Ok(d) => d,
            Err(_) => {
                // Isolate the rows that fail: each is an error of the view.
                let before = cx.errors.len();
                let good = super::without_failing(input, &mut cx.errors, |row| {
                    self.apply(row, &[1]).map(|_| ())
                })?;
                self.counts.errors += (cx.errors.len() - before) as u64;
                self.apply(&good.batch, &good.diffs)?
            }
        };
        self.counts.rows_out += out.len() as u64;
        Ok(out)
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let name = match self.kind {
            MapKind::Filter(_) => "filter",
            MapKind::Project(_) => "project",
        };
        out.push(self.counts.stats(name));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("map");
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("map")?;
        Ok(())
    }
}
