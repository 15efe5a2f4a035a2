//! The state of a table or a materialized view, arranged: the multiset of
//! its rows (row bytes → count) in row order, plus secondary arrangements
//! by key columns (a view's GROUP BY key, a table's PRIMARY KEY, `CREATE
//! INDEX`). Applying a delta costs O(delta · log n).
//!
//! The maps are persistent B-trees (`imbl`): a [`Snapshot`] is an O(1)
//! clone that shares every node with the live index until the next tick
//! changes it (then only the changed paths are copied). The runtime
//! publishes one snapshot per relation per epoch, so a reader never waits
//! for a tick or a checkpoint, and a reader holding an old epoch never sees
//! a later change.
//!
//! Row bytes are arrow's row format, which sorts as the columns do, in
//! order, nulls first, and in which each column's encoding is
//! self-delimiting: the encoding of the first k columns of a row is a byte
//! prefix of the row's. So an equality on leading columns is a prefix range
//! of the map, and a range on the next column a range within it. A read
//! without predicates lists rows in that order every time.
//!
//! (About 840 lines, 250 of them tests: one type, its snapshots and the key
//! encodings its lookups rely on.)

use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use ahash::AHashMap;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use imbl::OrdMap;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, state_bytes};
use super::{DataflowError, Delta, Result};

/// A row in arrow's row format, shared between the index and the
/// snapshots that still hold it (cloning a B-tree node clones its keys).
pub type Row = Arc<[u8]>;

/// A secondary arrangement: (key bytes ++ row bytes) → length of the key
/// bytes, for rows present in the primary map.
#[derive(Clone)]
struct Keyed {
    columns: Vec<usize>,
    codec: Arc<Codec>,
    entries: OrdMap<Row, u32>,
}

pub struct Index {
    schema: SchemaRef,
    codec: Arc<Codec>,
    rows: OrdMap<Row, i64>,
    keys: Vec<Keyed>,
    /// The arrangements the relation itself needs (its key) and those
    /// named indexes asked for (`CREATE INDEX`, once per index): an
    /// arrangement goes when neither holds it.
    own: Vec<Vec<usize>>,
    named: Vec<Vec<usize>>,
    /// Rows counting multiplicity.
    len: i64,
    bytes: u64,
    /// Retractions of rows that were not there (a bug upstream, or a
    /// changelog written by hand): counted, never applied below zero.
    pub negative: u64,
    /// The snapshot of the current contents, until the next change.
    snapshot: Option<Arc<Snapshot>>,
}

