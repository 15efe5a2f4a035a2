//! Tables and materialized views as DataFusion sees them: a read of their
//! arranged state in the dataflow runtime (`dataflow::index`) as of the
//! start of the query reading them, taken without waiting for a tick.
//!
//! Predicates DataFusion offers the scan choose how much is read: equality
//! (`=`, `IN (…)`) on the leading columns of an arrangement — every column
//! in order, a view's GROUP BY key, a table's PRIMARY KEY — and a range on
//! the next column are answered by lookups in the arrangement; anything
//! else reads every row. DataFusion still applies every predicate after the
//! scan (they are pushed down as `Inexact`), so a lookup only has to return
//! a superset of the matching rows.

use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::dataflow::DataflowError;
use crate::dataflow::index::{Probe, Snapshot, exact_type};
use crate::dataflow::runtime::Dataflows;

/// At most this many lookups for one scan (`IN` lists multiply): past it,
/// reading everything is as cheap.
const MAX_PROBES: usize = 1024;

/// A materialized view (or a table) as DataFusion sees it: a read of its
/// state as of the last epoch published before the query started (every
/// scan of one query passes the same start, so they agree).
pub struct IndexTable {
    name: String,
    schema: SchemaRef,
    dataflows: Arc<Dataflows>,
}

impl IndexTable {
    pub fn new(name: &str, schema: SchemaRef, dataflows: Arc<Dataflows>) -> IndexTable {
        IndexTable {
            name: name.to_string(),
            schema,
            dataflows,
        }
    }
}

impl fmt::Debug for IndexTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IndexTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for IndexTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let as_of = state.execution_props().query_execution_start_time;
        let batch = self
            .dataflows
            .snapshot(&self.name, as_of)
            .and_then(|s| {
                let b = read(&s, filters, limit)?;
                crate::dataflow::with_schema(&b, &self.schema)
            })
            .map_err(|e| match e {
                // A view in an error state: its error, with its SQLSTATE.
                DataflowError::Row(e) => DataFusionError::External(Box::new(e)),
                e => DataFusionError::Execution(e.to_string()),
            })?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// What `filters` allow reading of `s`: lookups when they bind an
/// arrangement's leading columns, else every row (the first `limit` when
/// DataFusion says that is all it needs).
fn read(
    s: &Snapshot,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<datafusion::arrow::array::RecordBatch, DataflowError> {
    if let Some(probes) = plan_probes(s, filters) {
        return s.lookup(&probes);
    }
    match limit {
        Some(n) if filters.is_empty() => s.first(n),
        _ => s.batch(),
    }
}

/// Per column: the values it must equal (any of), and bounds.
#[derive(Default)]
struct Constraint {
    eq: Option<Vec<ScalarValue>>,
    lower: Option<Bound<ScalarValue>>,
    upper: Option<Bound<ScalarValue>>,
}

/// The lookups answering `filters` on the best arrangement of `s`, or None
/// when no arrangement is bound by them.
pub(super) fn plan_probes(s: &Snapshot, filters: &[Expr]) -> Option<Vec<Probe>> {
    let schema = s.schema();
    let mut by_col: HashMap<usize, Constraint> = HashMap::new();
    for f in filters {
        for conjunct in split_conjunction(f) {
            constrain(conjunct, &schema, &mut by_col);
        }
    }
    by_col.retain(|c, _| exact_type(schema.field(*c).data_type()));
    if by_col.is_empty() {
        return None;
    }
    // The arrangement binding the most leading columns (a range on the
    // next one counts half).
    let mut best: Option<(usize, usize, bool)> = None;
    for (path, columns) in s.paths().iter().enumerate() {
        let k = columns
            .iter()
            .take_while(|c| by_col.get(c).is_some_and(|x| x.eq.is_some()))
            .count();
        let ranged = columns.get(k).is_some_and(|c| {
            by_col
                .get(c)
                .is_some_and(|x| x.lower.is_some() || x.upper.is_some())
        });
        let score = 2 * k + usize::from(ranged);
        if score > 0 && best.is_none_or(|(_, bk, br)| score > 2 * bk + usize::from(br)) {
            best = Some((path, k, ranged));
        }
    }
    let (path, k, ranged) = best?;
    let columns = &s.paths()[path];
    let (lower, upper) = if ranged {
        let c = &by_col[&columns[k]];
        (
            c.lower.clone().unwrap_or(Bound::Unbounded),
            c.upper.clone().unwrap_or(Bound::Unbounded),
        )
    } else {
        (Bound::Unbounded, Bound::Unbounded)
    };
    // Every combination of the prefix columns' values.
    let mut prefixes: Vec<Vec<ScalarValue>> = vec![vec![]];
    for c in &columns[..k] {
        let values = by_col[c].eq.as_ref()?;
        if prefixes.len() * values.len() > MAX_PROBES {
            return None;
        }
        prefixes = prefixes
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    Some(
        prefixes
            .into_iter()
            .map(|prefix| Probe {
                path,
                prefix,
                lower: lower.clone(),
                upper: upper.clone(),
            })
            .collect(),
    )
}

/// Record what `e` says of one column, if it is a comparison of a column
/// with literals. Anything else says nothing (DataFusion applies it).
fn constrain(e: &Expr, schema: &SchemaRef, by_col: &mut HashMap<usize, Constraint>) {
    let column = |e: &Expr| match e {
        // A name two columns share is left alone.
        Expr::Column(c)
            if schema
                .fields()
                .iter()
                .filter(|f| f.name() == &c.name)
                .count()
                == 1 =>
        {
            schema.index_of(&c.name).ok()
        }
        _ => None,
    };
    let literal = |e: &Expr| match e {
        Expr::Literal(v, _) => Some(v.clone()),
        _ => None,
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, v, op) = match (column(left), literal(right), column(right), literal(left)) {
                (Some(c), Some(v), _, _) => (c, v, *op),
                (_, _, Some(c), Some(v)) => match op.swap() {
                    Some(op) => (c, v, op),
                    None => return,
                },
                _ => return,
            };
            let x = by_col.entry(c).or_default();
            match op {
                Operator::Eq if x.eq.is_none() => x.eq = Some(vec![v]),
                Operator::Gt if x.lower.is_none() => x.lower = Some(Bound::Excluded(v)),
                Operator::GtEq if x.lower.is_none() => x.lower = Some(Bound::Included(v)),
                Operator::Lt if x.upper.is_none() => x.upper = Some(Bound::Excluded(v)),
                Operator::LtEq if x.upper.is_none() => x.upper = Some(Bound::Included(v)),
                _ => {}
            }
        }
        Expr::InList(l) if !l.negated => {
            let Some(c) = column(&l.expr) else { return };
            let values: Option<Vec<ScalarValue>> = l.list.iter().map(literal).collect();
            if let Some(values) = values {
                let x = by_col.entry(c).or_default();
                if x.eq.is_none() {
                    x.eq = Some(values);
                }
            }
        }
        _ => {}
    }
}
