//! Equi-join of two changing inputs: inner, left, right and full outer,
//! semi and anti.
//!
//! Both sides are arranged by join key (key → multiset of rows). A tick's
//! changes ΔL and ΔR produce ΔL⋈R_old + L_new⋈ΔR, which equals
//! L_new⋈R_new − L_old⋈R_old. Outer joins also track, per key, whether the
//! other side is empty: when it becomes empty the side's rows are emitted
//! padded with NULLs, when it stops being empty those padded rows are
//! retracted. Semi and anti joins emit a side's rows while the other side's
//! count for the key is positive (zero). Work is proportional to the change
//! times the matching rows, never to the size of either side.
//!
//! An outer, semi or anti join with a condition beyond key equality (`ON
//! a.k = b.k AND b.w > a.v`, `EXISTS (… WHERE b.k = a.k AND b.w > a.v)`)
//! cannot tell from counts whether a row has a partner; it recomputes the
//! output of each key a change touches, before and after: work
//! proportional to the rows of the touched keys on both sides.
//!
//! NULL keys never match (SQL equality) unless the plan says NULLs are
//! equal; such rows are not arranged: they only ever appear NULL-padded in
//! outer joins and in anti joins.
//!
//! (About 850 lines: one operator whose inner, outer, semi and anti cases
//! share the arrangements and the delta rule above; split, each would repeat
//! them.)

use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes, state_bytes};
use super::{Counts, DataflowError, Delta, Operator, OperatorStats, Result, StepContext, batch_of};

#[derive(Default)]
struct Bucket {
    rows: AHashMap<RowBytes, i64>,
    total: i64,
}

impl Bucket {
    /// Apply a change; returns the change in state bytes.
    fn apply(&mut self, row: &RowBytes, d: i64) -> i64 {
        self.total += d;
        let before = self.rows.get(row).copied().unwrap_or(0);
        let after = before + d;
        if after == 0 {
            self.rows.remove(row);
            -(state_bytes(row.len()) as i64)
        } else if before == 0 {
            self.rows.insert(row.clone(), after);
            state_bytes(row.len()) as i64
        } else {
            if let Some(v) = self.rows.get_mut(row) {
                *v = after;
            }
            0
        }
    }
}

impl Side {
    /// The arrangement (not the input node).
    fn save(&self, w: &mut Writer) {
        w.u64(self.state.len() as u64);
        for (key, b) in &self.state {
            w.bytes(key);
            w.counts(b.rows.len(), b.rows.iter().map(|(r, n)| (r.as_ref(), *n)));
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.state.clear();
        self.rows = 0;
        self.bytes = 0;
        for _ in 0..r.len(16)? {
            let key: RowBytes = r.bytes()?.into();
            let mut bucket = Bucket::default();
            self.bytes += state_bytes(key.len()) as i64;
            for (row, n) in r.counts()? {
                self.rows = (self.rows as i64 + n).max(0) as u64;
                self.bytes += bucket.apply(&row, n);
            }
            self.state.insert(key, bucket);
        }
        Ok(())
    }
}

struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    codec: Codec,
    types: Vec<DataType>,
    state: AHashMap<RowBytes, Bucket>,
    rows: u64,
    bytes: i64,
}

/// One side's change of a tick, grouped by key.
type Changes = Vec<(RowBytes, i64)>;

/// ksqlDB's stream-stream join window (`WITHIN before, after [GRACE
/// PERIOD g]`), in microseconds: a left row at `t` meets right rows in
/// `[t - before, t + after]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinWindow {
    pub before_us: i64,
    pub after_us: i64,
    pub grace_us: i64,
}

/// A windowed join's trimming: each side's rows by time, forgotten once
/// the watermark has passed the last time a row of the other side could
/// still meet them (plus grace).
struct Trim {
    window: JoinWindow,
    /// The record-time column of each side.
    left_time: usize,
    right_time: usize,
    mark: Option<i64>,
    left: std::collections::BTreeSet<(i64, RowBytes, RowBytes)>,
    right: std::collections::BTreeSet<(i64, RowBytes, RowBytes)>,
}

