//! Incremental dataflow: operators over change batches.
//!
//! The unit of change is an update `(row, diff)`: +1 inserts a row, −1
//! retracts one; an update is a retraction plus an insertion. Physically a
//! [`Delta`] is an Arrow `RecordBatch` plus one diff per row.
//!
//! A dataflow is a [`Flow`]: a tree of [`Operator`]s lowered from a
//! DataFusion logical plan (`lower.rs`). Each tick, the engine steps the
//! root flow, which steps the inputs first and hands each operator its
//! inputs' deltas and watermarks: the work is proportional to the change,
//! never to the size of the state. Leaves read
//! what is new in their input (a stream's topic, a table's or another view's
//! changes of this tick); the root's output is applied to the view's
//! [`index::Index`], which SELECT reads.
//!
//! Operators, one file each: `map` (filter and project with DataFusion
//! physical expressions), `aggregate` (group-by with retractable
//! accumulators in `accumulate`), `join` (inner, outer, semi, anti equi-joins
//! over arrangements of both sides), `distinct`, `union`, `topk`, and the
//! leaves in `source`.

pub mod accumulate;
pub mod aggregate;
pub mod checkpoint;
pub mod decode_errors;
pub mod distinct;
pub mod enumerate;
pub mod index;
pub mod join;
pub mod lower;
pub mod map;
pub mod rows;
pub mod runtime;
pub mod session;
pub mod sorted;
pub mod source;
pub mod temporal;
pub mod topk;
pub mod union;
pub mod unnest;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::log::LogStore;
use checkpoint::{Reader, Writer};
use decode_errors::DecodeErrors;

/// Why a dataflow could not be built or stepped.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A plan node (or expression) without an incremental operator.
    #[error("{0} is not supported in materialized views")]
    Unsupported(String),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// A checkpoint that cannot be restored (damaged, another build, or
    /// not the dataflow it was written by).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A row-level error of a view, reported by a read of it.
    #[error("{0}")]
    Row(RowError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = DataflowError> = std::result::Result<T, E>;

/// Rows with a diff each.
#[derive(Debug, Clone)]
pub struct Delta {
    pub batch: RecordBatch,
    pub diffs: Vec<i64>,
}

impl Delta {
    pub fn empty(schema: SchemaRef) -> Delta {
        Delta {
            batch: RecordBatch::new_empty(schema),
            diffs: Vec::new(),
        }
    }

    pub fn new(batch: RecordBatch, diffs: Vec<i64>) -> Delta {
        debug_assert_eq!(batch.num_rows(), diffs.len());
        Delta { batch, diffs }
    }

    /// Every row of `batch` inserted once.
    pub fn inserts(batch: RecordBatch) -> Delta {
        let n = batch.num_rows();
        Delta {
            batch,
            diffs: vec![1; n],
        }
    }

    pub fn len(&self) -> usize {
        self.diffs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }

    pub fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    /// Concatenate deltas of one schema.
    pub fn concat(schema: &SchemaRef, parts: &[Delta]) -> Result<Delta> {
        let parts: Vec<&Delta> = parts.iter().filter(|d| !d.is_empty()).collect();
        match parts.len() {
            0 => Ok(Delta::empty(Arc::clone(schema))),
            1 => Ok(Delta::new(
                with_schema(&parts[0].batch, schema)?,
                parts[0].diffs.clone(),
            )),
            _ => {
                let batches: Vec<RecordBatch> = parts
                    .iter()
                    .map(|d| with_schema(&d.batch, schema))
                    .collect::<Result<_>>()?;
                let batch = concat_batches(schema, &batches)?;
                let diffs = parts.iter().flat_map(|d| d.diffs.iter().copied()).collect();
                Ok(Delta::new(batch, diffs))
            }
        }
    }
}

/// The batch's columns under another schema of the same types (operators
/// rename columns freely; names do not matter inside a dataflow).
pub fn with_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    batch_of(schema, batch.columns().to_vec(), batch.num_rows())
}

