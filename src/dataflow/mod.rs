//! Incremental dataflow: operators over change batches.
//!
//! The unit of change is an update `(row, diff)`: +1 inserts a row, −1
//! retracts one; an update is a retraction plus an insertion. Physically a
//! [`Delta`] is an Arrow `RecordBatch` plus one diff per row.
//!
//! A dataflow is a tree of [`Node`]s lowered from a DataFusion logical plan
//! (`lower.rs`). Each tick, the engine calls `step` on the root, which steps
//! its children and turns their deltas into its own: the work is
//! proportional to the change, never to the size of the state. Leaves read
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
pub mod index;
pub mod join;
pub mod lower;
pub mod map;
pub mod rows;
pub mod runtime;
pub mod source;
pub mod temporal;
pub mod topk;
pub mod union;

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
}

/// One incremental operator.
pub trait Node: Send {
    /// The schema of the deltas `step` returns.
    fn schema(&self) -> SchemaRef;

    /// Advance one tick: the change of this operator's output.
    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<Delta>;

    /// This operator's counters, then its inputs' (pre-order).
    fn stats(&self, out: &mut Vec<OperatorStats>);

    /// Where a stream leaf is, for backfill progress: (read, end) records.
    fn progress(&self, _out: &mut Vec<(String, i64, i64)>) {}

    /// Write this operator's state, then its inputs' (pre-order), for a
    /// checkpoint taken between ticks.
    fn save(&self, w: &mut Writer);

    /// Take back the state `save` wrote, into an operator lowered from the
    /// same plan that has not stepped yet. On error the operator is left
    /// half-restored and must be discarded.
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()>;
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
