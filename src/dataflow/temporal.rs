//! Temporal filter: `WHERE mz_now() <= ts + INTERVAL '15 minutes'` keeps a
//! row only while the engine's time is inside the interval its conjuncts
//! bound (Materialize's temporal filters): a sliding window that drops old
//! rows by itself.
//!
//! Each bound is `mz_now()` compared with an expression over the row:
//! `mz_now() >= lo` (from `lo`), `> lo`, `<= hi` (until just after `hi`),
//! `< hi`, `= t`. A row whose interval holds the tick's time is emitted at
//! once, one whose interval starts later is scheduled, and either way its
//! retraction is scheduled for where the interval ends. Every tick emits
//! the scheduled changes that have come due, consolidated (a deletion that
//! arrives before its row's interval ends schedules the opposite change,
//! and the two cancel). State: the scheduled changes, in time order; rows
//! whose interval has passed leave no state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes, state_bytes};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext, batch_of};

/// The time temporal filters and `mz_now()` read, in microseconds since the
/// Unix epoch: the wall clock, or one a test sets.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn wall() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `us` until [`Clock::set_us`] moves it.
    pub fn manual(us: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(us))),
        }
    }

    pub fn now_us(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Acquire),
            None => chrono::Utc::now().timestamp_micros(),
        }
    }

    /// Move a manual clock (no effect on the wall clock).
    pub fn set_us(&self, us: i64) {
        if let Some(t) = &self.manual {
            t.store(us, Ordering::Release);
        }
    }

    /// Whether two handles read the same time source.
    pub fn same(&self, other: &Clock) -> bool {
        match (&self.manual, &other.manual) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// How one conjunct bounds the times a row is in the result, with `t` the
/// value of its expression: `mz_now() <op> t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `>= t`
    From,
    /// `> t`
    After,
    /// `<= t`
    Until,
    /// `< t`
    Before,
    /// `= t`
    At,
}

pub struct TemporalFilter {
    /// Each bound's expression gives a timestamp (microseconds).
    bounds: Vec<(Bound, Arc<dyn PhysicalExpr>)>,
    codec: Codec,
    schema: SchemaRef,
    /// Changes to emit when the time reaches the key.
    scheduled: BTreeMap<i64, Vec<(RowBytes, i64)>>,
    scheduled_rows: u64,
    scheduled_bytes: u64,
    counts: Counts,
}

impl TemporalFilter {
    pub fn new(
        schema: SchemaRef,
        bounds: Vec<(Bound, Arc<dyn PhysicalExpr>)>,
    ) -> Result<TemporalFilter> {
        Ok(TemporalFilter {
            bounds,
            codec: Codec::for_schema(&schema)?,
            schema,
            scheduled: BTreeMap::new(),
            scheduled_rows: 0,
            scheduled_bytes: 0,
            counts: Counts::default(),
        })
    }

    fn schedule(&mut self, at: i64, row: &[u8], diff: i64) {
        self.scheduled_rows += 1;
        self.scheduled_bytes += state_bytes(row.len()) + 16;
        self.scheduled
            .entry(at)
            .or_default()
            .push((row.into(), diff));
    }

