//! Rows as bytes: arrow's row format (memcmp-comparable, hashable) is how
//! operators key their state. A [`Codec`] converts columns to row bytes and
//! back.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, RowParser, Rows, SortField};

use super::Result;

/// An owned row in arrow's row format.
pub type RowBytes = Box<[u8]>;

pub struct Codec {
    converter: RowConverter,
    parser: RowParser,
    types: Vec<DataType>,
}

impl Codec {
    pub fn new(types: &[DataType]) -> Result<Codec> {
        let converter =
            RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let parser = converter.parser();
        Ok(Codec {
            converter,
            parser,
            types: types.to_vec(),
        })
    }

    /// A codec whose byte order is the given sort order (ORDER BY keys).
    pub fn with_options(
        types: &[DataType],
        options: &[datafusion::arrow::compute::SortOptions],
    ) -> Result<Codec> {
        let converter = RowConverter::new(
            types
                .iter()
                .zip(options)
                .map(|(t, o)| SortField::new_with_options(t.clone(), *o))
                .collect(),
        )?;
        let parser = converter.parser();
        Ok(Codec {
            converter,
            parser,
            types: types.to_vec(),
        })
    }

    pub fn for_schema(schema: &SchemaRef) -> Result<Codec> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Codec::new(&types)
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    /// Row bytes of every row of `columns`. With no columns (a join side
    /// or key that contributes none, `count(*) FROM a, b`) every row is the
    /// empty row: arrow's converter would give no rows at all.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Encoded> {
        if self.types.is_empty() {
            return Ok(Encoded { rows: None });
        }
        Ok(Encoded {
            rows: Some(self.converter.convert_columns(columns)?),
        })
    }

    /// Columns holding `rows` in order.
    pub fn decode<'a, I>(&self, rows: I) -> Result<Vec<ArrayRef>>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let parsed = rows.into_iter().map(|b| self.parser.parse(b));
        Ok(self.converter.convert_rows(parsed)?)
    }

    /// A batch of `schema` holding `rows` in order.
    pub fn decode_batch<'a, I>(&self, schema: &SchemaRef, rows: I) -> Result<RecordBatch>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let rows: Vec<&[u8]> = rows.into_iter().collect();
        let n = rows.len();
        let columns = if self.types.is_empty() {
            vec![]
        } else {
            self.decode(rows)?
        };
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}

/// Rows encoded by [`Codec::encode`].
pub struct Encoded {
    /// None: no columns, every row empty.
    rows: Option<Rows>,
}

impl Encoded {
    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        match &self.rows {
            Some(r) => r.row(i).data(),
            None => &[],
        }
    }
}

/// Bytes per row of state kept in hash maps, for the state-size counters:
/// the row itself plus the map's bookkeeping.
pub fn state_bytes(row_len: usize) -> u64 {
    (row_len + 32) as u64
}

/// A multiset of rows: each row's count, and the state bytes they take.
/// The state of DISTINCT and of the copy numbering (`enumerate.rs`).
#[derive(Default)]
pub struct RowCounts {
    counts: ahash::AHashMap<RowBytes, i64>,
    bytes: u64,
}

impl RowCounts {
    /// Add `diff` to `row`'s count; its count before and after. A row
    /// whose count reaches zero is forgotten.
    pub fn add(&mut self, row: &[u8], diff: i64) -> (i64, i64) {
        let before = self.counts.get(row).copied().unwrap_or(0);
        let after = before + diff;
        if after == 0 {
            if self.counts.remove(row).is_some() {
                self.bytes = self.bytes.saturating_sub(state_bytes(row.len()));
            }
        } else if let Some(v) = self.counts.get_mut(row) {
            *v = after;
        } else {
            self.bytes += state_bytes(row.len());
            self.counts.insert(row.into(), after);
        }
        (before, after)
    }

    pub fn rows(&self) -> u64 {
        self.counts.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn save(&self, w: &mut super::checkpoint::Writer) {
        w.counts(
            self.counts.len(),
            self.counts.iter().map(|(k, n)| (k.as_ref(), *n)),
        );
    }

    pub fn restore(&mut self, r: &mut super::checkpoint::Reader<'_>) -> Result<()> {
        let rows = r.counts()?;
        self.bytes = rows.iter().map(|(k, _)| state_bytes(k.len())).sum();
        self.counts = rows.into_iter().collect();
        Ok(())
    }
}
