//! ORDER BY … LIMIT k [OFFSET s] in a view: the rows in sort order (an
//! ordered multiset keyed by the sort key, ties broken by the row), and the
//! output is the window [s, s+k). Each change compares the window before and
//! after: O(k + change · log n).

use std::collections::BTreeMap;
use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::rows::{Codec, RowBytes, state_bytes};
use super::{Counts, Delta, Node, OperatorStats, Result, StepContext};

pub struct TopK {
    input: Box<dyn Node>,
    order: Vec<Arc<dyn PhysicalExpr>>,
    order_codec: Codec,
    row_codec: Codec,
    skip: usize,
    fetch: usize,
    rows: BTreeMap<(RowBytes, RowBytes), i64>,
    bytes: u64,
    counts: Counts,
}

impl TopK {
    pub fn new(
        input: Box<dyn Node>,
        order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
        skip: usize,
        fetch: usize,
    ) -> Result<TopK> {
        let schema = input.schema();
        let types = order
            .iter()
            .map(|(e, _)| e.data_type(&schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options: Vec<SortOptions> = order.iter().map(|(_, o)| *o).collect();
        Ok(TopK {
            order_codec: Codec::with_options(&types, &options)?,
            row_codec: Codec::for_schema(&schema)?,
            order: order.into_iter().map(|(e, _)| e).collect(),
            input,
            skip,
            fetch,
            rows: BTreeMap::new(),
            bytes: 0,
            counts: Counts::default(),
        })
    }

    /// The output window as row → multiplicity.
    fn window(&self) -> AHashMap<RowBytes, i64> {
        let mut out = AHashMap::new();
        let mut pos = 0usize;
        let end = self.skip.saturating_add(self.fetch);
        for ((_, row), n) in &self.rows {
            if pos >= end {
                break;
            }
            let n = (*n).max(0) as usize;
            let lo = pos.max(self.skip);
            let hi = (pos + n).min(end);
            if hi > lo {
                *out.entry(row.clone()).or_insert(0) += (hi - lo) as i64;
            }
            pos += n;
        }
        out
    }
}

impl Node for TopK {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = self.input.step(cx)?;
        self.counts.rows_in += input.len() as u64;
        if input.is_empty() {
            return Ok(input);
        }
        let before = self.window();
        let n = input.len();
        let keys = self
            .order
            .iter()
            .map(|e| e.evaluate(&input.batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let keys = self.order_codec.encode(&keys)?;
        let rows = self.row_codec.encode(input.batch.columns())?;
        for (i, d) in input.diffs.iter().enumerate() {
            let k = (
                RowBytes::from(keys.row(i).data()),
                RowBytes::from(rows.row(i).data()),
            );
            let size = state_bytes(k.0.len() + k.1.len());
            let e = self.rows.entry(k).or_insert(0);
            if *e == 0 {
                self.bytes += size;
            }
            *e += d;
            if *e == 0 {
                self.bytes = self.bytes.saturating_sub(size);
                let k = (
                    RowBytes::from(keys.row(i).data()),
                    RowBytes::from(rows.row(i).data()),
                );
                self.rows.remove(&k);
            }
        }
        let mut change = self.window();
        for (row, n) in before {
            *change.entry(row).or_insert(0) -= n;
        }
        let change: Vec<(RowBytes, i64)> = change.into_iter().filter(|(_, n)| *n != 0).collect();
        self.counts.rows_out += change.len() as u64;
        let schema = self.schema();
        let batch = self
            .row_codec
            .decode_batch(&schema, change.iter().map(|(r, _)| r.as_ref()))?;
        Ok(Delta::new(
            batch,
            change.into_iter().map(|(_, n)| n).collect(),
        ))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.counts.stats("topk");
        s.state_rows = self.rows.len() as u64;
        s.state_bytes = self.bytes;
        out.push(s);
        self.input.stats(out);
    }

    fn progress(&self, out: &mut Vec<(String, i64, i64)>) {
        self.input.progress(out)
    }
}