/// A batch of `rows` rows under `schema` from `columns`, each cast to its
/// field's type where it differs (accumulators and row decoding may give a
/// related type than the one the planner declared).
pub fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                datafusion::arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// `schema` with every field nullable: dataflow batches are built from
/// retractions and outer-join padding, so declared non-nullness from the
/// planner is not something to validate against.
pub fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A row-level evaluation error (division by zero, overflow, a cast that
/// fails) with its SQLSTATE. As in Materialize, a view keeps the multiset
/// of its errors beside its rows: an input row that raises adds its error
/// (diff +1), its retraction takes it away (−1, the same error again), and
/// the view reads as an error while any is left.
pub type RowError = crate::sqlstate::Coded;

impl DataflowError {
    /// This error as a row error: its SQLSTATE and message.
    pub fn row_error(&self) -> RowError {
        let code = match self {
            DataflowError::Row(e) => return e.clone(),
            DataflowError::DataFusion(e) => crate::sqlstate::datafusion_sqlstate(e),
            DataflowError::Arrow(e) => crate::sqlstate::arrow_sqlstate(e),
            DataflowError::Unsupported(_) => "0A000",
            _ => "XX000",
        };
        RowError {
            code,
            message: self.to_string(),
        }
    }
}

/// `input` without the rows `check` fails on: each of those becomes its
/// error, with the row's diff, in `errors`. `check` runs once over the
/// whole batch, and row by row only when that fails, so a change without
/// bad rows costs one evaluation.
pub fn without_failing(
    input: Delta,
    errors: &mut Vec<(RowError, i64)>,
    mut check: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<Delta> {
    if input.is_empty() || check(&input.batch).is_ok() {
        return Ok(input);
    }
    let mut keep = Vec::with_capacity(input.len());
    for i in 0..input.len() {
        match check(&input.batch.slice(i, 1)) {
            Ok(()) => keep.push(true),
            Err(e) => {
                errors.push((e.row_error(), input.diffs[i]));
                keep.push(false);
            }
        }
    }
    let mask = datafusion::arrow::array::BooleanArray::from(keep);
    let batch = datafusion::arrow::compute::filter_record_batch(&input.batch, &mask)?;
    let diffs = input
        .diffs
        .iter()
        .zip(mask.values().iter())
        .filter(|(_, k)| *k)
        .map(|(d, _)| *d)
        .collect();
    Ok(Delta::new(batch, diffs))
}

/// Add `changes` to a multiset of errors, dropping those that reach zero.
pub fn apply_errors(
    errors: &mut std::collections::BTreeMap<RowError, i64>,
    changes: &[(RowError, i64)],
) {
    for (e, d) in changes {
        let n = errors.entry(e.clone()).or_insert(0);
        *n += d;
        if *n == 0 {
            errors.remove(e);
        }
    }
}

/// What a leaf needs during a tick.
pub struct StepContext<'a> {
    /// Row errors of tables and materialized views in this tick, by name
    /// (a view reading an errored view is in error too).
    pub error_changes: &'a HashMap<String, Arc<Vec<(RowError, i64)>>>,
    /// Row errors raised by this dataflow's operators during the step.
    pub errors: Vec<(RowError, i64)>,
    /// Changes of tables and materialized views in this tick, by name.
    pub changes: &'a HashMap<String, Arc<Delta>>,
    pub log: &'a Arc<dyn LogStore>,
    pub decode_errors: &'a Arc<DecodeErrors>,
    /// Most records a stream leaf reads in one tick (bounds tick latency
    /// during backfill).
    pub max_records: usize,
    /// Set by a leaf that stopped short of its input's end.
    pub more: bool,
    /// Rows the stream leaves read (state moved even if no output did).
    pub read: u64,
    /// The tick's time (microseconds since the epoch), what `mz_now()`
    /// stands for in temporal filters.
    pub now_us: i64,
}

/// Counters of one operator, for `SHOW DATAFLOWS`.
#[derive(Debug, Clone, Default)]
pub struct OperatorStats {
    pub operator: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub state_rows: u64,
    pub state_bytes: u64,
    pub errors: u64,
    /// Rows that came after their window closed (dropped).
    pub late: u64,
    /// The operator's output watermark (event time, microseconds).
    pub watermark: Option<i64>,
}

/// One incremental operator: its own state and nothing of the graph.
/// How operators connect, the order they step in, and the walks that
/// report, save and restore them are [`Flow`]'s, written once.
pub trait Operator: Send {
    /// The schema of the deltas `step` returns.
    fn schema(&self) -> SchemaRef;

    /// Advance one tick, given this tick's change of each input (in the
    /// order the operator was built with): the change of its output.
    fn step(&mut self, inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta>;

    /// This operator's counters (one entry).
    fn stats(&self, out: &mut Vec<OperatorStats>);

    /// Where a stream leaf is, for backfill progress: (read, end) records.
    fn progress(&self, _out: &mut Vec<(String, i64, i64)>) {}

    /// Write this operator's own state, for a checkpoint taken between
    /// ticks.
    fn save(&self, w: &mut Writer);

    /// Take back the state `save` wrote, into an operator lowered from the
    /// same plan that has not stepped yet. On error the operator is left
    /// half-restored and must be discarded.
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()>;

    /// Progress: the event time (microseconds) below which this operator's
    /// output will not change any more, given its inputs' after this tick
    /// (a leaf gets none and says its own). None: no such promise. The
    /// default, the least of the inputs', is right for an operator that
    /// neither holds rows back nor moves them in time; one that buffers
    /// (a window closing at its end) says less.
    fn watermark(&self, inputs: &[Option<i64>]) -> Option<i64> {
        least(inputs)
    }

    /// Told the inputs' watermarks after this tick, just before `step`
    /// (an operator that closes windows by event time needs them).
    fn advance(&mut self, _inputs: &[Option<i64>]) {}
}

/// The least watermark, None if any input has none (or there is none).
pub fn least(watermarks: &[Option<i64>]) -> Option<i64> {
    let mut out: Option<i64> = None;
    for w in watermarks {
        let w = (*w)?;
        out = Some(out.map_or(w, |o| o.min(w)));
    }
    out
}

/// A dataflow: an operator and the flows feeding it (a tree, as lowered
/// from a logical plan). It steps inputs before their reader, passes each
/// input's change and watermark on, and walks the operators for counters,
/// progress and checkpoints — in pre-order (an operator, then its inputs),
/// the order of the checkpoint file.
pub struct Flow {
    op: Box<dyn Operator>,
    inputs: Vec<Flow>,
    watermark: Option<i64>,
}

impl Flow {
    /// `op` reading `inputs`.
    pub fn new(op: impl Operator + 'static, inputs: Vec<Flow>) -> Flow {
        Flow {
            op: Box::new(op),
            inputs,
            watermark: None,
        }
    }

    /// A leaf: `op` reads the log or other relations itself.
    pub fn leaf(op: impl Operator + 'static) -> Flow {
        Flow::new(op, Vec::new())
    }

    /// `op` reading one input.
    pub fn unary(op: impl Operator + 'static, input: Flow) -> Flow {
        Flow::new(op, vec![input])
    }

    pub fn schema(&self) -> SchemaRef {
        self.op.schema()
    }

    /// Advance one tick: the change of the output.
    pub fn step(&mut self, cx: &mut StepContext<'_>) -> Result<Delta> {
        let mut deltas = Vec::with_capacity(self.inputs.len());
        let mut marks = Vec::with_capacity(self.inputs.len());
        for i in &mut self.inputs {
            deltas.push(i.step(cx)?);
            marks.push(i.watermark);
        }
        self.op.advance(&marks);
        let out = self.op.step(deltas, cx)?;
        // Watermarks only advance.
        self.watermark = match (self.watermark, self.op.watermark(&marks)) {
            (Some(old), Some(new)) => Some(old.max(new)),
            (_, new) => new,
        };
        Ok(out)
    }

    /// The output's watermark after the last step.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Counters of every operator, this one first (pre-order).
    pub fn stats(&self, out: &mut Vec<OperatorStats>) {
        let at = out.len();
        self.op.stats(out);
        if let Some(s) = out.get_mut(at) {
            s.watermark = self.watermark;
        }
        for i in &self.inputs {
            i.stats(out);
        }
    }

    /// Where the stream leaves are.
    pub fn progress(&self, out: &mut Vec<(String, i64, i64)>) {
        self.op.progress(out);
        for i in &self.inputs {
            i.progress(out);
        }
    }

    /// Every operator's state, pre-order.
    pub fn save(&self, w: &mut Writer) {
        self.op.save(w);
        for i in &self.inputs {
            i.save(w);
        }
    }

    /// Take back what `save` wrote.
    pub fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.op.restore(r)?;
        for i in &mut self.inputs {
            i.restore(r)?;
        }
        Ok(())
    }
}

/// The one input of a unary operator.
pub fn one(inputs: Vec<Delta>) -> Result<Delta> {
    let mut inputs = inputs.into_iter();
    match (inputs.next(), inputs.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(DataflowError::Other(
            "a unary operator was built with another number of inputs".into(),
        )),
    }
}

/// Rows in and out, for operators that keep no other counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub rows_in: u64,
    pub rows_out: u64,
    pub errors: u64,
}