impl Index {
    pub fn new(schema: SchemaRef) -> Result<Index> {
        Ok(Index {
            codec: Arc::new(Codec::for_schema(&schema)?),
            schema,
            rows: OrdMap::new(),
            keys: Vec::new(),
            own: Vec::new(),
            named: Vec::new(),
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

    /// The column lists the index is arranged by (besides all columns in
    /// order, which every index is).
    pub fn keys(&self) -> Vec<Vec<usize>> {
        self.keys.iter().map(|k| k.columns.clone()).collect()
    }

    /// Arrange the rows by `columns` too, so equalities on them are
    /// lookups. A leading run of the row's own columns needs nothing: the
    /// row order serves it.
    pub fn add_key(&mut self, columns: &[usize]) -> Result<()> {
        self.arrange(columns)?;
        self.own.push(columns.to_vec());
        Ok(())
    }

    /// Arrange by `columns` for a named index (`CREATE INDEX`).
    pub fn add_named(&mut self, columns: &[usize]) -> Result<()> {
        self.arrange(columns)?;
        self.named.push(columns.to_vec());
        Ok(())
    }

    /// A named index on `columns` is gone: its arrangement goes too unless
    /// the relation's key or another index holds it.
    pub fn drop_named(&mut self, columns: &[usize]) {
        if let Some(i) = self.named.iter().position(|c| c == columns) {
            self.named.remove(i);
        }
        if !self.named.iter().chain(&self.own).any(|c| c == columns) {
            self.keys.retain(|k| k.columns != columns);
            self.snapshot = None;
        }
    }

    fn arrange(&mut self, columns: &[usize]) -> Result<()> {
        let n = self.schema.fields().len();
        if columns.is_empty()
            || columns.iter().any(|c| *c >= n)
            || columns.iter().enumerate().all(|(i, c)| i == *c)
            || self.keys.iter().any(|k| k.columns == columns)
        {
            return Ok(());
        }
        let types: Vec<DataType> = columns
            .iter()
            .map(|c| self.schema.field(*c).data_type().clone())
            .collect();
        let mut keyed = Keyed {
            columns: columns.to_vec(),
            codec: Arc::new(Codec::new(&types)?),
            entries: OrdMap::new(),
        };
        let rows: Vec<&[u8]> = self.rows.keys().map(|r| r.as_ref()).collect();
        for chunk in rows.chunks(8192) {
            let columns = self.codec.decode(chunk.iter().copied())?;
            let keys = keyed.encode(&columns)?;
            for (i, row) in chunk.iter().enumerate() {
                keyed
                    .entries
                    .insert(joined(keys.row(i), row), keys.row(i).len() as u32);
            }
        }
        self.keys.push(keyed);
        self.snapshot = None;
        Ok(())
    }

    /// Apply a change.
    pub fn apply(&mut self, delta: &Delta) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        self.snapshot = None;
        let rows = self.codec.encode(delta.batch.columns())?;
        let keys = self
            .keys
            .iter()
            .map(|k| k.encode(delta.batch.columns()))
            .collect::<Result<Vec<_>>>()?;
        // Net change per row first, so a retraction that precedes its
        // insertion in the same delta is not mistaken for a missing row.
        let mut net: AHashMap<&[u8], (i64, usize)> = AHashMap::with_capacity(delta.len());
        let mut order: Vec<&[u8]> = Vec::with_capacity(delta.len());
        for (i, d) in delta.diffs.iter().enumerate() {
            let key = rows.row(i);
            let e = net.entry(key).or_insert_with(|| {
                order.push(key);
                (0, i)
            });
            e.0 += d;
        }
        for row in order {
            let (d, i) = net[row];
            if d == 0 {
                continue;
            }
            let before = self.rows.get(row).copied().unwrap_or(0);
            let mut after = before + d;
            if after < 0 {
                self.negative += 1;
                after = 0;
            }
            self.len += after - before;
            if after == 0 {
                if self.rows.remove(row).is_some() {
                    self.bytes = self.bytes.saturating_sub(state_bytes(row.len()));
                    for (k, enc) in self.keys.iter_mut().zip(&keys) {
                        k.entries.remove(joined(enc.row(i), row).as_ref());
                    }
                }
            } else if before == 0 {
                self.bytes += state_bytes(row.len());
                self.rows.insert(row.into(), after);
                for (k, enc) in self.keys.iter_mut().zip(&keys) {
                    k.entries
                        .insert(joined(enc.row(i), row), enc.row(i).len() as u32);
                }
            } else if let Some(v) = self.rows.get_mut(row) {
                *v = after;
            }
        }
        Ok(())
    }

    /// The contents now, kept unchanged by later changes. O(1).
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            return Arc::clone(s);
        }
        let s = Arc::new(Snapshot {
            schema: Arc::clone(&self.schema),
            codec: Arc::clone(&self.codec),
            rows: self.rows.clone(),
            keys: self.keys.clone(),
            key: self.own.iter().find(|k| !k.is_empty()).cloned(),
            len: self.len(),
            batch: OnceLock::new(),
        });
        self.snapshot = Some(Arc::clone(&s));
        s
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

    /// Replace the rows with what `save` wrote (the arrangements by key are
    /// built again from them).
    pub fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("index")?;
        let rows = r.counts()?;
        if rows.iter().any(|(_, n)| *n <= 0) {
            return Err(DataflowError::Checkpoint(
                "an index row with no multiplicity".into(),
            ));
        }
        self.len = rows.iter().map(|(_, n)| n).sum();
        self.bytes = rows.iter().map(|(k, _)| state_bytes(k.len())).sum();
        self.rows = rows.into_iter().map(|(k, n)| (Row::from(k), n)).collect();
        self.negative = r.u64()?;
        self.snapshot = None;
        let keys: Vec<Vec<usize>> = self.keys.drain(..).map(|k| k.columns).collect();
        for k in keys {
            self.arrange(&k)?;
        }
        Ok(())
    }

