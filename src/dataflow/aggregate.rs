//! Group-by aggregate with retraction.
//!
//! State: a hash map from the group key (row bytes) to the group's input row
//! count and one retractable accumulator per aggregate. A change batch
//! touches some groups; for each touched group the operator emits the
//! retraction of its old output row and the insertion of its new one
//! (nothing when they are equal). A group whose input count drops to zero
//! disappears. Without GROUP BY there is exactly one group, present even
//! over empty input (`count(*) = 0`, `sum = NULL`), as in SQL.
//!
//! Windows closed by event time ([`WindowClose`]): when one group-key
//! column is a window's end, the window closes once the input's watermark
//! has passed its end plus the grace period. A closed window's groups are
//! dropped from the state (their rows stay in the output: nothing is
//! retracted), rows for a window already closed are late (counted in
//! `late_rows`, dropped), and with `emit_final` a group's row is emitted
//! once, when its window closes, instead of at every change (ksqlDB's
//! EMIT FINAL, RisingWave's EMIT ON WINDOW CLOSE). Lateness is judged
//! against the watermark as the tick began: rows read in the tick that
//! moves the watermark past their window still count, then close with it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::accumulate::{Accumulator, AccumulatorFactory};
use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, Encoded, RowBytes, state_bytes};
use super::{Counts, DataflowError, Delta, Operator, OperatorStats, Result, StepContext, batch_of};

/// One aggregate of the operator: its factory, argument expressions and
/// optional FILTER (WHERE …).
pub struct AggregateSpec {
    pub factory: AccumulatorFactory,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// How windows close: a view's windowing, from its WINDOW clause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowClose {
    /// How long past its end a window still takes rows (microseconds).
    pub grace_us: i64,
    /// Emit a window's rows once, when it closes.
    #[serde(default)]
    pub emit_final: bool,
    /// The windows' size and advance (microseconds; equal for tumbling
    /// windows), when they are over the streams' event time: each stream
    /// then drops a row whose every window had closed by the stream time
    /// at that row (see `source.rs`). 0: not known.
    #[serde(default)]
    pub size_us: i64,
    #[serde(default)]
    pub advance_us: i64,
}

/// The state of closing windows.
struct Closing {
    /// Which group key is the window's end.
    end_key: usize,
    close: WindowClose,
    /// The input's watermark as of the last step, and as of this one.
    mark: Option<i64>,
    next: Option<i64>,
    /// Open windows' groups, by the time they close.
    schedule: std::collections::BTreeSet<(i64, RowBytes)>,
    late: u64,
}

impl Closing {
    /// Whether a window ending at `end` had closed by watermark `mark`.
    fn closed(&self, end: i64, mark: Option<i64>) -> bool {
        mark.is_some_and(|m| end.saturating_add(self.close.grace_us) <= m)
    }
}

struct Group {
    rows: i64,
    accs: Vec<Box<dyn Accumulator>>,
    /// While a step touches the group: its output before the step (None:
    /// it had none). Kept here, not in a map of touched keys, so a row of
    /// the change costs one hash lookup.
    before: Option<Option<Output>>,
}

/// A group's output row, or the error computing it.
type Output = std::result::Result<Vec<ScalarValue>, super::RowError>;

/// Per aggregate: its arguments, FILTER mask and argument encoding.
pub(super) type Arguments = (
    Vec<Vec<ArrayRef>>,
    Vec<Option<BooleanArray>>,
    Vec<Option<Encoded>>,
);

/// The aggregates' arguments, FILTER masks and encodings over `batch`
/// (also the session operator's).
pub(super) fn arguments(aggs: &[AggregateSpec], batch: &RecordBatch) -> Result<Arguments> {
    let n = batch.num_rows();
    let mut args: Vec<Vec<ArrayRef>> = Vec::with_capacity(aggs.len());
    let mut filters: Vec<Option<BooleanArray>> = Vec::with_capacity(aggs.len());
    let mut encoded = Vec::with_capacity(aggs.len());
    for spec in aggs {
        let a = spec
            .args
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        encoded.push(spec.factory.encode(&a)?);
        args.push(a);
        filters.push(match &spec.filter {
            None => None,
            Some(f) => {
                let m = f.evaluate(batch)?.into_array(n)?;
                Some(
                    m.as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| DataflowError::Other("FILTER is not boolean".into()))?
                        .clone(),
                )
            }
        });
    }
    Ok((args, filters, encoded))
}