    /// Each input row's interval `[from, until)` of times it is in the
    /// result; None where a bound is NULL (never in it).
    fn intervals(&self, input: &Delta) -> Result<Vec<Option<(i64, i64)>>> {
        let n = input.len();
        let mut out = vec![Some((i64::MIN, i64::MAX)); n];
        for (bound, expr) in &self.bounds {
            let v = expr.evaluate(&input.batch)?.into_array(n)?;
            let v = cast(&v, &DataType::Int64)?;
            let v = v.as_primitive::<Int64Type>();
            for (i, slot) in out.iter_mut().enumerate() {
                let Some((from, until)) = slot.as_mut() else {
                    continue;
                };
                if v.is_null(i) {
                    *slot = None;
                    continue;
                }
                let t = v.value(i);
                match bound {
                    Bound::From => *from = (*from).max(t),
                    Bound::After => *from = (*from).max(t.saturating_add(1)),
                    Bound::Until => *until = (*until).min(t.saturating_add(1)),
                    Bound::Before => *until = (*until).min(t),
                    Bound::At => {
                        *from = (*from).max(t);
                        *until = (*until).min(t.saturating_add(1));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Operator for TemporalFilter {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        let now = cx.now_us;
        self.counts.rows_in += input.len() as u64;
        let mut out: Vec<(RowBytes, i64)> = Vec::new();
        if !input.is_empty() {
            let intervals = self.intervals(&input)?;
            let rows = self.codec.encode(input.batch.columns())?;
            for (i, interval) in intervals.into_iter().enumerate() {
                let Some((from, until)) = interval else {
                    continue;
                };
                // Empty, or over already: no trace now or later.
                if from >= until || until <= now {
                    continue;
                }
                let row = rows.row(i);
                let diff = input.diffs[i];
                if from <= now {
                    out.push((row.into(), diff));
                } else {
                    self.schedule(from, row, diff);
                }
                if until != i64::MAX {
                    self.schedule(until, row, -diff);
                }
            }
        }
        // What has come due.
        let later = match now.checked_add(1) {
            Some(next) => self.scheduled.split_off(&next),
            None => BTreeMap::new(),
        };
        for (_, changes) in std::mem::replace(&mut self.scheduled, later) {
            for (row, diff) in changes {
                self.scheduled_rows = self.scheduled_rows.saturating_sub(1);
                self.scheduled_bytes = self
                    .scheduled_bytes
                    .saturating_sub(state_bytes(row.len()) + 16);
                out.push((row, diff));
            }
        }
        // Consolidate: equal rows' diffs summed, zeros dropped (a row and
        // its retraction due together must not reach the index as a
        // retraction of a missing row first).
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: Vec<(RowBytes, i64)> = Vec::with_capacity(out.len());
        for (row, diff) in out {
            match merged.last_mut() {
                Some((last, d)) if *last == row => *d += diff,
                _ => merged.push((row, diff)),
            }
        }
        merged.retain(|(_, d)| *d != 0);
        self.counts.rows_out += merged.len() as u64;
        if merged.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let columns = self.codec.decode(merged.iter().map(|(r, _)| r.as_ref()))?;
        let batch = batch_of(&self.schema, columns, merged.len())?;
        Ok(Delta::new(
            batch,
            merged.into_iter().map(|(_, d)| d).collect(),
        ))
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.counts.stats("temporal_filter");
        s.state_rows = self.scheduled_rows;
        s.state_bytes = self.scheduled_bytes;
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("temporal_filter");
        w.u64(self.scheduled.len() as u64);
        for (at, changes) in &self.scheduled {
            w.i64(*at);
            w.u64(changes.len() as u64);
            for (row, diff) in changes {
                w.bytes(row);
                w.i64(*diff);
            }
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("temporal_filter")?;
        self.scheduled.clear();
        self.scheduled_rows = 0;
        self.scheduled_bytes = 0;
        for _ in 0..r.len(16)? {
            let at = r.i64()?;
            for _ in 0..r.len(12)? {
                let row: RowBytes = r.bytes()?.into();
                let diff = r.i64()?;
                self.schedule(at, &row, diff);
            }
        }
        Ok(())
    }
}

/// `mz_now()`: the engine's time as a `timestamp` (UTC). In a materialized
/// view's WHERE it is a temporal filter (lowered to [`TemporalFilter`]); in
/// an ad-hoc query, the time the query runs. Volatile, so DataFusion never
/// folds it into a constant when planning a view.
pub fn mz_now_udf(clock: Clock) -> ScalarUDF {
    ScalarUDF::new_from_impl(MzNow {
        clock,
        signature: Signature::exact(vec![], Volatility::Volatile),
    })
}

/// The name `mz_now_udf` registers.
pub const MZ_NOW: &str = "mz_now";

#[derive(Debug)]
struct MzNow {
    clock: Clock,
    signature: Signature,
}

impl PartialEq for MzNow {
    fn eq(&self, other: &Self) -> bool {
        self.clock.same(&other.clock)
    }
}

impl Eq for MzNow {}

impl std::hash::Hash for MzNow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        MZ_NOW.hash(state);
    }
}

impl ScalarUDFImpl for MzNow {
    fn name(&self) -> &str {
        MZ_NOW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
            Some(self.clock.now_us()),
            None,
        )))
    }
}