    /// The contents as a delta of insertions (backfill of a new reader).
    pub fn as_delta(&mut self) -> Result<Delta> {
        Ok(Delta::inserts(self.snapshot().batch()?))
    }
}

impl Keyed {
    fn encode(&self, columns: &[ArrayRef]) -> Result<super::rows::Encoded> {
        let cols: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| Arc::clone(&columns[*c]))
            .collect();
        self.codec.encode(&cols)
    }
}

fn joined(key: &[u8], row: &[u8]) -> Row {
    let mut v = Vec::with_capacity(key.len() + row.len());
    v.extend_from_slice(key);
    v.extend_from_slice(row);
    v.into()
}

/// Whether equal values of this type always have equal row bytes (and
/// unequal ones unequal), so an equality may be answered by a lookup.
/// Floats are not (`-0.0 = 0.0`, NaNs), nor are nested or dictionary types
/// taken here.
pub fn exact_type(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Date32
            | Date64
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
            | Decimal128(_, _)
            | Decimal256(_, _)
    )
}

/// One read of a snapshot by one of its arrangements: equal to `prefix` on
/// the arrangement's first columns, then within `lower`/`upper` on the
/// next one.
#[derive(Debug, Clone)]
pub struct Probe {
    /// 0: the row order (all columns); i: the i-th key of [`Snapshot::paths`].
    pub path: usize,
    pub prefix: Vec<ScalarValue>,
    pub lower: Bound<ScalarValue>,
    pub upper: Bound<ScalarValue>,
}

/// A table's or view's contents as of one epoch (see [`Index::snapshot`]).
pub struct Snapshot {
    schema: SchemaRef,
    codec: Arc<Codec>,
    rows: OrdMap<Row, i64>,
    keys: Vec<Keyed>,
    /// The relation's own key (a view's GROUP BY columns, a table's
    /// PRIMARY KEY), if it has one.
    key: Option<Vec<usize>>,
    len: u64,
    /// Every row as one batch, built at the first read that needs it.
    batch: OnceLock<RecordBatch>,
}

impl Snapshot {
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The relation's own key, if it has one.
    pub fn key(&self) -> Option<&[usize]> {
        self.key.as_deref()
    }