impl Counts {
    pub fn stats(&self, operator: impl Into<String>) -> OperatorStats {
        OperatorStats {
            operator: operator.into(),
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            errors: self.errors,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::DataType;

    /// A leaf that emits one row (its value) per step and promises event
    /// time up to its `mark`.
    struct Leaf {
        value: i64,
        mark: Option<i64>,
        schema: SchemaRef,
    }

    impl Operator for Leaf {
        fn schema(&self) -> SchemaRef {
            Arc::clone(&self.schema)
        }
        fn step(&mut self, inputs: Vec<Delta>, _cx: &mut StepContext<'_>) -> Result<Delta> {
            assert!(inputs.is_empty(), "a leaf gets no inputs");
            let col = Arc::new(Int64Array::from(vec![self.value]));
            Ok(Delta::inserts(RecordBatch::try_new(
                self.schema(),
                vec![col],
            )?))
        }
        fn stats(&self, out: &mut Vec<OperatorStats>) {
            out.push(Counts::default().stats(format!("leaf {}", self.value)));
        }
        fn save(&self, w: &mut Writer) {
            w.tag("leaf");
            w.i64(self.value);
        }
        fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
            r.tag("leaf")?;
            self.value = r.i64()?;
            Ok(())
        }
        fn watermark(&self, _inputs: &[Option<i64>]) -> Option<i64> {
            self.mark
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
    }

    #[test]
    fn least_watermark_needs_every_input() {
        assert_eq!(least(&[Some(5), Some(3)]), Some(3));
        assert_eq!(least(&[Some(5), None]), None);
        assert_eq!(least(&[]), None);
    }

    #[test]
    fn a_flow_steps_inputs_in_order_and_carries_watermarks() {
        let dir = tempfile::tempdir().expect("dir");
        let log: Arc<dyn LogStore> = Log::open(dir.path(), Default::default()).expect("log");
        let errors = Arc::new(DecodeErrors::default());
        let (changes, error_changes) = (HashMap::new(), HashMap::new());
        let mut cx = StepContext {
            error_changes: &error_changes,
            errors: Vec::new(),
            changes: &changes,
            log: &log,
            decode_errors: &errors,
            max_records: 1,
            more: false,
            read: 0,
            now_us: 0,
        };
        let leaf = |value, mark| {
            Flow::leaf(Leaf {
                value,
                mark,
                schema: schema(),
            })
        };
        let mut flow = Flow::new(
            union::Union::new(2, schema()),
            vec![leaf(1, Some(30)), leaf(2, Some(20))],
        );
        let out = flow.step(&mut cx).expect("steps");
        let col = out.batch.column(0).as_any().downcast_ref::<Int64Array>();
        assert_eq!(col.expect("ints").values().to_vec(), vec![1, 2]);
        assert_eq!(flow.watermark(), Some(20), "the least of the inputs'");

        // Counters and checkpoints walk the operators in pre-order.
        let mut stats = Vec::new();
        flow.stats(&mut stats);
        let names: Vec<_> = stats.iter().map(|s| s.operator.as_str()).collect();
        assert_eq!(names, vec!["union", "leaf 1", "leaf 2"]);
        let mut w = Writer::default();
        flow.save(&mut w);
        let bytes = w.into_bytes();
        let mut again = Flow::new(
            union::Union::new(2, schema()),
            vec![leaf(0, None), leaf(0, None)],
        );
        again
            .restore(&mut Reader::new(&bytes, &*log))
            .expect("restores");
        let mut stats = Vec::new();
        again.stats(&mut stats);
        assert_eq!(stats[1].operator, "leaf 1");
        assert_eq!(stats[2].operator, "leaf 2");
        drop(cx);
        drop(log);
    }
}
