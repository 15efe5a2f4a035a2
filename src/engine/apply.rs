//! Subqueries DataFusion cannot turn into joins, run as an apply: the
//! subquery once per distinct set of outer values it reads.
//!
//! DataFusion turns a correlated subquery into a join when its correlation
//! is a conjunction of equalities; the rest (`(SELECT count(*) FROM t AS x
//! WHERE x.b < t.b)`, a running total, a rank by comparison) and EXISTS /
//! IN in a SELECT list are left in the plan, which the physical planner
//! then refuses. PostgreSQL runs such a subquery per outer row (a SubPlan).
//! So does this module, for queries only: when the optimized plan of a
//! query still holds a subquery, each one left becomes a call of an
//! [`Apply`] function whose arguments are the outer columns it reads; per
//! batch the function runs the subquery with those values bound as
//! literals, once per distinct tuple. The cost is the subquery's per
//! distinct outer tuple, as in PostgreSQL; subqueries DataFusion
//! decorrelates keep their joins. Materialized views never get here: the
//! dataflow lowering refuses a subquery it cannot maintain (0A000), since
//! an apply re-run on every change is not incremental.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Exists, InSubquery};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Subquery, Volatility, lit,
};
use datafusion::prelude::SessionContext;

use crate::sqlstate::Coded;

/// `plan` with its correlated subqueries made applies, when DataFusion's
/// optimizer leaves any subquery undecorrelated; otherwise `plan` as it is.
///
/// `as_of`: the outer query's start, which its subqueries' runs take too,
/// so every relation they read is read at the outer query's epoch.
pub fn rewrite(
    plan: LogicalPlan,
    ctx: &Arc<SessionContext>,
    as_of: Option<DateTime<Utc>>,
) -> Result<LogicalPlan> {
    if !holds_subquery(&plan) {
        return Ok(plan);
    }
    // DataFusion's decorrelation turns a subquery that reads a query two
    // levels out into a join that reads a column it does not have; such
    // a query runs its subqueries as applies from the start.
    let optimized = if skips_a_level(&plan) {
        Err(DataFusionError::Plan(
            "a subquery reads a query two levels out".into(),
        ))
    } else {
        ctx.state().optimize(&plan)
    };
    match optimized {
        // DataFusion decorrelated every subquery: its joins are better.
        Ok(optimized) if !holds_subquery(&optimized) => Ok(plan),
        // The subqueries left in the optimized plan are the ones it could
        // not turn into joins (correlated ones, and EXISTS / IN in a
        // SELECT list).
        Ok(optimized) => optimized
            .transform_up(|node| apply_in_node(node, ctx, true, as_of))
            .map(|t| t.data),
        // Most often DataFusion refusing a correlated scalar subquery it
        // cannot prove to give one row, which PostgreSQL checks per row,
        // as the apply does.
        Err(_) => plan
            .transform_up(|node| apply_in_node(node, ctx, false, as_of))
            .map(|t| t.data),
    }
}

/// Whether a subquery somewhere in `plan` reads a column of a query
/// further out than the one it is in (an outer reference its node's
/// inputs do not hold).
pub(super) fn skips_a_level(plan: &LogicalPlan) -> bool {
    any_expression(plan, true, |node, e| {
        subquery_of(e).is_some_and(|s| {
            s.outer_ref_columns.iter().any(|o| {
                matches!(o, Expr::OuterReferenceColumn(_, c)
                    if !node.inputs().iter().any(|i| i.schema().has_column(c)))
            })
        })
    })
}

/// Whether a node of `plan` (not of its subqueries) has a subquery
/// expression.
fn holds_subquery(plan: &LogicalPlan) -> bool {
    any_expression(plan, false, |_, e| subquery_of(e).is_some())
}

