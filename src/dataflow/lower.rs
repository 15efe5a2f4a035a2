//! Lowering: a DataFusion logical plan (planned, type-coerced and optimized
//! against the catalog) into a tree of incremental operators. Views are
//! already inlined by DataFusion's planner; subqueries are decorrelated into
//! joins by its optimizer. A plan node or join type without an incremental
//! operator is [`DataflowError::Unsupported`], naming it.
//!
//! (About 980 lines: one recursive match over DataFusion's plan nodes; each
//! arm is short and they share one context.)

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DFSchema, NullEquality};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Distinct as LogicalDistinct, Expr, FetchType, JoinType, LogicalPlan, SkipType, SortExpr,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
// Deprecated in favour of a builder that DataFusion does not export yet.
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;

use super::accumulate::AccumulatorFactory;
use super::aggregate::{Aggregate, AggregateSpec, WindowClose};
use super::distinct::{Constant, Distinct};
use super::enumerate::Enumerate;
use super::join::{Join, JoinWindow};
use super::map::Map;
use super::session::{SESSION_UDF, SessionAggregate};
use super::source::{ChangesSource, LateRule, StreamSource};
use super::temporal::{Bound, MZ_NOW, TemporalFilter};
use super::topk::TopK;
use super::union::Union;
use super::unnest::Unnest;
use super::window::Window;
use super::{DataflowError, Delta, Flow, Result, nullable};
use crate::format::record::Layout;

/// A session window's gap (microseconds): the literal of the
/// `eddy_session(time, gap)` call that marks its bounds under `plan`.
fn session_gap(plan: &LogicalPlan) -> Option<i64> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut gap = None;
    let _ = plan.apply(|p| {
        p.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x
                    && f.func.name() == SESSION_UDF
                    && let Some(Expr::Literal(v, _)) = f.args.get(1)
                    && let Ok(datafusion::scalar::ScalarValue::Int64(Some(g))) =
                        v.cast_to(&datafusion::arrow::datatypes::DataType::Int64)
                {
                    gap = Some(g);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    gap
}

/// `mz_now()`, under any casts type coercion put around it.
fn is_mz_now(e: &Expr) -> bool {
    match e {
        Expr::ScalarFunction(f) => f.func.name() == MZ_NOW,
        Expr::Cast(c) => is_mz_now(&c.expr),
        Expr::TryCast(c) => is_mz_now(&c.expr),
        _ => false,
    }
}

fn has_mz_now(e: &Expr) -> bool {
    use datafusion::common::tree_node::TreeNode;
    e.exists(|x| Ok(matches!(x, Expr::ScalarFunction(f) if f.func.name() == MZ_NOW)))
        .unwrap_or(false)
}

/// `mz_now() <op> e` or `e <op> mz_now()`, with `e` free of `mz_now()`: the
/// bound it puts on the time a row is in the result, and `e`. `mz_now() ±
/// d` on one side moves `d` to the other (`at > now() - INTERVAL '1 hour'`
/// is `mz_now() < at + INTERVAL '1 hour'`, RisingWave's spelling).
fn temporal_bound(pred: &Expr) -> Option<(Bound, Expr)> {
    use datafusion::logical_expr::{BinaryExpr, Operator as Op};
    let Expr::BinaryExpr(b) = pred else {
        return None;
    };
    // mz_now(), or mz_now() ± d: the offset to move across, negated.
    let shifted = |e: &Expr| -> Option<Option<(Op, Expr)>> {
        if is_mz_now(e) {
            return Some(None);
        }
        match e {
            Expr::BinaryExpr(s)
                if matches!(s.op, Op::Plus | Op::Minus)
                    && is_mz_now(&s.left)
                    && !has_mz_now(&s.right) =>
            {
                let undo = if s.op == Op::Plus {
                    Op::Minus
                } else {
                    Op::Plus
                };
                Some(Some((undo, s.right.as_ref().clone())))
            }
            _ => None,
        }
    };
    let (op, shift, other) = if let Some(shift) = shifted(&b.left) {
        (b.op, shift, b.right.as_ref())
    } else if let Some(shift) = shifted(&b.right) {
        (b.op.swap()?, shift, b.left.as_ref())
    } else {
        return None;
    };
    if has_mz_now(other) {
        return None;
    }
    let other = match shift {
        None => other.clone(),
        Some((undo, d)) => {
            Expr::BinaryExpr(BinaryExpr::new(Box::new(other.clone()), undo, Box::new(d)))
        }
    };
    let bound = match op {
        Op::GtEq => Bound::From,
        Op::Gt => Bound::After,
        Op::LtEq => Bound::Until,
        Op::Lt => Bound::Before,
        Op::Eq => Bound::At,
        _ => return None,
    };
    Some((bound, other))
}

/// Uncorrelated scalar subqueries in `exprs` (which DataFusion plans as a
/// `ScalarSubqueryExec`, not a join): each becomes the right side of a left
/// join without keys on `input` (so an empty subquery reads as NULL, as in
/// SQL), and its uses a column of that side. Returns the joined plan and the
/// rewritten expressions, or None when there are no scalar subqueries.
fn lift_scalar_subqueries(
    input: &Arc<LogicalPlan>,
    exprs: &[Expr],
) -> Result<Option<(LogicalPlan, Vec<Expr>)>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{JoinType, LogicalPlanBuilder};
    let mut found = false;
    for e in exprs {
        found |= e.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_))))?;
    }
    if !found {
        return Ok(None);
    }
    let mut joined = Arc::clone(input);
    let mut n = 0usize;
    let mut rewritten = Vec::with_capacity(exprs.len());
    for e in exprs {
        let t = e.clone().transform(|e| match e {
            Expr::ScalarSubquery(sq) => {
                if !sq.outer_ref_columns.is_empty() {
                    return Err(datafusion::error::DataFusionError::NotImplemented(
                        "a correlated scalar subquery that does not decorrelate into a join".into(),
                    ));
                }
                n += 1;
                let alias = format!("__eddy_scalar_{n}");
                let sub = LogicalPlanBuilder::from(sq.subquery.as_ref().clone())
                    .alias(alias.as_str())?
                    .build()?;
                let name = sub.schema().field(0).name().clone();
                joined = Arc::new(LogicalPlan::Join(datafusion::logical_expr::Join::try_new(
                    Arc::clone(&joined),
                    Arc::new(sub),
                    vec![],
                    None,
                    JoinType::Left,
                    datafusion::logical_expr::JoinConstraint::On,
                    NullEquality::NullEqualsNothing,
                    false,
                )?));
                Ok(Transformed::yes(Expr::Column(
                    datafusion::common::Column::new(Some(alias), name),
                )))
            }
            other => Ok(Transformed::no(other)),
        })?;
        rewritten.push(t.data);
    }
    Ok(Some((Arc::unwrap_or_clone(joined), rewritten)))
}