/// (time, key, row) of a side's inserted rows.
type Timed = Vec<(i64, RowBytes, RowBytes)>;

pub struct Join {
    left: Side,
    right: Side,
    key_codec: Codec,
    key_types: Vec<DataType>,
    kind: JoinType,
    nulls_equal: bool,
    /// The condition beyond key equality, over `pairs` (the left columns
    /// then the right ones, whatever the join's output).
    filter: Option<Arc<dyn PhysicalExpr>>,
    pairs: SchemaRef,
    schema: SchemaRef,
    counts: Counts,
    /// The left side (a stream) looks each row up in the right side as it
    /// is then; the right side's changes emit nothing and the left side is
    /// not kept (ksqlDB's stream-table join).
    lookup: bool,
    /// Two streams joined within a window of their record times.
    trim: Option<Trim>,
}

type OutRow = (Option<RowBytes>, Option<RowBytes>, i64);

impl Join {
    /// Look the left side up in the right (`lookup`): inner and left
    /// joins, a left join without a condition beyond its keys.
    pub fn lookup(mut self) -> Join {
        self.lookup = true;
        self
    }

    /// Forget rows the window has passed: columns `left_time` and
    /// `right_time` are the sides' record times.
    pub fn windowed(mut self, window: JoinWindow, left_time: usize, right_time: usize) -> Join {
        self.trim = Some(Trim {
            window,
            left_time,
            right_time,
            mark: None,
            left: Default::default(),
            right: Default::default(),
        });
        self
    }

    /// A side's join-key columns over `delta` (cast to the key types) and
    /// their encoding (None without keys: a cross join).
    fn key_columns(
        &self,
        side: &Side,
        delta: &Delta,
    ) -> Result<(Vec<ArrayRef>, Option<super::rows::Encoded>)> {
        let n = delta.len();
        let mut key_cols: Vec<ArrayRef> = Vec::with_capacity(side.keys.len());
        for (k, t) in side.keys.iter().zip(&self.key_types) {
            let a = k.evaluate(&delta.batch)?.into_array(n)?;
            key_cols.push(if a.data_type() == t { a } else { cast(&a, t)? });
        }
        let keys = match key_cols.is_empty() {
            true => None,
            false => Some(self.key_codec.encode(&key_cols)?),
        };
        Ok((key_cols, keys))
    }

