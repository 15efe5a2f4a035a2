//! Session windows: a group-by whose windows are sessions of activity per
//! key (ksqlDB's `WINDOW SESSION (30 SECONDS)`). A key's rows fall in one
//! session while each comes within the gap of another; a row that comes
//! within the gap of two sessions merges them. A session's window starts
//! at its first row's time and ends at its last's (ksqlDB's WINDOWSTART
//! and WINDOWEND).
//!
//! State per key: its open sessions by start, each with its end, its
//! rows (encoded, to merge it into another) and one accumulator per
//! aggregate. A row touches at most the sessions within the gap of its
//! time (found by a range over the starts); a merge replays the rows of
//! the smaller sessions into the largest one's accumulators, so a row is
//! replayed at most log(n) times over its session's life. Each change
//! retracts the output rows of the sessions it touched and inserts the
//! session they became.
//!
//! Closing (a view's [`WindowClose`]): a session closes once the input's
//! watermark has passed its end plus the gap plus the grace period (no row
//! can extend it any more): its state is freed, its row stays, and under
//! `emit_final` it is emitted only then. A row whose session (after
//! merging with the open ones) would already have closed by the watermark
//! as the tick began is late: counted and dropped. Streams only: a
//! retraction is an error of the view.
//!
//! The plan marks the window with [`SESSION_UDF`] (`engine/ksql_windows.rs`
//! writes it): `window_start` and `window_end` are the row's time there,
//! and this operator makes them the session's bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::accumulate::Accumulator;
use super::aggregate::{AggregateSpec, Arguments, WindowClose};
use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes, state_bytes};
use super::{Counts, DataflowError, Delta, Operator, OperatorStats, Result, StepContext, batch_of};

/// `eddy_session(time, gap_us)`: the row's time. It marks a session
/// window's bounds in a plan; the session operator gives them their values.
pub const SESSION_UDF: &str = "eddy_session";

#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionMark {
    signature: Signature,
}

impl ScalarUDFImpl for SessionMark {
    fn name(&self) -> &str {
        SESSION_UDF
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        args.args.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!("{SESSION_UDF} takes (time, gap)"))
        })
    }
}

