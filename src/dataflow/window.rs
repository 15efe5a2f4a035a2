//! Window functions in a view: `f(…) OVER (PARTITION BY p ORDER BY o
//! [frame])` for every window function DataFusion has (row_number, rank,
//! dense_rank, percent_rank, cume_dist, ntile, lag, lead, first_value,
//! last_value, nth_value, and aggregates over frames), each computed by
//! DataFusion's own window expression over a partition's rows, so a view's
//! values are the ones its query gives as a SELECT. (`ROW_NUMBER() … <= k`
//! is the top-k operator's, `topk.rs`, which does less work.)
//!
//! State: each partition's rows in ORDER BY order (`sorted.rs`, ties
//! broken by the row, so a function of ties such as row_number numbers
//! them the same way every time). A change recomputes the window values of
//! the partitions it touches, before and after, and emits the difference:
//! the work is proportional to the size of the partitions touched, never to
//! the whole view (Materialize does the same for window functions in
//! general). A window without PARTITION BY is one partition, recomputed
//! whole at each change: say PARTITION BY where the query allows it.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::WindowExpr;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes};
use super::sorted::{SortKeys, SortedPartitions};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

pub struct Window {
    in_schema: SchemaRef,
    /// The input's columns, then one per window expression.
    schema: SchemaRef,
    keys: SortKeys,
    out_codec: Codec,
    exprs: Vec<Arc<dyn WindowExpr>>,
    groups: SortedPartitions,
    counts: Counts,
}

impl Window {
    /// Window expressions `exprs` sharing one PARTITION BY and ORDER BY.
    pub fn new(
        in_schema: SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
        exprs: Vec<Arc<dyn WindowExpr>>,
        schema: SchemaRef,
    ) -> Result<Window> {
        Ok(Window {
            keys: SortKeys::new(&in_schema, partition, order)?,
            out_codec: Codec::for_schema(&schema)?,
            in_schema,
            schema,
            exprs,
            groups: SortedPartitions::default(),
            counts: Counts::default(),
        })
    }

    /// Add partition `p`'s output rows, each `sign` times, to `out`.
    fn output(&self, p: &[u8], sign: i64, out: &mut AHashMap<RowBytes, i64>) -> Result<()> {
        let Some(sorted) = self.groups.get(p) else {
            return Ok(());
        };
        let rows: Vec<&[u8]> = sorted
            .iter()
            .flat_map(|((_, row), n)| std::iter::repeat_n(row.as_ref(), (*n).max(0) as usize))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self.keys.rows().decode_batch(&self.in_schema, rows)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (e, field) in self
            .exprs
            .iter()
            .zip(self.schema.fields().iter().skip(batch.num_columns()))
        {
            let values = e.evaluate(&batch)?;
            columns.push(if values.data_type() == field.data_type() {
                values
            } else {
                cast(&values, field.data_type())?
            });
        }
        let encoded = self.out_codec.encode(&columns)?;
        for i in 0..batch.num_rows() {
            *out.entry(encoded.row(i).into()).or_insert(0) += sign;
        }
        Ok(())
    }
}

impl Operator for Window {
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
        let touched: AHashSet<RowBytes> = (0..input.len()).map(|i| keyed.partition(i)).collect();
        let mut change: AHashMap<RowBytes, i64> = AHashMap::new();
        for p in &touched {
            self.output(p, -1, &mut change)?;
        }
        for (i, d) in input.diffs.iter().enumerate() {
            self.groups
                .add(&keyed.partition(i), keyed.key(i), keyed.row(i), *d);
        }
        for p in &touched {
            self.output(p, 1, &mut change)?;
        }
        let change: Vec<(RowBytes, i64)> = change.into_iter().filter(|(_, c)| *c != 0).collect();
        self.counts.rows_out += change.len() as u64;
        if change.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let batch: RecordBatch = self
            .out_codec
            .decode_batch(&self.schema, change.iter().map(|(r, _)| r.as_ref()))?;
        Ok(Delta::new(
            batch,
            change.into_iter().map(|(_, c)| c).collect(),
        ))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.groups.sized(self.counts.stats("window")));
    }

    fn save(&self, w: &mut Writer) {
        self.groups.save(w, "window");
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.groups.restore(r, "window")
    }
}
