//! Rows kept per partition in a sort order: the state of operators whose
//! output for a partition depends on its rows' order (`topk.rs`,
//! `window.rs`). A partition (one, empty-keyed, without PARTITION BY) is an
//! ordered multiset keyed by (sort key, row): ties in the sort key are
//! broken by the row's bytes, so the order, and every output computed from
//! it, is a function of the multiset alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, Encoded, RowBytes, state_bytes};
use super::{OperatorStats, Result};

/// How rows are placed: PARTITION BY and ORDER BY expressions over the
/// input, with the codecs of their values and of the row.
pub struct SortKeys {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    partition_codec: Option<Codec>,
    order: Vec<Arc<dyn PhysicalExpr>>,
    order_codec: Codec,
    row_codec: Codec,
}

/// A batch's rows as [`SortKeys`] place them.
pub struct Keyed {
    keys: Encoded,
    parts: Option<Encoded>,
    rows: Encoded,
}

impl Keyed {
    /// Row `i`'s partition (empty without PARTITION BY).
    pub fn partition(&self, i: usize) -> RowBytes {
        match &self.parts {
            Some(p) => p.row(i).into(),
            None => Box::new([]),
        }
    }

    /// Row `i`'s sort key, in the order's byte order.
    pub fn key(&self, i: usize) -> RowBytes {
        self.keys.row(i).into()
    }

    pub fn row(&self, i: usize) -> RowBytes {
        self.rows.row(i).into()
    }
}

impl SortKeys {
    pub fn new(
        in_schema: &SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    ) -> Result<SortKeys> {
        let types = |es: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            es.map(|e| e.data_type(in_schema))
                .collect::<datafusion::error::Result<Vec<_>>>()
        };
        let order_types = types(&mut order.iter().map(|(e, _)| e))?;
        let options: Vec<SortOptions> = order.iter().map(|(_, o)| *o).collect();
        let partition_types = types(&mut partition.iter())?;
        Ok(SortKeys {
            order_codec: Codec::with_options(&order_types, &options)?,
            row_codec: Codec::for_schema(in_schema)?,
            partition_codec: if partition.is_empty() {
                None
            } else {
                Some(Codec::new(&partition_types)?)
            },
            partition,
            order: order.into_iter().map(|(e, _)| e).collect(),
        })
    }

    /// The partition, sort key and bytes of every row of `batch`.
    pub fn keyed(&self, batch: &RecordBatch) -> Result<Keyed> {
        let n = batch.num_rows();
        let eval = |es: &[Arc<dyn PhysicalExpr>]| {
            es.iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()
        };
        Ok(Keyed {
            keys: self.order_codec.encode(&eval(&self.order)?)?,
            parts: match &self.partition_codec {
                Some(c) => Some(c.encode(&eval(&self.partition)?)?),
                None => None,
            },
            rows: self.row_codec.encode(batch.columns())?,
        })
    }

    /// The codec of whole input rows (to decode a partition's rows).
    pub fn rows(&self) -> &Codec {
        &self.row_codec
    }
}

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

    /// `stats` with the size of this state (distinct rows held, bytes).
    pub fn sized(&self, mut stats: OperatorStats) -> OperatorStats {
        stats.state_rows = self.rows;
        stats.state_bytes = self.bytes;
        stats
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