/// The marker function, to register with a session context.
pub fn session_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SessionMark {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

struct Session {
    end: i64,
    rows: Vec<RowBytes>,
    accs: Vec<Box<dyn Accumulator>>,
    /// Its output is not in the view (new in this step, or retracted by
    /// it): a step's end inserts it.
    fresh: bool,
}

/// A key's open sessions by start.
type Sessions = BTreeMap<i64, Session>;

pub struct SessionAggregate {
    /// The group keys besides the window's bounds.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: Codec,
    /// The row's time (the plan's `window_start`).
    time: Arc<dyn PhysicalExpr>,
    /// Where the window's start and end are among the output's group keys.
    start_at: usize,
    end_at: usize,
    aggs: Vec<AggregateSpec>,
    in_schema: SchemaRef,
    row_codec: Codec,
    schema: SchemaRef,
    gap_us: i64,
    close: Option<WindowClose>,
    sessions: hashbrown::HashMap<RowBytes, Sessions, ahash::RandomState>,
    /// Open sessions by the time they close: (end, key, start); entries of
    /// sessions since changed are skipped when they come up.
    schedule: BTreeSet<(i64, RowBytes, i64)>,
    mark: Option<i64>,
    next: Option<i64>,
    late: u64,
    counts: Counts,
}

/// An output row: the key's bytes, the session's bounds, its values.
type Out = (RowBytes, i64, i64, Vec<ScalarValue>, i64);

impl SessionAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_schema: SchemaRef,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        time: Arc<dyn PhysicalExpr>,
        (start_at, end_at): (usize, usize),
        aggs: Vec<AggregateSpec>,
        schema: SchemaRef,
        gap_us: i64,
        close: Option<WindowClose>,
    ) -> Result<SessionAggregate> {
        let key_types = keys
            .iter()
            .map(|k| k.data_type(&in_schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(SessionAggregate {
            key_codec: Codec::new(&key_types)?,
            keys,
            time,
            start_at,
            end_at,
            aggs,
            row_codec: Codec::for_schema(&in_schema)?,
            in_schema,
            schema,
            gap_us,
            close,
            sessions: Default::default(),
            schedule: BTreeSet::new(),
            mark: None,
            next: None,
            late: 0,
            counts: Counts::default(),
        })
    }

    /// When a session ending at `end` closes.
    fn closes_at(&self, end: i64) -> Option<i64> {
        self.close
            .map(|c| end.saturating_add(self.gap_us).saturating_add(c.grace_us))
    }

    fn emit_final(&self) -> bool {
        self.close.is_some_and(|c| c.emit_final)
    }

    fn values(accs: &[Box<dyn Accumulator>]) -> Result<Vec<ScalarValue>> {
        accs.iter().map(|a| a.value()).collect()
    }

    /// Evaluate the aggregates' arguments, FILTERs and encodings over `batch`.
    fn arguments(&self, batch: &RecordBatch) -> Result<Arguments> {
        super::aggregate::arguments(&self.aggs, batch)
    }

    /// Apply rows `rows` of `batch` (evaluated as `arguments` gives) to
    /// `accs` with `diff`.
    fn update(
        &self,
        accs: &mut [Box<dyn Accumulator>],
        evaluated: &Arguments,
        row: usize,
    ) -> Result<()> {
        let (args, filters, encoded) = evaluated;
        for (i, acc) in accs.iter_mut().enumerate() {
            if let Some(f) = &filters[i]
                && !(f.is_valid(row) && f.value(row))
            {
                continue;
            }
            let value = encoded[i].as_ref().map(|r| r.row(row));
            acc.update(&args[i], row, value, 1)?;
        }
        Ok(())
    }

    /// Replay a session's stored rows into `accs`.
    fn replay(&self, accs: &mut [Box<dyn Accumulator>], rows: &[RowBytes]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self
            .row_codec
            .decode_batch(&self.in_schema, rows.iter().map(|r| r.as_ref()))?;
        let evaluated = self.arguments(&batch)?;
        for row in 0..batch.num_rows() {
            self.update(accs, &evaluated, row)?;
        }
        Ok(())
    }

    fn output(
        &self,
        key: &[u8],
        start: i64,
        s: &Session,
        diff: i64,
        out: &mut Vec<Out>,
        cx: &mut StepContext<'_>,
    ) {
        match Self::values(&s.accs) {
            Ok(v) => out.push((key.into(), start, s.end, v, diff)),
            Err(e) => cx.errors.push((e.row_error(), diff)),
        }
    }

    /// Output rows as a delta: keys, the bounds at their places, values.
    fn build(&self, rows: Vec<Out>) -> Result<Delta> {
        if rows.is_empty() {
            return Ok(Delta::empty(Arc::clone(&self.schema)));
        }
        let n = rows.len();
        let mut keys = self
            .key_codec
            .decode(rows.iter().map(|r| r.0.as_ref()))?
            .into_iter();
        let bound = |pick: fn(&Out) -> i64, at: usize| -> Result<ArrayRef> {
            let us: ArrayRef = Arc::new(
                rows.iter()
                    .map(|r| Some(pick(r)))
                    .collect::<datafusion::arrow::array::TimestampMicrosecondArray>(),
            );
            Ok(cast(&us, self.schema.field(at).data_type())?)
        };
        let n_keys = self.keys.len() + 2;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for at in 0..n_keys {
            if at == self.start_at {
                columns.push(bound(|r| r.1, at)?);
            } else if at == self.end_at {
                columns.push(bound(|r| r.2, at)?);
            } else {
                columns.push(
                    keys.next()
                        .ok_or_else(|| DataflowError::Other("session keys".into()))?,
                );
            }
        }
        for i in 0..self.aggs.len() {
            columns.push(ScalarValue::iter_to_array(
                rows.iter().map(|r| r.3[i].clone()),
            )?);
        }
        let batch = batch_of(&self.schema, columns, n)?;
        Ok(Delta::new(batch, rows.into_iter().map(|r| r.4).collect()))
    }

    /// Close the sessions the watermark has passed.
    fn close_sessions(&mut self, out: &mut Vec<Out>, cx: &mut StepContext<'_>) {
        if let Some(n) = self.next {
            self.mark = Some(self.mark.map_or(n, |m| m.max(n)));
        }
        let Some(mark) = self.mark else {
            return;
        };
        while let Some((at, _, _)) = self.schedule.first() {
            if *at > mark {
                break;
            }
            let Some((at, key, start)) = self.schedule.pop_first() else {
                break;
            };
            let (gap, grace) = (self.gap_us, self.close.map_or(0, |c| c.grace_us));
            let Some(map) = self.sessions.get_mut(&key) else {
                continue;
            };
            let current = map
                .get(&start)
                .map(|s| s.end.saturating_add(gap).saturating_add(grace));
            if current != Some(at) {
                continue; // the session changed since
            }
            let Some(s) = map.remove(&start) else {
                continue;
            };
            if map.is_empty() {
                self.sessions.remove(&key);
            }
            if self.emit_final() {
                self.output(&key, start, &s, 1, out, cx);
            }
        }
    }
}

impl Operator for SessionAggregate {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.counts.rows_in += input.len() as u64;
        let mut out: Vec<Out> = Vec::new();
        if !input.is_empty() {
            let input = match self.arguments(&input.batch) {
                Ok(_) => input,
                Err(_) => super::without_failing(input, &mut cx.errors, |row| {
                    self.arguments(row).map(|_| ())
                })?,
            };
            let n = input.len();
            let batch = &input.batch;
            let evaluated = self.arguments(batch)?;
            let key_cols = self
                .keys
                .iter()
                .map(|k| k.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let key_rows = self.key_codec.encode(&key_cols)?;
            let times = self.time.evaluate(batch)?.into_array(n)?;
            let times = cast(
                &cast(&times, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
                &DataType::Int64,
            )?;
            let times = times.as_primitive::<Int64Type>();
            let rows = self.row_codec.encode(batch.columns())?;
            let emit_changes = !self.emit_final();
            let mut touched: Vec<(RowBytes, i64)> = Vec::new();
            for row in 0..n {
                if input.diffs[row] < 0 {
                    cx.errors.push((
                        DataflowError::Unsupported(
                            "a retraction under a session window (sessions are over streams)"
                                .into(),
                        )
                        .row_error(),
                        1,
                    ));
                    continue;
                }
                if !times.is_valid(row) {
                    continue; // no time, no session (as ksqlDB skips it)
                }
                let t = times.value(row);
                let key = key_rows.row(row);
                let gap = self.gap_us;
                let mut map = self.sessions.remove(key).unwrap_or_default();
                // The open sessions within the gap of `t`.
                let near: Vec<i64> = map
                    .range(..=t.saturating_add(gap))
                    .rev()
                    .take_while(|(_, s)| s.end >= t.saturating_sub(gap))
                    .map(|(start, _)| *start)
                    .collect();
                let start = near.iter().copied().fold(t, i64::min);
                let end = near.iter().map(|s| map[s].end).fold(t, i64::max);
                if let (Some(at), Some(mark)) = (self.closes_at(end), self.mark)
                    && at <= mark
                {
                    self.late += 1;
                    if !map.is_empty() {
                        self.sessions.insert(key.into(), map);
                    }
                    continue;
                }
                // The largest session takes the others' rows.
                let mut merged: Vec<(i64, Session)> = near
                    .iter()
                    .filter_map(|s| map.remove(s).map(|x| (*s, x)))
                    .collect();
                merged.sort_by_key(|(_, s)| std::cmp::Reverse(s.rows.len()));
                let mut base = match merged.first() {
                    Some(_) => {
                        let (s0, b) = merged.remove(0);
                        if emit_changes && !b.fresh {
                            self.output(key, s0, &b, -1, &mut out, cx);
                        }
                        b
                    }
                    None => Session {
                        end: t,
                        rows: Vec::new(),
                        accs: self.aggs.iter().map(|a| a.factory.create()).collect(),
                        fresh: true,
                    },
                };
                base.fresh = true;
                for (s0, other) in merged {
                    if emit_changes && !other.fresh {
                        self.output(key, s0, &other, -1, &mut out, cx);
                    }
                    self.replay(&mut base.accs, &other.rows)?;
                    base.rows.extend(other.rows);
                }
                self.update(&mut base.accs, &evaluated, row)?;
                base.rows.push(rows.row(row).into());
                base.end = end;
                if let Some(at) = self.closes_at(end) {
                    self.schedule.insert((at, key.into(), start));
                }
                map.insert(start, base);
                self.sessions.insert(key.into(), map);
                touched.push((key.into(), start));
            }
            for (key, start) in touched {
                let Some(s) = self.sessions.get_mut(&key).and_then(|m| m.get_mut(&start)) else {
                    continue;
                };
                if !s.fresh {
                    continue;
                }
                s.fresh = false;
                if emit_changes {
                    let s = &self.sessions[&key][&start];
                    match Self::values(&s.accs) {
                        Ok(v) => out.push((key.clone(), start, s.end, v, 1)),
                        Err(e) => cx.errors.push((e.row_error(), 1)),
                    }
                }
            }
        }
        self.close_sessions(&mut out, cx);
        self.counts.rows_out += out.len() as u64;
        self.build(out)
    }

    fn advance(&mut self, inputs: &[Option<i64>]) {
        self.next = super::least(inputs);
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.counts.stats("session aggregate");
        let mut rows = 0u64;
        let mut bytes = 0u64;
        for (key, map) in &self.sessions {
            bytes += state_bytes(key.len());
            for sess in map.values() {
                rows += 1;
                bytes += sess.rows.iter().map(|r| state_bytes(r.len())).sum::<u64>();
                bytes += sess.accs.iter().map(|a| a.size() as u64).sum::<u64>();
            }
        }
        s.state_rows = rows;
        s.state_bytes = bytes;
        s.late = self.late;
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("session aggregate");
        w.bool(self.mark.is_some());
        w.i64(self.mark.unwrap_or(0));
        w.u64(self.late);
        w.u64(self.sessions.len() as u64);
        for (key, map) in &self.sessions {
            w.bytes(key);
            w.u64(map.len() as u64);
            for (start, s) in map {
                w.i64(*start);
                w.i64(s.end);
                w.u64(s.rows.len() as u64);
                for r in &s.rows {
                    w.bytes(r);
                }
                for a in &s.accs {
                    a.save(w);
                }
            }
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("session aggregate")?;
        let known = r.bool()?;
        let mark = r.i64()?;
        self.mark = known.then_some(mark);
        self.late = r.u64()?;
        self.sessions.clear();
        self.schedule.clear();
        for _ in 0..r.len(8)? {
            let key: RowBytes = r.bytes()?.into();
            let mut map = Sessions::new();
            for _ in 0..r.len(24)? {
                let start = r.i64()?;
                let end = r.i64()?;
                let mut rows = Vec::new();
                for _ in 0..r.len(8)? {
                    rows.push(r.bytes()?.into());
                }
                let mut accs: Vec<Box<dyn Accumulator>> =
                    self.aggs.iter().map(|a| a.factory.create()).collect();
                for a in &mut accs {
                    a.restore(r)?;
                }
                if let Some(at) = self.closes_at(end) {
                    self.schedule.insert((at, key.clone(), start));
                }
                map.insert(
                    start,
                    Session {
                        end,
                        rows,
                        accs,
                        fresh: false,
                    },
                );
            }
            self.sessions.insert(key, map);
        }
        Ok(())
    }
}