/// What [`Aggregate::evaluate`] gives for a batch.
type Evaluated = (
    Option<Encoded>,
    Vec<Vec<ArrayRef>>,
    Vec<Option<BooleanArray>>,
    Vec<Option<Encoded>>,
);

/// Groups by key bytes; hashbrown for `entry_ref` (one lookup per row,
/// found or inserted, without allocating the key when found).
type Groups = hashbrown::HashMap<RowBytes, Group, ahash::RandomState>;

pub struct Aggregate {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: Codec,
    aggs: Vec<AggregateSpec>,
    schema: SchemaRef,
    groups: Groups,
    global: bool,
    started: bool,
    counts: Counts,
    key_bytes: u64,
    closing: Option<Closing>,
}

fn new_group(aggs: &[AggregateSpec]) -> Group {
    Group {
        rows: 0,
        accs: aggs.iter().map(|a| a.factory.create()).collect(),
        before: None,
    }
}

impl Aggregate {
    pub fn new(
        in_schema: SchemaRef,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        aggs: Vec<AggregateSpec>,
        schema: SchemaRef,
    ) -> Result<Aggregate> {
        let key_types = keys
            .iter()
            .map(|k| k.data_type(&in_schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let global = keys.is_empty();
        Ok(Aggregate {
            key_codec: Codec::new(&key_types)?,
            keys,
            aggs,
            schema,
            groups: Groups::default(),
            global,
            started: false,
            counts: Counts::default(),
            key_bytes: 0,
            closing: None,
        })
    }

    /// Close windows by event time: group key `end_key` is the window's
    /// end (a timestamp).
    pub fn closing(mut self, end_key: usize, close: WindowClose) -> Aggregate {
        self.closing = Some(Closing {
            end_key,
            close,
            mark: None,
            next: None,
            schedule: Default::default(),
            late: 0,
        });
        self
    }

    /// Close the windows the input's watermark has passed (end plus
    /// grace): their groups leave the state; under `emit_final` their rows
    /// are emitted now.
    fn close_windows(
        &mut self,
        out: &mut Vec<(RowBytes, Vec<ScalarValue>, i64)>,
        cx: &mut StepContext<'_>,
    ) {
        let Some(c) = self.closing.as_mut() else {
            return;
        };
        if let Some(n) = c.next {
            c.mark = Some(c.mark.map_or(n, |m| m.max(n)));
        }
        while let Some((end, _)) = c.schedule.first() {
            if !c.closed(*end, c.mark) {
                break;
            }
            let Some((_, key)) = c.schedule.pop_first() else {
                break;
            };
            let Some(g) = self.groups.remove(&key) else {
                continue; // the group went away before its window closed
            };
            self.key_bytes = self.key_bytes.saturating_sub(state_bytes(key.len()));
            if c.close.emit_final && g.rows > 0 {
                match Self::output(&g) {
                    Ok(row) => out.push((key, row, 1)),
                    Err(e) => cx.errors.push((e, 1)),
                }
            }
        }
    }

    /// The window ends of `batch`'s rows, in microseconds.
    fn window_ends(&self, batch: &RecordBatch) -> Result<Option<Vec<i64>>> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
        let Some(c) = &self.closing else {
            return Ok(None);
        };
        let ends = self.keys[c.end_key]
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let ends = datafusion::arrow::compute::cast(
            &ends,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let ends = ends.as_primitive::<TimestampMicrosecondType>();
        // A NULL end (a NULL time) is never closed.
        Ok(Some(
            (0..ends.len())
                .map(|i| {
                    if ends.is_valid(i) {
                        ends.value(i)
                    } else {
                        i64::MAX
                    }
                })
                .collect(),
        ))
    }

    fn new_group(&self) -> Group {
        new_group(&self.aggs)
    }

    fn values(group: &Group) -> Result<Vec<ScalarValue>> {
        group.accs.iter().map(|a| a.value()).collect()
    }

    fn output(group: &Group) -> Output {
        Self::values(group).map_err(|e| e.row_error())
    }

    /// Group keys, then per aggregate its arguments, FILTER mask and
    /// argument encoding, for every row of `batch`.
    fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let n = batch.num_rows();
        let key_rows = if self.keys.is_empty() {
            None
        } else {
            let cols = self
                .keys
                .iter()
                .map(|k| k.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            Some(self.key_codec.encode(&cols)?)
        };
        let (args, filters, encoded) = arguments(&self.aggs, batch)?;
        Ok((key_rows, args, filters, encoded))
    }

    /// Output rows: group keys (row bytes) and aggregate values, with diffs.
    fn build(&self, rows: Vec<(RowBytes, Vec<ScalarValue>, i64)>) -> Result<Delta> {
        if rows.is_empty() {
            return Ok(Delta::empty(self.schema()));
        }
        let n = rows.len();
        let mut columns: Vec<ArrayRef> = if self.keys.is_empty() {
            vec![]
        } else {
            self.key_codec.decode(rows.iter().map(|r| r.0.as_ref()))?
        };
        for i in 0..self.aggs.len() {
            columns.push(ScalarValue::iter_to_array(
                rows.iter().map(|r| r.1[i].clone()),
            )?);
        }
        let batch = batch_of(&self.schema, columns, n)?;
        Ok(Delta::new(batch, rows.into_iter().map(|r| r.2).collect()))
    }
}

impl Operator for Aggregate {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let input = super::one(inputs)?;
        self.counts.rows_in += input.len() as u64;
        let mut out: Vec<(RowBytes, Vec<ScalarValue>, i64)> = Vec::new();
        if self.global && !self.started {
            let g = self.new_group();
            out.push((Box::new([]), Self::values(&g)?, 1));
            self.groups.insert(Box::new([]), g);
        }
        self.started = true;
        if input.is_empty() {
            self.counts.rows_out += out.len() as u64;
            return self.build(out);
        }
        // A row whose key, argument or FILTER fails to evaluate is an error
        // of the view, not part of any group.
        let evaluated = match self.evaluate(&input.batch) {
            Ok(e) => (e, input),
            Err(_) => {
                let good = super::without_failing(input, &mut cx.errors, |row| {
                    self.evaluate(row).map(|_| ())
                })?;
                (self.evaluate(&good.batch)?, good)
            }
        };
        let ((key_rows, args, filters, encoded), input) = evaluated;
        let n = input.len();
        let ends = self.window_ends(&input.batch)?;

        // Each touched group keeps its old output from its first touch;
        // `touched` borrows the batch's encoded keys (no allocation).
        let mut touched: Vec<&[u8]> = Vec::new();
        for row in 0..n {
            let diff = input.diffs[row];
            let key: &[u8] = match &key_rows {
                Some(r) => r.row(row),
                None => &[],
            };
            if let (Some(c), Some(ends)) = (self.closing.as_mut(), &ends)
                && c.closed(ends[row], c.mark)
            {
                c.late += 1;
                continue;
            }
            let group = match self.groups.entry_ref(key) {
                hashbrown::hash_map::EntryRef::Occupied(e) => e.into_mut(),
                hashbrown::hash_map::EntryRef::Vacant(e) => {
                    self.key_bytes += state_bytes(key.len());
                    if let (Some(c), Some(ends)) = (self.closing.as_mut(), &ends) {
                        c.schedule.insert((ends[row], key.into()));
                    }
                    e.insert(new_group(&self.aggs))
                }
            };
            if group.before.is_none() {
                let old = if group.rows > 0 || self.global {
                    Some(Self::output(group))
                } else {
                    None
                };
                group.before = Some(old);
                touched.push(key);
            }
            group.rows += diff;
            for (i, acc) in group.accs.iter_mut().enumerate() {
                if let Some(f) = &filters[i]
                    && !(f.is_valid(row) && f.value(row))
                {
                    continue;
                }
                let value = encoded[i].as_ref().map(|r| r.row(row));
                acc.update(&args[i], row, value, diff)?;
            }
        }

        for key in touched {
            let Some(g) = self.groups.get_mut(key) else {
                continue;
            };
            let old = g.before.take().flatten();
            let new = if g.rows > 0 || self.global {
                Some(Self::output(g))
            } else {
                None
            };
            if new.is_none() && !self.global {
                self.key_bytes = self.key_bytes.saturating_sub(state_bytes(key.len()));
                self.groups.remove(key);
            }
            if old == new || self.closing.as_ref().is_some_and(|c| c.close.emit_final) {
                continue;
            }
            // A group whose value cannot be computed (an overflowing
            // SUM) is an error of the view instead of a row, until a
            // change brings it back in range.
            match old {
                Some(Ok(old)) => out.push((key.into(), old, -1)),
                Some(Err(e)) => cx.errors.push((e, -1)),
                None => {}
            }
            match new {
                Some(Ok(new)) => out.push((key.into(), new, 1)),
                Some(Err(e)) => cx.errors.push((e, 1)),
                None => {}
            }
        }
        self.close_windows(&mut out, cx);
        self.counts.rows_out += out.len() as u64;
        self.build(out)
    }

    fn advance(&mut self, inputs: &[Option<i64>]) {
        if let Some(c) = self.closing.as_mut() {
            c.next = super::least(inputs);
        }
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let acc_bytes: usize = self
            .groups
            .values()
            .flat_map(|g| g.accs.iter().map(|a| a.size()))
            .sum();
        let mut s = self.counts.stats("aggregate");
        s.state_rows = self.groups.len() as u64;
        s.state_bytes = self.key_bytes + acc_bytes as u64;
        if let Some(c) = &self.closing {
            s.late = c.late;
            s.state_bytes += c
                .schedule
                .iter()
                .map(|(_, k)| state_bytes(k.len()))
                .sum::<u64>();
        }
        out.push(s);
    }

    fn save(&self, w: &mut Writer) {
        w.tag("aggregate");
        w.bool(self.started);
        w.u64(self.groups.len() as u64);
        for (key, g) in &self.groups {
            w.bytes(key);
            w.i64(g.rows);
            for a in &g.accs {
                a.save(w);
            }
        }
        if let Some(c) = &self.closing {
            w.tag("closing");
            w.bool(c.mark.is_some());
            w.i64(c.mark.unwrap_or(0));
            w.u64(c.late);
            w.u64(c.schedule.len() as u64);
            for (end, key) in &c.schedule {
                w.i64(*end);
                w.bytes(key);
            }
        }
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("aggregate")?;
        self.started = r.bool()?;
        let n = r.len(16)?;
        self.groups = Groups::with_capacity_and_hasher(n, Default::default());
        self.key_bytes = 0;
        for _ in 0..n {
            let key: RowBytes = r.bytes()?.into();
            let mut g = new_group(&self.aggs);
            g.rows = r.i64()?;
            for a in &mut g.accs {
                a.restore(r)?;
            }
            self.key_bytes += state_bytes(key.len());
            self.groups.insert(key, g);
        }
        if let Some(c) = self.closing.as_mut() {
            r.tag("closing")?;
            let known = r.bool()?;
            let mark = r.i64()?;
            c.mark = known.then_some(mark);
            c.late = r.u64()?;
            c.schedule.clear();
            for _ in 0..r.len(16)? {
                let end = r.i64()?;
                c.schedule.insert((end, r.bytes()?.into()));
            }
        }
        Ok(())
    }
}