    /// The inserted rows of `delta` (a side) with their times and keys.
    fn timed(&self, side: &Side, delta: &Delta, time: usize) -> Result<Timed> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Int64Type, TimeUnit};
        if delta.is_empty() {
            return Ok(vec![]);
        }
        let rows = side.codec.encode(delta.batch.columns())?;
        let (key_cols, keys) = self.key_columns(side, delta)?;
        let times = cast(
            &cast(
                delta.batch.column(time),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?,
            &DataType::Int64,
        )?;
        let times = times.as_primitive::<Int64Type>();
        let mut out = Vec::new();
        for (i, d) in delta.diffs.iter().enumerate() {
            if *d <= 0 || times.is_null(i) || key_cols.iter().any(|c| c.is_null(i)) {
                continue;
            }
            let key: RowBytes = match &keys {
                Some(k) => k.row(i).into(),
                None => Box::new([]),
            };
            out.push((times.value(i), key, rows.row(i).into()));
        }
        Ok(out)
    }

    /// Record this step's rows and forget those the window has passed.
    fn trim(&mut self, left: Timed, right: Timed) {
        let Some(t) = self.trim.as_mut() else {
            return;
        };
        t.left.extend(left);
        t.right.extend(right);
        let Some(mark) = t.mark else {
            return;
        };
        let w = t.window;
        // A left row at tl meets right rows up to tl + after; a right row
        // at tr meets left rows from tr - after … tr + before.
        let passed =
            |time: i64, reach: i64| time.saturating_add(reach).saturating_add(w.grace_us) < mark;
        for (set, side, reach) in [
            (&mut t.left, &mut self.left, w.after_us),
            (&mut t.right, &mut self.right, w.before_us),
        ] {
            while let Some((time, _, _)) = set.first() {
                if !passed(*time, reach) {
                    break;
                }
                let Some((_, key, row)) = set.pop_first() else {
                    break;
                };
                let count = side
                    .state
                    .get(&key)
                    .and_then(|b| b.rows.get(&row).copied())
                    .unwrap_or(0);
                if count > 0 {
                    apply(side, &key, &vec![(row, -count)]);
                }
            }
        }
    }

    /// A lookup join's step: the table's changes first, then each stream
    /// row joined with the table as it is.
    fn lookup_step(
        &mut self,
        groups: &AHashMap<RowBytes, (Changes, Changes)>,
        null_left: &Changes,
    ) -> Result<Delta> {
        for (key, (_, rc)) in groups {
            apply(&mut self.right, key, rc);
        }
        let mut out: Vec<OutRow> = Vec::new();
        let left_join = self.kind == JoinType::Left;
        if left_join {
            emit_changes(&mut out, null_left, 1, true);
        }
        for (key, (lc, _)) in groups {
            let matched = self.right.state.get(key).filter(|b| b.total > 0);
            for (l, d) in lc {
                match matched {
                    Some(rb) => {
                        for (r, c) in &rb.rows {
                            out.push((Some(l.clone()), Some(r.clone()), d * c));
                        }
                    }
                    None if left_join => out.push((Some(l.clone()), None, *d)),
                    None => {}
                }
            }
        }
        let delta = self.build(out)?;
        self.counts.rows_out += delta.len() as u64;
        Ok(delta)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        left: SchemaRef,
        right: SchemaRef,
        on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
        kind: JoinType,
        nulls_equal: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Join> {
        if !matches!(
            kind,
            JoinType::Inner
                | JoinType::Left
                | JoinType::Right
                | JoinType::Full
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::RightSemi
                | JoinType::RightAnti
        ) {
            return Err(DataflowError::Unsupported(format!("{kind} join")));
        }
        let ls = Arc::clone(&left);
        let pairs = {
            let rs = Arc::clone(&right);
            let fields: Vec<_> = ls
                .fields()
                .iter()
                .chain(rs.fields().iter())
                .cloned()
                .collect();
            super::nullable(&datafusion::arrow::datatypes::Schema::new(fields))
        };
        let key_types = on
            .iter()
            .map(|(l, _)| l.data_type(&ls))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        // No keys (a cross join): every row has the same, empty key.
        let key_codec = Codec::new(&key_types)?;
        let side = |schema: SchemaRef, keys: Vec<Arc<dyn PhysicalExpr>>| -> Result<Side> {
            let types = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            Ok(Side {
                codec: Codec::for_schema(&schema)?,
                types,
                keys,
                state: AHashMap::new(),
                rows: 0,
                bytes: 0,
            })
        };
        let (lk, rk): (Vec<_>, Vec<_>) = on.into_iter().unzip();
        Ok(Join {
            left: side(left, lk)?,
            right: side(right, rk)?,
            key_codec,
            key_types,
            kind,
            nulls_equal,
            filter,
            pairs,
            schema,
            counts: Counts::default(),
            lookup: false,
            trim: None,
        })
    }

    /// Changes of one side grouped by key, plus the rows whose key has a
    /// NULL (which match nothing).
    fn group(
        &self,
        side: &Side,
        delta: &Delta,
        into: &mut AHashMap<RowBytes, (Changes, Changes)>,
        left: bool,
        unmatched: &mut Vec<(RowBytes, i64)>,
    ) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let rows = side.codec.encode(delta.batch.columns())?;
        let (key_cols, keys) = self.key_columns(side, delta)?;
        for (i, d) in delta.diffs.iter().enumerate() {
            let row: RowBytes = rows.row(i).into();
            if !self.nulls_equal && key_cols.iter().any(|c| c.is_null(i)) {
                unmatched.push((row, *d));
                continue;
            }
            let key: RowBytes = match &keys {
                Some(k) => k.row(i).into(),
                None => Box::new([]),
            };
            let e = into.entry(key).or_default();
            if left {
                e.0.push((row, *d));
            } else {
                e.1.push((row, *d));
            }
        }
        Ok(())
    }

    fn columns(side: &Side, rows: &[OutRow], left: bool) -> Result<Vec<ArrayRef>> {
        fn side_of(r: &OutRow, left: bool) -> Option<&RowBytes> {
            if left { r.0.as_ref() } else { r.1.as_ref() }
        }
        let pick = |r| side_of(r, left);
        let present: Vec<&[u8]> = rows
            .iter()
            .filter_map(|r| pick(r).map(|b| b.as_ref()))
            .collect();
        if side.types.is_empty() {
            return Ok(vec![]);
        }
        let decoded = side.codec.decode(present.iter().copied())?;
        if present.len() == rows.len() {
            return Ok(decoded);
        }
        let mut indices = Vec::with_capacity(rows.len());
        let mut k = 0;
        for r in rows {
            if pick(r).is_some() {
                indices.push((0, k));
                k += 1;
            } else {
                indices.push((1, 0));
            }
        }
        decoded
            .iter()
            .zip(&side.types)
            .map(|(c, t)| {
                let nulls = new_null_array(t, 1);
                Ok(interleave(&[c.as_ref(), nulls.as_ref()], &indices)?)
            })
            .collect()
    }

    fn build(&self, rows: Vec<OutRow>) -> Result<Delta> {
        // Outer, semi and anti joins retract and re-emit a key's rows when
        // the other side changes; a row retracted and re-inserted in the
        // same tick cancels out here instead of reaching downstream state as
        // a transient negative.
        let rows = if matches!(self.kind, JoinType::Inner) {
            rows
        } else {
            consolidate(rows)
        };
        if rows.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let batch = self.joined(&rows)?;
        let diffs: Vec<i64> = rows.iter().map(|r| r.2).collect();
        if self.filter.is_none() || self.residual() {
            // Outer, semi and anti joins with a residual condition applied
            // it per key already (NULL-padded rows must not be filtered).
            return Ok(Delta::new(batch, diffs));
        }
        let mask = self.mask(&batch)?;
        let kept = diffs
            .iter()
            .enumerate()
            .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
            .map(|(_, d)| *d)
            .collect();
        Ok(Delta::new(filter_record_batch(&batch, &mask)?, kept))
    }

    /// Output rows as a batch of the join's schema (semi and anti joins
    /// keep only their side's columns).
    fn joined(&self, rows: &[OutRow]) -> Result<RecordBatch> {
        let mut columns = Vec::new();
        match self.kind {
            JoinType::LeftSemi | JoinType::LeftAnti => {
                columns.extend(Self::columns(&self.left, rows, true)?)
            }
            JoinType::RightSemi | JoinType::RightAnti => {
                columns.extend(Self::columns(&self.right, rows, false)?)
            }
            _ => {
                columns.extend(Self::columns(&self.left, rows, true)?);
                columns.extend(Self::columns(&self.right, rows, false)?);
            }
        }
        batch_of(&self.schema, columns, rows.len())
    }

    /// Pairs of rows as a batch of both sides' columns (what the residual
    /// condition reads).
    fn pair_batch(&self, rows: &[OutRow]) -> Result<RecordBatch> {
        let mut columns = Self::columns(&self.left, rows, true)?;
        columns.extend(Self::columns(&self.right, rows, false)?);
        batch_of(&self.pairs, columns, rows.len())
    }

    /// The residual condition evaluated on a batch of pairs.
    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let Some(f) = &self.filter else {
            return Ok(BooleanArray::from(vec![true; batch.num_rows()]));
        };
        let mask = f.evaluate(batch)?.into_array(batch.num_rows())?;
        Ok(mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataflowError::Other("join condition is not boolean".into()))?
            .clone())
    }

    /// An outer, semi or anti join with a condition beyond key equality:
    /// whether a row has a partner depends on the condition, so such a join
    /// recomputes the output of each key its changes touch (before and
    /// after) instead of tracking the other side's count per key.
    fn residual(&self) -> bool {
        if self.lookup {
            return false;
        }
        self.filter.is_some() && self.kind != JoinType::Inner
    }

    /// The output of one key for a join with a residual condition: for
    /// outer joins the pairs that satisfy it and the NULL-padded rows of a
    /// preserved side that have no such partner; for semi (anti) joins the
    /// rows of their side that have one (none).
    fn key_output(&self, key: &RowBytes) -> Result<Vec<OutRow>> {
        let collect = |side: &Side| -> Vec<(RowBytes, i64)> {
            side.state
                .get(key)
                .map(|b| b.rows.iter().map(|(r, c)| (r.clone(), *c)).collect())
                .unwrap_or_default()
        };
        let (ls, rs) = (collect(&self.left), collect(&self.right));
        let mut pairs: Vec<OutRow> = Vec::with_capacity(ls.len() * rs.len());
        for (l, cl) in &ls {
            for (r, cr) in &rs {
                pairs.push((Some(l.clone()), Some(r.clone()), cl * cr));
            }
        }
        let mut l_matched = vec![false; ls.len()];
        let mut r_matched = vec![false; rs.len()];
        let mut out = Vec::new();
        let emit_pairs = matches!(self.kind, JoinType::Left | JoinType::Right | JoinType::Full);
        if !pairs.is_empty() {
            let batch = self.pair_batch(&pairs)?;
            let mask = self.mask(&batch)?;
            for (i, p) in pairs.into_iter().enumerate() {
                if mask.is_valid(i) && mask.value(i) {
                    l_matched[i / rs.len()] = true;
                    r_matched[i % rs.len()] = true;
                    if emit_pairs {
                        out.push(p);
                    }
                }
            }
        }
        // Which rows of each side are output alone: NULL-padded (outer),
        // matched (semi) or unmatched (anti).
        let (left_alone, right_alone) = match self.kind {
            JoinType::Left => (Some(false), None),
            JoinType::Right => (None, Some(false)),
            JoinType::Full => (Some(false), Some(false)),
            JoinType::LeftSemi => (Some(true), None),
            JoinType::LeftAnti => (Some(false), None),
            JoinType::RightSemi => (None, Some(true)),
            JoinType::RightAnti => (None, Some(false)),
            _ => (None, None),
        };
        if let Some(want) = left_alone {
            for ((l, c), m) in ls.into_iter().zip(l_matched) {
                if m == want {
                    out.push((Some(l), None, c));
                }
            }
        }
        if let Some(want) = right_alone {
            for ((r, c), m) in rs.into_iter().zip(r_matched) {
                if m == want {
                    out.push((None, Some(r), c));
                }
            }
        }
        Ok(out)
    }
}