    /// Rows, counting duplicates.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The arrangements a [`Probe`] may use, by their columns: the first is
    /// every column in order.
    pub fn paths(&self) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        std::iter::once(all)
            .chain(self.keys.iter().map(|k| k.columns.clone()))
            .collect()
    }

    /// Every row (duplicates repeated) in row order, as one batch.
    pub fn batch(&self) -> Result<RecordBatch> {
        if let Some(b) = self.batch.get() {
            return Ok(b.clone());
        }
        let b = self.decode(self.rows.iter().map(|(r, n)| (r.as_ref(), *n)), usize::MAX)?;
        Ok(self.batch.get_or_init(|| b).clone())
    }

    /// The first `limit` rows in row order.
    pub fn first(&self, limit: usize) -> Result<RecordBatch> {
        if let Some(b) = self.batch.get() {
            return Ok(b.slice(0, limit.min(b.num_rows())));
        }
        self.decode(self.rows.iter().map(|(r, n)| (r.as_ref(), *n)), limit)
    }

    /// The rows matching any of `probes` (each row once, however many
    /// probes it matches), in the order found.
    pub fn lookup(&self, probes: &[Probe]) -> Result<RecordBatch> {
        let mut seen: std::collections::HashSet<(usize, Vec<u8>, Vec<u8>)> =
            std::collections::HashSet::new();
        let mut found: Vec<(&[u8], i64)> = Vec::new();
        let mut rows_seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for p in probes {
            let Some((lo, hi)) = self.bounds(p)? else {
                continue;
            };
            let ident = (p.path, bound_bytes(&lo), bound_bytes(&hi));
            if !seen.insert(ident) {
                continue;
            }
            let range = (map_bound(&lo), map_bound(&hi));
            if p.path == 0 {
                for (r, n) in self.rows.range::<_, [u8]>(range) {
                    if rows_seen.insert(r.as_ref()) {
                        found.push((r.as_ref(), *n));
                    }
                }
            } else {
                let k = &self.keys[p.path - 1];
                for (e, klen) in k.entries.range::<_, [u8]>(range) {
                    let row = &e[*klen as usize..];
                    if let Some((r, n)) = self.rows.get_key_value(row)
                        && rows_seen.insert(r.as_ref())
                    {
                        found.push((r.as_ref(), *n));
                    }
                }
            }
        }
        self.decode(found.into_iter(), usize::MAX)
    }

    /// The byte range of `p` in its arrangement; None when it can match
    /// nothing (a NULL compared, a value not of the column's type).
    #[allow(clippy::type_complexity)]
    fn bounds(&self, p: &Probe) -> Result<Option<(Bound<Vec<u8>>, Bound<Vec<u8>>)>> {
        let paths = self.paths();
        let Some(columns) = paths.get(p.path) else {
            return Err(DataflowError::Other(format!("no arrangement {}", p.path)));
        };
        let k = p.prefix.len();
        let ranged = !matches!((&p.lower, &p.upper), (Bound::Unbounded, Bound::Unbounded));
        if k + usize::from(ranged) > columns.len() || (k == 0 && !ranged) {
            return Err(DataflowError::Other(
                "a probe longer than its arrangement".into(),
            ));
        }
        let types: Vec<DataType> = columns
            .iter()
            .map(|c| self.schema.field(*c).data_type().clone())
            .collect();
        let Some(prefix) = encode(&types[..k], &p.prefix)? else {
            return Ok(None);
        };
        if !ranged {
            let hi = match successor(&prefix) {
                Some(s) => Bound::Excluded(s),
                None => Bound::Unbounded,
            };
            return Ok(Some((Bound::Included(prefix), hi)));
        }
        let with = |v: &ScalarValue| -> Result<Option<Vec<u8>>> {
            let mut values = p.prefix.clone();
            values.push(v.clone());
            encode(&types[..=k], &values)
        };
        // Below every row with the prefix / above every one.
        let lo = match &p.lower {
            Bound::Unbounded => Bound::Included(prefix.clone()),
            Bound::Included(v) => match with(v)? {
                Some(b) => Bound::Included(b),
                None => return Ok(None),
            },
            Bound::Excluded(v) => match with(v)? {
                Some(b) => match successor(&b) {
                    Some(s) => Bound::Included(s),
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let hi = match &p.upper {
            Bound::Unbounded => match successor(&prefix) {
                Some(s) => Bound::Excluded(s),
                None => Bound::Unbounded,
            },
            Bound::Included(v) => match with(v)? {
                Some(b) => match successor(&b) {
                    Some(s) => Bound::Excluded(s),
                    None => Bound::Unbounded,
                },
                None => return Ok(None),
            },
            Bound::Excluded(v) => match with(v)? {
                Some(b) => Bound::Excluded(b),
                None => return Ok(None),
            },
        };
        // A NULL bound matches nothing (nulls sort first: without this,
        // `> NULL` would read every non-null row).
        Ok(Some((lo, hi)))
    }

    fn decode<'a>(
        &self,
        rows: impl Iterator<Item = (&'a [u8], i64)>,
        limit: usize,
    ) -> Result<RecordBatch> {
        let mut out: Vec<&[u8]> = Vec::new();
        'rows: for (r, n) in rows {
            for _ in 0..n {
                if out.len() >= limit {
                    break 'rows;
                }
                out.push(r);
            }
        }
        if out.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        self.codec.decode_batch(&self.schema, out)
    }
}

/// Row bytes of `values` as columns of `types`; None if one is NULL or
/// cannot be cast to its column's type without loss.
fn encode(types: &[DataType], values: &[ScalarValue]) -> Result<Option<Vec<u8>>> {
    if types.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(values.len());
    for (t, v) in types.iter().zip(values) {
        if v.is_null() {
            return Ok(None);
        }
        let Ok(cast) = v.cast_to(t) else {
            return Ok(None);
        };
        // A cast that changed the value (3.5 into an int column) cannot be
        // equal to any row.
        match cast.cast_to(&v.data_type()) {
            Ok(back) if back == *v => {}
            _ => return Ok(None),
        }
        columns.push(
            cast.to_array_of_size(1)
                .map_err(|e| DataflowError::Other(e.to_string()))?,
        );
    }
    let codec = Codec::new(types)?;
    Ok(Some(codec.encode(&columns)?.row(0).to_vec()))
}

/// The least byte string greater than every string starting with `b`;
/// None if there is none (all 0xff).
fn successor(b: &[u8]) -> Option<Vec<u8>> {
    let mut v = b.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

fn map_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bound_bytes(b: &Bound<Vec<u8>>) -> Vec<u8> {
    match b {
        Bound::Included(v) => [&[1u8][..], v].concat(),
        Bound::Excluded(v) => [&[2u8][..], v].concat(),
        Bound::Unbounded => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn delta(rows: &[(&str, i64, i64, i64)]) -> Delta {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch");
        Delta::new(batch, rows.iter().map(|r| r.3).collect())
    }

    fn ks(b: &RecordBatch) -> Vec<i64> {
        let a = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        let mut v: Vec<i64> = a.iter().map(|x| x.unwrap_or(-1)).collect();
        v.sort();
        v
    }

    fn eq(path: usize, prefix: Vec<ScalarValue>) -> Probe {
        Probe {
            path,
            prefix,
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }
    }

    #[test]
    fn named_indexes_come_and_go_without_the_relations_own_key() {
        let mut ix = Index::new(schema()).expect("index");
        ix.add_key(&[1]).expect("own key");
        ix.apply(&delta(&[("a", 1, 10, 1), ("b", 2, 20, 1)]))
            .expect("apply");
        ix.add_named(&[2]).expect("index");
        ix.add_named(&[2])
            .expect("second index on the same columns");
        ix.add_named(&[1]).expect("index on the own key");
        assert_eq!(ix.snapshot().paths(), [vec![0, 1, 2], vec![1], vec![2]]);
        let by_v = ix
            .snapshot()
            .lookup(&[eq(2, vec![ScalarValue::Int64(Some(20))])])
            .expect("v");
        assert_eq!(ks(&by_v), [2]);
        ix.drop_named(&[2]);
        ix.drop_named(&[1]);
        assert_eq!(ix.snapshot().paths(), [vec![0, 1, 2], vec![1], vec![2]]);
        ix.drop_named(&[2]);
        assert_eq!(ix.snapshot().paths(), [vec![0, 1, 2], vec![1]]);
    }

    #[test]
    fn lookups_by_prefix_key_and_range_see_their_epoch() {
        let mut ix = Index::new(schema()).expect("index");
        ix.add_key(&[1]).expect("key");
        ix.apply(&delta(&[
            ("a", 1, 10, 1),
            ("a", 2, 20, 1),
            ("b", 3, 30, 2),
            ("c", 4, 40, 1),
        ]))
        .expect("apply");
        let s1 = ix.snapshot();
        ix.apply(&delta(&[
            ("a", 1, 10, -1),
            ("a", 1, 11, 1),
            ("b", 3, 30, -2),
        ]))
        .expect("apply");
        let s2 = ix.snapshot();
        let a = ScalarValue::Utf8(Some("a".into()));
        assert_eq!(
            ks(&s1.lookup(&[eq(0, vec![a.clone()])]).expect("a")),
            [1, 2]
        );
        assert_eq!(
            ks(&s1
                .lookup(&[eq(0, vec![ScalarValue::Utf8(Some("b".into()))])])
                .expect("b")),
            [3, 3]
        );
        assert!(
            s2.lookup(&[eq(0, vec![ScalarValue::Utf8(Some("b".into()))])])
                .expect("b")
                .num_rows()
                == 0
        );
        // By the secondary key, with an Int32 literal cast to the column.
        assert_eq!(
            ks(&s2
                .lookup(&[eq(1, vec![ScalarValue::Int32(Some(1))])])
                .expect("k")),
            [1]
        );
        assert_eq!(
            ks(&s1
                .lookup(&[eq(1, vec![ScalarValue::Int64(Some(3))])])
                .expect("k")),
            [3, 3]
        );
        // 1.5 is no int64: nothing.
        assert_eq!(
            s1.lookup(&[eq(1, vec![ScalarValue::Float64(Some(1.5))])])
                .expect("k")
                .num_rows(),
            0
        );
        // Ranges on the key, and after an equality prefix.
        let r = |path, prefix, lower, upper| Probe {
            path,
            prefix,
            lower,
            upper,
        };
        let i = |v: i64| ScalarValue::Int64(Some(v));
        assert_eq!(
            ks(&s1
                .lookup(&[r(1, vec![], Bound::Excluded(i(1)), Bound::Included(i(3)))])
                .expect("range")),
            [2, 3, 3]
        );
        assert_eq!(
            ks(&s2
                .lookup(&[r(
                    0,
                    vec![a.clone()],
                    Bound::Included(i(2)),
                    Bound::Unbounded
                )])
                .expect("range")),
            [2]
        );
        assert_eq!(
            ks(&s2
                .lookup(&[r(
                    0,
                    vec![a.clone()],
                    Bound::Unbounded,
                    Bound::Excluded(i(2))
                )])
                .expect("range")),
            [1]
        );
        // The same probe twice, and overlapping ones: each row once.
        assert_eq!(
            ks(&s1
                .lookup(&[
                    eq(0, vec![a.clone()]),
                    eq(0, vec![a.clone()]),
                    eq(1, vec![i(1)])
                ])
                .expect("dup")),
            [1, 2]
        );
        // NULL matches nothing.
        assert_eq!(
            s1.lookup(&[eq(1, vec![ScalarValue::Int64(None)])])
                .expect("null")
                .num_rows(),
            0
        );
        assert_eq!(s1.batch().expect("all").num_rows(), 5);
        assert_eq!(s2.batch().expect("all").num_rows(), 3);
        assert_eq!(s2.first(2).expect("first").num_rows(), 2);
    }

    #[test]
    fn lookups_agree_with_a_scan_under_random_changes() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut ix = Index::new(schema()).expect("index");
        ix.add_key(&[2, 1]).expect("key");
        let mut live: Vec<(String, i64, i64)> = Vec::new();
        for _ in 0..200 {
            let mut rows = Vec::new();
            for _ in 0..rng.random_range(1..20) {
                if !live.is_empty() && rng.random_bool(0.4) {
                    let r = live.swap_remove(rng.random_range(0..live.len()));
                    rows.push((r.0, r.1, r.2, -1));
                } else {
                    let r = (
                        ["x", "y", "z"][rng.random_range(0..3)].to_string(),
                        rng.random_range(0..10),
                        rng.random_range(0..5),
                    );
                    live.push(r.clone());
                    rows.push((r.0, r.1, r.2, 1));
                }
            }
            let rows: Vec<(&str, i64, i64, i64)> =
                rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
            ix.apply(&delta(&rows)).expect("apply");
            let s = ix.snapshot();
            assert_eq!(s.len(), live.len() as u64, "seed {seed}");
            let n = rng.random_range(0..5i64);
            let got = s
                .lookup(&[eq(1, vec![ScalarValue::Int64(Some(n))])])
                .expect("lookup");
            let mut want: Vec<i64> = live.iter().filter(|r| r.2 == n).map(|r| r.1).collect();
            want.sort();
            assert_eq!(ks(&got), want, "seed {seed}");
            let g = ["x", "y", "z"][rng.random_range(0..3)];
            let lo = rng.random_range(0..10i64);
            let got = s
                .lookup(&[Probe {
                    path: 0,
                    prefix: vec![ScalarValue::Utf8(Some(g.into()))],
                    lower: Bound::Included(ScalarValue::Int64(Some(lo))),
                    upper: Bound::Unbounded,
                }])
                .expect("lookup");
            let mut want: Vec<i64> = live
                .iter()
                .filter(|r| r.0 == g && r.1 >= lo)
                .map(|r| r.1)
                .collect();
            want.sort();
            assert_eq!(ks(&got), want, "seed {seed}");
        }
    }
}