/// What a name in a FROM clause is, for the dataflow.
pub enum Input {
    /// A stream: read its topic from the start.
    Stream { topic: String, layout: Layout },
    /// A table or materialized view: its contents and errors now, then
    /// its changes.
    Changes {
        schema: SchemaRef,
        backfill: Delta,
        errors: Vec<(super::RowError, i64)>,
    },
}

/// Resolves the relations a plan scans.
pub trait Resolve {
    /// The relation DataFusion resolved as `name` (the catalog's name:
    /// `foobar` for an unquoted `FooBar`, `MixT` for `"MixT"`): that name
    /// and what it is.
    fn input(&mut self, name: &str) -> Result<(String, Input)>;
}

/// How a view is kept, beyond its query.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ViewOptions {
    /// How its windows close by event time.
    pub window: Option<WindowClose>,
    /// ksqlDB's persistent queries: a stream joined with a table looks
    /// each stream row up in the table as the table is when the row comes
    /// (ksqlDB's stream-table join); later changes of the table do not
    /// revise the rows already joined, and the stream is not kept.
    pub lookup_joins: bool,
    /// ksqlDB's stream-stream join window: a join of two streams over
    /// `rowtime` forgets the rows the window has passed.
    pub within: Option<JoinWindow>,
}

pub struct Lowering<'a> {
    state: &'a SessionState,
    resolve: &'a mut dyn Resolve,
    /// Relations read, in plan order.
    pub inputs: Vec<String>,
    /// How the view's windows close by event time (a GROUP BY with a
    /// `window_end` key closes its windows so), if they do.
    pub window: Option<WindowClose>,
    /// Under a hopping window's union: which of its copies (the window
    /// `hop_copy` advances before a row's latest) is being lowered.
    hop_copy: i64,
    /// Stream-table joins look up the table (`ViewOptions::lookup_joins`).
    pub lookup_joins: bool,
    /// Stream-stream joins forget rows past this window.
    pub within: Option<JoinWindow>,
    /// Leaves lowered so far: streams, and tables or views.
    stream_leaves: usize,
    change_leaves: usize,
}