/// Sum the diffs of equal output rows, dropping those that cancel; keeps
/// the first-seen order.
fn consolidate(rows: Vec<OutRow>) -> Vec<OutRow> {
    let mut at: AHashMap<(Option<RowBytes>, Option<RowBytes>), usize> = AHashMap::new();
    let mut out: Vec<OutRow> = Vec::with_capacity(rows.len());
    for (l, r, d) in rows {
        match at.get(&(l.clone(), r.clone())) {
            Some(&i) => out[i].2 += d,
            None => {
                at.insert((l.clone(), r.clone()), out.len());
                out.push((l, r, d));
            }
        }
    }
    out.retain(|r| r.2 != 0);
    out
}

/// Apply changes to one side's bucket for a key.
fn apply(side: &mut Side, key: &RowBytes, changes: &Changes) {
    if changes.is_empty() {
        return;
    }
    let bucket = side.state.entry(key.clone()).or_default();
    let mut bytes = 0;
    for (row, d) in changes {
        bytes += bucket.apply(row, *d);
        side.rows = (side.rows as i64 + d).max(0) as u64;
    }
    if bucket.rows.is_empty() {
        side.state.remove(key);
        bytes -= state_bytes(key.len()) as i64;
    } else if bucket.rows.len() == changes.len() && bytes > 0 {
        bytes += state_bytes(key.len()) as i64;
    }
    side.bytes += bytes;
}