/// Whether `pred` holds for an expression (or a part of one) of a node of
/// `plan`, and of its subqueries' plans when `nested`.
fn any_expression(
    plan: &LogicalPlan,
    nested: bool,
    mut pred: impl FnMut(&LogicalPlan, &Expr) -> bool,
) -> bool {
    let mut found = false;
    let mut visit = |node: &LogicalPlan| {
        for e in node.expressions() {
            let _ = e.apply(|e| {
                found = pred(node, e);
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            });
            if found {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    };
    let _ = if nested {
        plan.apply_with_subqueries(&mut visit)
    } else {
        plan.apply(&mut visit)
    };
    found
}

/// `node` with its subquery expressions made applies: every one when
/// `all`, else the correlated ones.
fn apply_in_node(
    node: LogicalPlan,
    ctx: &Arc<SessionContext>,
    all: bool,
    as_of: Option<DateTime<Utc>>,
) -> Result<Transformed<LogicalPlan>> {
    let exprs = node.expressions();
    let inputs: Vec<datafusion::common::DFSchemaRef> = node
        .inputs()
        .iter()
        .map(|i| Arc::clone(i.schema()))
        .collect();
    if !exprs.iter().any(|e| {
        e.exists(|e| Ok(subquery_of(e).is_some_and(|s| all || correlated(s, &inputs))))
            .unwrap_or(false)
    }) {
        return Ok(Transformed::no(node));
    }
    let keep_names = matches!(node, LogicalPlan::Projection(_));
    let mut new_exprs = Vec::with_capacity(exprs.len());
    for e in exprs {
        let name = if keep_names {
            Some(e.name_for_alias()?)
        } else {
            None
        };
        let t = e.transform_up(|e| apply_expr(e, ctx, all, as_of, &inputs))?;
        new_exprs.push(match (t.transformed, name) {
            (true, Some(name)) => t.data.alias_if_changed(name)?,
            _ => t.data,
        });
    }
    let inputs = node.inputs().into_iter().cloned().collect();
    Ok(Transformed::yes(node.with_new_exprs(new_exprs, inputs)?))
}

fn subquery_of(e: &Expr) -> Option<&Subquery> {
    match e {
        Expr::ScalarSubquery(s) => Some(s),
        Expr::Exists(x) => Some(&x.subquery),
        Expr::InSubquery(x) => Some(&x.subquery),
        _ => None,
    }
}

/// Whether `s` reads its node's `inputs`, itself or through a subquery
/// nested in it.
fn correlated(s: &Subquery, inputs: &[datafusion::common::DFSchemaRef]) -> bool {
    !s.outer_ref_columns.is_empty() || !nested_outer_refs(&s.subquery, inputs).is_empty()
}

/// The columns of `inputs` (the schemas the subquery's node reads) that
/// subqueries nested in `plan` read as outer references: a query two
/// levels out, which DataFusion does not list in the subquery's own
/// `outer_ref_columns` (`SELECT (SELECT (SELECT … WHERE u.c > t.a)) FROM
/// t`). The apply passes them in, and binding them reaches the nested
/// subquery (`Apply::eval`).
fn nested_outer_refs(plan: &LogicalPlan, inputs: &[datafusion::common::DFSchemaRef]) -> Vec<Expr> {
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            let _ = e.apply(|e| {
                if let Expr::OuterReferenceColumn(_, column) = e
                    && inputs.iter().any(|s| s.has_column(column))
                    && !found.contains(e)
                {
                    found.push(e.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn apply_expr(
    e: Expr,
    ctx: &Arc<SessionContext>,
    all: bool,
    as_of: Option<DateTime<Utc>>,
    inputs: &[datafusion::common::DFSchemaRef],
) -> Result<Transformed<Expr>> {
    if !subquery_of(&e).is_some_and(|s| all || correlated(s, inputs)) {
        return Ok(Transformed::no(e));
    }
    let (kind, subquery, probe) = match e {
        Expr::ScalarSubquery(s) => (Kind::Scalar, s, None),
        Expr::Exists(Exists { subquery, negated }) => (Kind::Exists { negated }, subquery, None),
        Expr::InSubquery(InSubquery {
            expr,
            subquery,
            negated,
        }) => (Kind::In { negated }, subquery, Some(*expr)),
        other => return Ok(Transformed::no(other)),
    };
    let Subquery {
        subquery: plan,
        outer_ref_columns,
        ..
    } = subquery;
    let mut outer = Vec::new();
    let mut args = Vec::new();
    if let Some(p) = probe {
        args.push(p);
    }
    let nested = nested_outer_refs(&plan, inputs);
    for o in outer_ref_columns.into_iter().chain(nested) {
        if let Expr::OuterReferenceColumn(field, column) = o {
            if outer.iter().any(|(_, c): &(FieldRef, _)| *c == column) {
                continue;
            }
            args.push(Expr::Column(column.clone()));
            outer.push((field, column));
        }
    }
    let returns = match kind {
        Kind::Scalar => plan.schema().field(0).data_type().clone(),
        _ => DataType::Boolean,
    };
    let udf = Apply {
        kind,
        plan,
        outer: outer.into_iter().map(|(f, c)| (f, c.flat_name())).collect(),
        returns,
        signature: if args.is_empty() {
            Signature::nullary(Volatility::Volatile)
        } else {
            Signature::variadic_any(Volatility::Volatile)
        },
        ctx: Ctx(Arc::clone(ctx)),
        as_of,
    };
    Ok(Transformed::yes(ScalarUDF::new_from_impl(udf).call(args)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    Exists { negated: bool },
    In { negated: bool },
}

/// The session a subquery runs in (compared by identity).
#[derive(Clone)]
struct Ctx(Arc<SessionContext>);

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionContext")
    }
}
impl PartialEq for Ctx {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Ctx {}
impl Hash for Ctx {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state)
    }
}

/// One correlated subquery as a function of the outer values it reads
/// (after the probe value, for IN).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Apply {
    kind: Kind,
    plan: Arc<LogicalPlan>,
    /// Each outer column the subquery reads: its field and qualified name.
    outer: Vec<(FieldRef, String)>,
    returns: DataType,
    signature: Signature,
    ctx: Ctx,
    /// The outer query's start (see [`rewrite`]).
    as_of: Option<DateTime<Utc>>,
}

impl ScalarUDFImpl for Apply {
    fn name(&self) -> &str {
        "subquery"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        // DataFusion runs a plan asynchronously; this function is called
        // synchronously inside another plan's execution. A thread of its
        // own with a runtime of its own runs the subqueries for the batch.
        let run = || {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    rt.block_on(self.eval_batch(&arrays, rows))
                })
                .join()
                .map_err(|_| DataFusionError::Execution("a subquery panicked".into()))?
            })
        };
        // Waiting blocks this thread: on a multi-threaded runtime, its other
        // tasks (other connections, writes) move to another worker first.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let out: Result<Vec<ScalarValue>> = if multi {
            tokio::task::block_in_place(run)
        } else {
            run()
        };
        let out = out?;
        if out.is_empty() {
            return Ok(ColumnarValue::Array(new_null_array(&self.returns, 0)));
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

impl Apply {
    async fn eval_batch(&self, arrays: &[ArrayRef], rows: usize) -> Result<Vec<ScalarValue>> {
        let probe = matches!(self.kind, Kind::In { .. });
        let mut memo: HashMap<Vec<ScalarValue>, ScalarValue> = HashMap::new();
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut key = Vec::with_capacity(arrays.len());
            for a in arrays {
                key.push(ScalarValue::try_from_array(a, row)?);
            }
            if let Some(v) = memo.get(&key) {
                out.push(v.clone());
                continue;
            }
            let (probe_value, outer) = if probe {
                (Some(&key[0]), &key[1..])
            } else {
                (None, &key[..])
            };
            let v = self.eval(probe_value, outer).await?;
            out.push(v.clone());
            memo.insert(key, v);
        }
        Ok(out)
    }

    /// The subquery's value for one tuple of outer values.
    /// `s` without the outer references this apply binds.
    fn unbind(&self, mut s: Subquery) -> Subquery {
        s.outer_ref_columns.retain(|o| match o {
            Expr::OuterReferenceColumn(_, c) => {
                let name = c.flat_name();
                !self.outer.iter().any(|(_, n)| *n == name)
            }
            _ => true,
        });
        s
    }

    async fn eval(
        &self,
        probe: Option<&ScalarValue>,
        outer: &[ScalarValue],
    ) -> Result<ScalarValue> {
        let bound = (*self.plan)
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform_up(|e| match e {
                        Expr::OuterReferenceColumn(field, column) => {
                            let name = column.flat_name();
                            match self.outer.iter().position(|(_, n)| *n == name) {
                                Some(i) => {
                                    let v = outer[i].cast_to(field.data_type())?;
                                    Ok(Transformed::yes(lit(v)))
                                }
                                // A column of a query further out, bound
                                // when that query's apply runs.
                                None => {
                                    Ok(Transformed::no(Expr::OuterReferenceColumn(field, column)))
                                }
                            }
                        }
                        // A nested subquery no longer reads the columns
                        // bound here from outside.
                        Expr::ScalarSubquery(sub) => {
                            Ok(Transformed::yes(Expr::ScalarSubquery(self.unbind(sub))))
                        }
                        Expr::Exists(Exists { subquery, negated }) => {
                            Ok(Transformed::yes(Expr::Exists(Exists {
                                subquery: self.unbind(subquery),
                                negated,
                            })))
                        }
                        Expr::InSubquery(InSubquery {
                            expr,
                            subquery,
                            negated,
                        }) => Ok(Transformed::yes(Expr::InSubquery(InSubquery {
                            expr,
                            subquery: self.unbind(subquery),
                            negated,
                        }))),
                        other => Ok(Transformed::no(other)),
                    })
                })
            })?
            .data;
        let ctx = &self.ctx.0;
        let bound = rewrite(bound, ctx, self.as_of)?;
        let mut state = ctx.state();
        if self.as_of.is_some() {
            state.execution_props_mut().query_execution_start_time = self.as_of;
        }
        let batches = datafusion::dataframe::DataFrame::new(state, bound)
            .collect()
            .await?;
        let mut values = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                values.push(ScalarValue::try_from_array(b.column(0), r)?);
                if matches!(self.kind, Kind::Exists { .. }) {
                    break;
                }
                if self.kind == Kind::Scalar && values.len() > 1 {
                    return Err(DataFusionError::External(Box::new(Coded {
                        code: "21000",
                        message: "more than one row returned by a subquery used as an expression"
                            .into(),
                    })));
                }
            }
        }
        Ok(match self.kind {
            Kind::Scalar => match values.pop() {
                Some(v) => v,
                None => ScalarValue::try_from(&self.returns)?,
            },
            Kind::Exists { negated } => ScalarValue::Boolean(Some(values.is_empty() == negated)),
            Kind::In { negated } => {
                let probe = probe.expect("IN has a probe value");
                let result = in_list(probe, &values)?;
                ScalarValue::Boolean(result.map(|b| b != negated))
            }
        })
    }
}

/// SQL's `probe IN (values)`: true when one equals, else NULL when the
/// probe or a value is NULL (and there are values), else false.
fn in_list(probe: &ScalarValue, values: &[ScalarValue]) -> Result<Option<bool>> {
    if values.is_empty() {
        return Ok(Some(false));
    }
    if probe.is_null() {
        return Ok(None);
    }
    let mut saw_null = false;
    for v in values {
        if v.is_null() {
            saw_null = true;
            continue;
        }
        let p = probe.cast_to(&v.data_type())?;
        if p == *v {
            return Ok(Some(true));
        }
    }
    Ok(if saw_null { None } else { Some(false) })
}