impl<'a> Lowering<'a> {
    pub fn new(state: &'a SessionState, resolve: &'a mut dyn Resolve) -> Lowering<'a> {
        Lowering {
            state,
            resolve,
            inputs: Vec::new(),
            window: None,
            hop_copy: 0,
            lookup_joins: false,
            within: None,
            stream_leaves: 0,
            change_leaves: 0,
        }
    }

    fn expr(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        if has_mz_now(e) {
            return Err(DataflowError::Unsupported(format!(
                "mz_now() outside a WHERE conjunct comparing it with an expression ({e})"
            )));
        }
        Ok(self.state.create_physical_expr(e.clone(), schema)?)
    }

    /// A filter whose conjuncts compare `mz_now()` with expressions over
    /// the row: the other conjuncts as a filter, then a temporal filter
    /// with those bounds. None when no conjunct mentions `mz_now()`.
    fn temporal(&mut self, f: &datafusion::logical_expr::Filter) -> Result<Option<Flow>> {
        use datafusion::logical_expr::utils::{conjunction, split_conjunction};
        let (temporal, rest): (Vec<&Expr>, Vec<&Expr>) = split_conjunction(&f.predicate)
            .into_iter()
            .partition(|e| has_mz_now(e));
        if temporal.is_empty() {
            return Ok(None);
        }
        let input = match conjunction(rest.into_iter().cloned()) {
            Some(p) => self.lower(&LogicalPlan::Filter(
                datafusion::logical_expr::Filter::try_new(p, Arc::clone(&f.input))?,
            ))?,
            None => self.lower(&f.input)?,
        };
        let mut bounds = Vec::new();
        for e in temporal {
            let (bound, other) = temporal_bound(e).ok_or_else(|| {
                DataflowError::Unsupported(format!(
                    "a temporal filter must compare mz_now() with an expression over the row \
                     using <, <=, =, >= or > ({e})"
                ))
            })?;
            let at = Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(other),
                datafusion::arrow::datatypes::DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ),
            ));
            bounds.push((bound, self.expr(&at, f.input.schema())?));
        }
        Ok(Some(Flow::unary(
            TemporalFilter::new(input.schema(), bounds)?,
            input,
        )))
    }

    fn exprs(&self, es: &[Expr], schema: &DFSchema) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        es.iter().map(|e| self.expr(e, schema)).collect()
    }

    fn sort(
        &self,
        es: &[SortExpr],
        schema: &DFSchema,
    ) -> Result<Vec<(Arc<dyn PhysicalExpr>, SortOptions)>> {
        es.iter()
            .map(|s| {
                Ok((
                    self.expr(&s.expr, schema)?,
                    SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                ))
            })
            .collect()
    }

    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …) <= k` (also `< k`,
    /// `= 1`) filtering a window, directly or through a projection: a
    /// per-partition top-k that outputs the row number. None when the
    /// filter is not of that shape.
    fn ranked(
        &mut self,
        f: &datafusion::logical_expr::Filter,
        out_schema: &SchemaRef,
    ) -> Result<Option<Flow>> {
        use datafusion::logical_expr::{BinaryExpr, Operator};
        use datafusion::scalar::ScalarValue;
        let (proj, window) = match f.input.as_ref() {
            LogicalPlan::Window(w) => (None, w),
            LogicalPlan::Projection(p) => match p.input.as_ref() {
                LogicalPlan::Window(w) => (Some(p), w),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let [wexpr] = window.window_expr.as_slice() else {
            return Ok(None);
        };
        let Expr::WindowFunction(wf) = wexpr.clone().unalias() else {
            return Ok(None);
        };
        if wf.fun.name() != "row_number" {
            return Ok(None);
        }
        // The predicate: rank column compared with an integer literal.
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &f.predicate else {
            return Ok(None);
        };
        let (col, op, lit) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                Some(o) => (c, o, v),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let k = match lit.cast_to(&datafusion::arrow::datatypes::DataType::Int64) {
            Ok(ScalarValue::Int64(Some(k))) => k,
            _ => return Ok(None),
        };
        let fetch = match op {
            Operator::LtEq => k,
            Operator::Lt => k - 1,
            Operator::Eq if k == 1 => 1,
            _ => return Ok(None),
        };
        // The column must be the window's rank, possibly renamed.
        let rank_field = window.schema.field(window.schema.fields().len() - 1);
        let rank_name = window.schema.columns().last().cloned();
        let is_rank = match proj {
            None => col.name == *rank_field.name(),
            Some(p) => p.expr.iter().zip(p.schema.columns()).any(|(e, out)| {
                out == *col && matches!(e.clone().unalias(), Expr::Column(c) if Some(&c) == rank_name.as_ref())
            }),
        };
        if !is_rank {
            return Ok(None);
        }
        let in_schema = window.input.schema();
        let input = self.lower(&window.input)?;
        let node = Flow::unary(
            TopK::ranked(
                input.schema(),
                self.exprs(&wf.params.partition_by, in_schema)?,
                self.sort(&wf.params.order_by, in_schema)?,
                0,
                fetch.max(0) as usize,
                nullable(window.schema.as_arrow()),
                true,
            )?,
            input,
        );
        Ok(Some(match proj {
            None => node,
            Some(p) => {
                let exprs = self.exprs(&p.expr, &window.schema)?;
                Flow::unary(Map::project(exprs, Arc::clone(out_schema)), node)
            }
        }))
    }

    /// Window functions sharing one PARTITION BY and ORDER BY (DataFusion
    /// plans one Window node per such group), as `window.rs` computes them.
    fn window(
        &mut self,
        w: &datafusion::logical_expr::Window,
        out_schema: SchemaRef,
    ) -> Result<Flow> {
        use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
        let in_schema = w.input.schema();
        let mut shared: Option<(Vec<Expr>, Vec<SortExpr>)> = None;
        for e in &w.window_expr {
            let Expr::WindowFunction(wf) = e.clone().unalias() else {
                return Err(DataflowError::Unsupported(format!(
                    "window expression {e} that is not a window function call"
                )));
            };
            let this = (wf.params.partition_by.clone(), wf.params.order_by.clone());
            match &shared {
                None => shared = Some(this),
                Some(s) if *s == this => {}
                Some(_) => {
                    return Err(DataflowError::Unsupported(
                        "window functions of different PARTITION BY or ORDER BY in one window node"
                            .into(),
                    ));
                }
            }
        }
        let Some((partition_by, order_by)) = shared else {
            return Err(DataflowError::Unsupported(
                "a window with no function".into(),
            ));
        };
        let exprs = w
            .window_expr
            .iter()
            .map(|e| {
                datafusion::physical_planner::create_window_expr(
                    e,
                    in_schema,
                    self.state.execution_props(),
                    &PhysicalPlanningContext::default(),
                )
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let partition = self.exprs(&partition_by, in_schema)?;
        let order = self.sort(&order_by, in_schema)?;
        let input = self.lower(&w.input)?;
        let op = Window::new(input.schema(), partition, order, exprs, out_schema)?;
        Ok(Flow::unary(op, input))
    }

    pub fn lower(&mut self, plan: &LogicalPlan) -> Result<Flow> {
        let out_schema = nullable(plan.schema().as_arrow());
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return Err(DataflowError::Unsupported(
                        "a LIMIT pushed into a scan".into(),
                    ));
                }
                let (name, input) = self.resolve.input(scan.table_name.table())?;
                self.inputs.push(name.clone());
                match &input {
                    Input::Stream { .. } => self.stream_leaves += 1,
                    Input::Changes { .. } => self.change_leaves += 1,
                }
                let (leaf, full): (Flow, SchemaRef) = match input {
                    Input::Stream { topic, layout } => {
                        let schema = Arc::clone(layout.schema());
                        let mut source = StreamSource::new(&name, &topic, layout)?;
                        // A windowed view's windows are over its streams'
                        // event time: late rows go at the source.
                        if let Some(w) = self.window.filter(|w| w.advance_us > 0) {
                            source = source.drop_late(LateRule {
                                size_us: w.size_us,
                                advance_us: w.advance_us,
                                grace_us: w.grace_us,
                                back: self.hop_copy,
                            });
                        }
                        (Flow::leaf(source), schema)
                    }
                    Input::Changes {
                        schema,
                        backfill,
                        errors,
                    } => (
                        Flow::leaf(ChangesSource::new(
                            &name,
                            Arc::clone(&schema),
                            backfill,
                            errors,
                        )),
                        schema,
                    ),
                };
                let mut node = leaf;
                if !scan.filters.is_empty() {
                    let full_df = DFSchema::try_from_qualified_schema(
                        scan.table_name.clone(),
                        full.as_ref(),
                    )?;
                    for f in &scan.filters {
                        node =
                            Flow::unary(Map::filter(node.schema(), self.expr(f, &full_df)?), node);
                    }
                }
                match &scan.projection {
                    Some(p)
                        if p.len() != full.fields().len()
                            || p.iter().enumerate().any(|(i, j)| i != *j) =>
                    {
                        let exprs: Vec<Arc<dyn PhysicalExpr>> = p
                            .iter()
                            .map(|i| {
                                Arc::new(Column::new(full.field(*i).name(), *i))
                                    as Arc<dyn PhysicalExpr>
                            })
                            .collect();
                        Ok(Flow::unary(Map::project(exprs, out_schema), node))
                    }
                    _ => Ok(node),
                }
            }
            LogicalPlan::Projection(p) => {
                if let Some((joined, exprs)) = lift_scalar_subqueries(&p.input, &p.expr)? {
                    let input = self.lower(&joined)?;
                    let exprs = self.exprs(&exprs, joined.schema())?;
                    return Ok(Flow::unary(Map::project(exprs, out_schema), input));
                }
                let input = self.lower(&p.input)?;
                let exprs = self.exprs(&p.expr, p.input.schema())?;
                Ok(Flow::unary(Map::project(exprs, out_schema), input))
            }
            LogicalPlan::Filter(f) => {
                if let Some(node) = self.temporal(f)? {
                    return Ok(node);
                }
                if let Some(node) = self.ranked(f, &out_schema)? {
                    return Ok(node);
                }
                if let Some((joined, exprs)) =
                    lift_scalar_subqueries(&f.input, std::slice::from_ref(&f.predicate))?
                {
                    // Filter over input ⟕ subqueries, then keep the input's
                    // columns (they come first in the join's output).
                    let input = self.lower(&joined)?;
                    let pred = self.expr(&exprs[0], joined.schema())?;
                    let filtered = Flow::unary(Map::filter(input.schema(), pred), input);
                    let in_schema = f.input.schema().as_arrow();
                    let cols = (0..in_schema.fields().len())
                        .map(|i| {
                            Arc::new(Column::new(in_schema.field(i).name(), i))
                                as Arc<dyn PhysicalExpr>
                        })
                        .collect();
                    return Ok(Flow::unary(Map::project(cols, out_schema), filtered));
                }
                let input = self.lower(&f.input)?;
                let pred = self.expr(&f.predicate, f.input.schema())?;
                Ok(Flow::unary(Map::filter(input.schema(), pred), input))
            }
            LogicalPlan::SubqueryAlias(a) => self.lower(&a.input),
            LogicalPlan::Repartition(r) => self.lower(&r.input),
            LogicalPlan::Aggregate(a) => {
                if a.group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)))
                {
                    return Err(DataflowError::Unsupported(
                        "GROUPING SETS, CUBE and ROLLUP".into(),
                    ));
                }
                let input = self.lower(&a.input)?;
                let in_df = a.input.schema();
                let in_arrow = in_df.as_arrow();
                let keys = self.exprs(&a.group_expr, in_df)?;
                let mut aggs = Vec::with_capacity(a.aggr_expr.len());
                for e in &a.aggr_expr {
                    #[allow(deprecated)]
                    let (expr, filter, order) = create_aggregate_expr_and_maybe_filter(
                        e,
                        in_df,
                        in_arrow,
                        self.state.execution_props(),
                    )?;
                    let mut args = expr.expressions();
                    args.extend(order.iter().map(|o| Arc::clone(&o.expr)));
                    let types = args
                        .iter()
                        .map(|a| a.data_type(in_arrow))
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    aggs.push(AggregateSpec {
                        factory: AccumulatorFactory::new(expr, types)?,
                        args,
                        filter,
                    });
                }
                // A session window: `eddy_session` marks its bounds.
                let bound = |name: &str| {
                    (0..a.group_expr.len()).find(|&i| out_schema.field(i).name() == name)
                };
                if let (Some(s), Some(e), Some(gap)) = (
                    bound("window_start"),
                    bound("window_end"),
                    session_gap(&a.input),
                ) {
                    let time = Arc::clone(&keys[s]);
                    let others = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != s && *i != e)
                        .map(|(_, k)| Arc::clone(k))
                        .collect();
                    let op = SessionAggregate::new(
                        input.schema(),
                        others,
                        time,
                        (s, e),
                        aggs,
                        out_schema,
                        gap,
                        self.window,
                    )?;
                    return Ok(Flow::unary(op, input));
                }
                let mut op = Aggregate::new(input.schema(), keys, aggs, Arc::clone(&out_schema))?;
                // The window's end among the group keys: its windows close.
                let end_key = (0..a.group_expr.len()).find(|&i| {
                    let f = out_schema.field(i);
                    f.name() == "window_end"
                        && matches!(
                            f.data_type(),
                            datafusion::arrow::datatypes::DataType::Timestamp(..)
                        )
                });
                if let (Some(close), Some(end_key)) = (self.window, end_key) {
                    op = op.closing(end_key, close);
                }
                Ok(Flow::unary(op, input))
            }
            LogicalPlan::Join(j)
                if j.null_aware && j.join_type == JoinType::LeftAnti && j.on.len() == 1 =>
            {
                self.lower(&null_aware_anti(j)?)
            }
            LogicalPlan::Join(j) => {
                let leaves = (self.stream_leaves, self.change_leaves);
                let left = self.lower(&j.left)?;
                let mid = (self.stream_leaves, self.change_leaves);
                let right = self.lower(&j.right)?;
                // A stream (left) joined with a table (right) under
                // ksqlDB's semantics: the table looked up as it is.
                let lookup = self.lookup_joins
                    && matches!(j.join_type, JoinType::Inner | JoinType::Left)
                    && (j.filter.is_none() || j.join_type == JoinType::Inner)
                    && mid.0 > leaves.0
                    && mid.1 == leaves.1
                    && self.stream_leaves == mid.0
                    && self.change_leaves > mid.1;
                let mut on = Vec::with_capacity(j.on.len());
                for (l, r) in &j.on {
                    on.push((
                        self.expr(l, j.left.schema())?,
                        self.expr(r, j.right.schema())?,
                    ));
                }
                // Over both sides' columns, whatever the join outputs
                // (a semi join's condition reads the other side too).
                let filter = match &j.filter {
                    Some(f) => Some(self.expr(f, &j.left.schema().join(j.right.schema())?)?),
                    None => None,
                };
                let join = Join::new(
                    left.schema(),
                    right.schema(),
                    on,
                    j.join_type,
                    j.null_equality == NullEquality::NullEqualsNull,
                    filter,
                    out_schema,
                )?;
                let join = if lookup { join.lookup() } else { join };
                // Two streams joined WITHIN a window of their record times.
                let streams = mid.0 > leaves.0
                    && mid.1 == leaves.1
                    && self.stream_leaves > mid.0
                    && self.change_leaves == mid.1;
                let join = match (self.within, streams) {
                    (Some(w), true) => {
                        let at = |s: &SchemaRef| s.index_of("rowtime").ok();
                        match (at(&left.schema()), at(&right.schema())) {
                            (Some(l), Some(r)) => join.windowed(w, l, r),
                            _ => join,
                        }
                    }
                    _ => join,
                };
                Ok(Flow::new(join, vec![left, right]))
            }
            LogicalPlan::Union(u) => {
                // A hopping window's copies, one per window a row falls
                // in, in order (`engine/windows.rs`).
                let copies = self
                    .window
                    .filter(|w| w.advance_us > 0 && w.size_us > w.advance_us)
                    .map(|w| w.size_us / w.advance_us);
                let hop = copies == Some(u.inputs.len() as i64);
                let mut inputs = Vec::with_capacity(u.inputs.len());
                for (i, input) in u.inputs.iter().enumerate() {
                    if hop {
                        self.hop_copy = i as i64;
                    }
                    let lowered = self.lower(input);
                    self.hop_copy = 0;
                    inputs.push(lowered?);
                }
                Ok(Flow::new(Union::new(inputs.len(), out_schema), inputs))
            }
            LogicalPlan::Distinct(LogicalDistinct::All(input)) => {
                let input = self.lower(input)?;
                Ok(Flow::unary(Distinct::new(input.schema())?, input))
            }
            LogicalPlan::Distinct(LogicalDistinct::On(_)) => {
                Err(DataflowError::Unsupported("DISTINCT ON".into()))
            }
            LogicalPlan::Sort(s) => {
                let input = self.lower(&s.input)?;
                match s.fetch {
                    // Row order is not part of a view's contents.
                    None => Ok(input),
                    Some(k) => Ok(Flow::unary(
                        TopK::new(input.schema(), self.sort(&s.expr, s.input.schema())?, 0, k)?,
                        input,
                    )),
                }
            }
            LogicalPlan::Limit(l) => {
                let skip = match l.get_skip_type()? {
                    SkipType::Literal(s) => s,
                    SkipType::UnsupportedExpr => {
                        return Err(DataflowError::Unsupported("a non-constant OFFSET".into()));
                    }
                };
                let fetch = match l.get_fetch_type()? {
                    FetchType::Literal(f) => f.unwrap_or(usize::MAX),
                    FetchType::UnsupportedExpr => {
                        return Err(DataflowError::Unsupported("a non-constant LIMIT".into()));
                    }
                };
                let LogicalPlan::Sort(s) = l.input.as_ref() else {
                    return Err(DataflowError::Unsupported(
                        "LIMIT without ORDER BY (its result is not determined)".into(),
                    ));
                };
                let input = self.lower(&s.input)?;
                Ok(Flow::unary(
                    TopK::new(
                        input.schema(),
                        self.sort(&s.expr, s.input.schema())?,
                        skip,
                        fetch,
                    )?,
                    input,
                ))
            }
            LogicalPlan::EmptyRelation(e) => {
                let schema = nullable(e.schema.as_arrow());
                let rows = usize::from(e.produce_one_row);
                let batch = datafusion::arrow::array::RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    schema
                        .fields()
                        .iter()
                        .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows))
                        .collect(),
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
                )?;
                Ok(Flow::leaf(Constant::new(Delta::inserts(batch))))
            }
            LogicalPlan::Values(v) => {
                let empty = DFSchema::empty();
                let one = datafusion::arrow::array::RecordBatch::try_new_with_options(
                    Arc::new(datafusion::arrow::datatypes::Schema::empty()),
                    vec![],
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
                )?;
                let mut columns: Vec<Vec<datafusion::scalar::ScalarValue>> =
                    vec![Vec::new(); out_schema.fields().len()];
                for row in &v.values {
                    for (i, e) in row.iter().enumerate() {
                        let pe = self.expr(e, &empty)?;
                        let a = pe.evaluate(&one)?.into_array(1)?;
                        columns[i].push(datafusion::scalar::ScalarValue::try_from_array(&a, 0)?);
                    }
                }
                let arrays = columns
                    .into_iter()
                    .zip(out_schema.fields())
                    .map(|(c, f)| {
                        let a = datafusion::scalar::ScalarValue::iter_to_array(c)?;
                        Ok(datafusion::arrow::compute::cast(&a, f.data_type())?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let batch = datafusion::arrow::array::RecordBatch::try_new(
                    Arc::clone(&out_schema),
                    arrays,
                )?;
                Ok(Flow::leaf(Constant::new(Delta::inserts(batch))))
            }
            LogicalPlan::Unnest(u) => {
                let ([(list, unnested)], []) = (
                    u.list_type_columns.as_slice(),
                    u.struct_type_columns.as_slice(),
                ) else {
                    return Err(DataflowError::Unsupported(
                        "UNNEST of more than one column, or of a struct, in a materialized view"
                            .into(),
                    ));
                };
                if unnested.depth != 1 {
                    return Err(DataflowError::Unsupported(
                        "UNNEST of nested lists (depth > 1) in a materialized view".into(),
                    ));
                }
                let elements = u.schema.index_of_column(&unnested.output_column)?;
                let input = self.lower(&u.input)?;
                let op = Unnest::new(*list, u.dependency_indices.clone(), elements, out_schema)?;
                Ok(Flow::unary(op, input))
            }
            LogicalPlan::Window(w) if numbers_copies(w) => {
                let input = self.lower(&w.input)?;
                let op = Enumerate::new(&input.schema(), out_schema)?;
                Ok(Flow::unary(op, input))
            }
            LogicalPlan::Window(w) => self.window(w, out_schema),
            other => Err(DataflowError::Unsupported(format!(
                "plan node {}",
                other.display()
            ))),
        }
    }
}

/// Whether `w` is `row_number() OVER (PARTITION BY` every input column`)`
/// with no ORDER BY or frame of its own: the copies of each row numbered
/// (`enumerate.rs`), as `EXCEPT ALL` and `INTERSECT ALL` are rewritten.
fn numbers_copies(w: &datafusion::logical_expr::Window) -> bool {
    use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionParams};
    let [e] = w.window_expr.as_slice() else {
        return false;
    };
    let Expr::WindowFunction(f) = e.clone().unalias() else {
        return false;
    };
    let WindowFunction {
        fun,
        params:
            WindowFunctionParams {
                args,
                partition_by,
                order_by,
                filter,
                ..
            },
        ..
    } = f.as_ref();
    if fun.name() != "row_number" || !args.is_empty() || !order_by.is_empty() || filter.is_some() {
        return false;
    }
    let input = w.input.schema();
    let mut seen = vec![false; input.fields().len()];
    for p in partition_by {
        let Expr::Column(c) = p else {
            return false;
        };
        match input.index_of_column(c) {
            Ok(i) => seen[i] = true,
            Err(_) => return false,
        }
    }
    seen.iter().all(|s| *s)
}

/// `x NOT IN (subquery)`, which DataFusion plans as a null-aware anti join,
/// in operators that exist: SQL says a row is kept when the subquery is
/// empty, or when `x` is not NULL, the subquery holds no NULL and nothing
/// matches. So: the plain anti join (NULL keys never match), crossed with
/// the subquery's `count(*)` and `count(key)`, filtered by
/// `n = 0 OR (n = n_key AND x IS NOT NULL)`. A change to whether the
/// subquery is empty or holds a NULL flips every row, as it must.
fn null_aware_anti(j: &datafusion::logical_expr::Join) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
    let (lkey, rkey) = j.on[0].clone();
    let mut plain = j.clone();
    plain.null_aware = false;
    let stats = LogicalPlanBuilder::from(j.right.as_ref().clone())
        .aggregate(
            Vec::<Expr>::new(),
            vec![
                count(lit(1i64)).alias("__eddy_not_in_n"),
                count(rkey).alias("__eddy_not_in_nk"),
            ],
        )?
        .build()?;
    let left_columns: Vec<Expr> = j
        .left
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let n = col("__eddy_not_in_n");
    let keep = n
        .clone()
        .eq(lit(0i64))
        .or(n.eq(col("__eddy_not_in_nk")).and(lkey.is_not_null()));
    Ok(LogicalPlanBuilder::from(LogicalPlan::Join(plain))
        .cross_join(stats)?
        .filter(keep)?
        .project(left_columns)?
        .build()?)
}

/// The columns of `plan`'s output that are a key of it (no two rows agree
/// on them): a GROUP BY's columns, carried through projections, filters
/// and aliases. A view is arranged by them, so a SELECT naming its key is a
/// lookup. None when no key is evident.
pub fn output_key(plan: &LogicalPlan) -> Option<Vec<usize>> {
    match plan {
        LogicalPlan::Aggregate(a) => {
            if a.group_expr.is_empty()
                || a.group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)))
            {
                return None;
            }
            Some((0..a.group_expr.len()).collect())
        }
        LogicalPlan::Projection(p) => {
            let inner = output_key(&p.input)?;
            let schema = p.input.schema();
            let mut out = Vec::with_capacity(inner.len());
            for k in inner {
                let (q, f) = schema.qualified_field(k);
                let col = datafusion::common::Column::from((q, f));
                let pos = p.expr.iter().position(|e| {
                    let mut e = e;
                    while let Expr::Alias(a) = e {
                        e = &a.expr;
                    }
                    matches!(e, Expr::Column(c) if *c == col)
                })?;
                out.push(pos);
            }
            out.sort_unstable();
            Some(out)
        }
        LogicalPlan::SubqueryAlias(s) => output_key(&s.input),
        LogicalPlan::Filter(f) => output_key(&f.input),
        _ => None,
    }
}