fn total(side: &Side, key: &RowBytes) -> i64 {
    side.state.get(key).map(|b| b.total).unwrap_or(0)
}

/// Emit the rows of `side` under `key` (as they are now), times `sign`,
/// placed on the left or right of the output.
fn emit_all(out: &mut Vec<OutRow>, side: &Side, key: &RowBytes, sign: i64, left: bool) {
    if let Some(b) = side.state.get(key) {
        for (row, n) in &b.rows {
            emit(out, row, n * sign, left);
        }
    }
}

fn emit_changes(out: &mut Vec<OutRow>, changes: &Changes, sign: i64, left: bool) {
    for (row, d) in changes {
        emit(out, row, d * sign, left);
    }
}

fn emit(out: &mut Vec<OutRow>, row: &RowBytes, d: i64, left: bool) {
    if d == 0 {
        return;
    }
    if left {
        out.push((Some(row.clone()), None, d));
    } else {
        out.push((None, Some(row.clone()), d));
    }
}

/// Rows of one side that are output while the other side's count for the
/// key is zero (`when_empty`) or positive: given the other side's count
/// before and after, and this side's changes (this side already updated).
fn conditional(
    out: &mut Vec<OutRow>,
    this: &Side,
    key: &RowBytes,
    changes: &Changes,
    (other_before, other_after): (i64, i64),
    when_empty: bool,
    left: bool,
) {
    let on_before = (other_before == 0) == when_empty;
    let on_after = (other_after == 0) == when_empty;
    match (on_before, on_after) {
        (true, true) => emit_changes(out, changes, 1, left),
        // Was output, no longer: retract the old rows (= new − changes).
        (true, false) => {
            emit_all(out, this, key, -1, left);
            emit_changes(out, changes, 1, left);
        }
        (false, true) => emit_all(out, this, key, 1, left),
        (false, false) => {}
    }
}

impl Operator for Join {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
        let mut inputs = inputs.into_iter();
        let (Some(dl), Some(dr), None) = (inputs.next(), inputs.next(), inputs.next()) else {
            return Err(DataflowError::Other(
                "a join was built with another number of inputs".into(),
            ));
        };
        self.counts.rows_in += (dl.len() + dr.len()) as u64;
        let timed = match &self.trim {
            Some(t) => (
                self.timed(&self.left, &dl, t.left_time)?,
                self.timed(&self.right, &dr, t.right_time)?,
            ),
            None => (vec![], vec![]),
        };
        if dl.is_empty() && dr.is_empty() {
            self.trim(timed.0, timed.1);
            return Ok(Delta::empty(self.schema()));
        }
        let mut groups: AHashMap<RowBytes, (Changes, Changes)> = AHashMap::new();
        let mut null_left = Vec::new();
        let mut null_right = Vec::new();
        self.group(&self.left, &dl, &mut groups, true, &mut null_left)?;
        self.group(&self.right, &dr, &mut groups, false, &mut null_right)?;
        if self.lookup {
            return self.lookup_step(&groups, &null_left);
        }

        let kind = self.kind;
        let mut out: Vec<OutRow> = Vec::new();
        if matches!(kind, JoinType::Left | JoinType::Full | JoinType::LeftAnti) {
            emit_changes(&mut out, &null_left, 1, true);
        }
        if matches!(kind, JoinType::Right | JoinType::Full | JoinType::RightAnti) {
            emit_changes(&mut out, &null_right, 1, false);
        }
        let pairs = matches!(
            kind,
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        );
        let residual = self.residual();
        for (key, (lc, rc)) in &groups {
            if residual {
                let before = self.key_output(key)?;
                apply(&mut self.left, key, lc);
                apply(&mut self.right, key, rc);
                out.extend(before.into_iter().map(|(l, r, d)| (l, r, -d)));
                out.extend(self.key_output(key)?);
                continue;
            }
            let l_before = total(&self.left, key);
            let r_before = total(&self.right, key);
            if pairs && !lc.is_empty() {
                // ΔL ⋈ R_old
                if let Some(rb) = self.right.state.get(key) {
                    for (l, d) in lc {
                        for (r, c) in &rb.rows {
                            out.push((Some(l.clone()), Some(r.clone()), d * c));
                        }
                    }
                }
            }
            apply(&mut self.left, key, lc);
            if pairs && !rc.is_empty() {
                // L_new ⋈ ΔR
                if let Some(lb) = self.left.state.get(key) {
                    for (r, d) in rc {
                        for (l, c) in &lb.rows {
                            out.push((Some(l.clone()), Some(r.clone()), c * d));
                        }
                    }
                }
            }
            apply(&mut self.right, key, rc);
            let l_after = total(&self.left, key);
            let r_after = total(&self.right, key);
            let (left, right) = (&self.left, &self.right);
            match kind {
                JoinType::Left | JoinType::Full | JoinType::LeftAnti => {
                    conditional(&mut out, left, key, lc, (r_before, r_after), true, true)
                }
                JoinType::LeftSemi => {
                    conditional(&mut out, left, key, lc, (r_before, r_after), false, true)
                }
                _ => {}
            }
            match kind {
                JoinType::Right | JoinType::Full | JoinType::RightAnti => {
                    conditional(&mut out, right, key, rc, (l_before, l_after), true, false)
                }
                JoinType::RightSemi => {
                    conditional(&mut out, right, key, rc, (l_before, l_after), false, false)
                }
                _ => {}
            }
        }
        self.trim(timed.0, timed.1);
        let delta = self.build(out)?;
        self.counts.rows_out += delta.len() as u64;
        Ok(delta)
    }

    fn advance(&mut self, inputs: &[Option<i64>]) {
        if let Some(t) = self.trim.as_mut()
            && let Some(m) = super::least(inputs)
        {
            t.mark = Some(t.mark.map_or(m, |old| old.max(m)));
        }
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self
            .counts
            .stats(format!("{} join", self.kind).to_lowercase());
        s.state_rows = self.left.rows + self.right.rows;
        s.state_bytes = (self.left.bytes + self.right.bytes).max(0) as u64;
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("join");
        self.left.save(w);
        self.right.save(w);
        if let Some(t) = &self.trim {
            w.tag("join window");
            w.bool(t.mark.is_some());
            w.i64(t.mark.unwrap_or(0));
            for set in [&t.left, &t.right] {
                w.u64(set.len() as u64);
                for (time, key, row) in set {
                    w.i64(*time);
                    w.bytes(key);
                    w.bytes(row);
                }
            }
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("join")?;
        self.left.restore(r)?;
        self.right.restore(r)?;
        if let Some(t) = self.trim.as_mut() {
            r.tag("join window")?;
            let known = r.bool()?;
            let mark = r.i64()?;
            t.mark = known.then_some(mark);
            for set in [&mut t.left, &mut t.right] {
                set.clear();
                for _ in 0..r.len(24)? {
                    let time = r.i64()?;
                    let key: RowBytes = r.bytes()?.into();
                    set.insert((time, key, r.bytes()?.into()));
                }
            }
        }
        Ok(())
    }
}
