//! Queries (SELECT, VALUES, WITH …) over the session, planned from the
//! statement eddy parsed: one parse, no round trip through SQL text.
//!
//! datafusion-postgres' own path re-parses a query's text with a
//! compatibility parser built for client introspection (psql's `\d`,
//! pgcli's completion, drivers' type lookups), then prints the statement
//! and has DataFusion parse the print again. Two of its rewrites change
//! what a user's query means — a scalar subquery in the SELECT list that
//! looks correlated becomes NULL, and a column beside a wildcard is renamed
//! `__alias_…` — and the print loses what sqlparser cannot print back
//! (`- -1` prints as `--1`, a comment). So only introspection queries (those
//! that read `pg_catalog` or `information_schema`) take that path; every
//! other query is planned here with the rewrites that only widen what
//! parses (PostgreSQL's `ANY (array)`, `COLLATE`, `current_user`,
//! `'…'::regclass`, `pg_catalog.`-qualified function names).

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::UInt64Array;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    ColumnDef, CreateTable, DataType as SqlType, ExactNumberInfo, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName, Query, SelectItem,
    SetExpr, Statement as SqlStatement, visit_expressions, visit_expressions_mut, visit_relations,
};
use datafusion_postgres::datafusion_pg_catalog::sql::rules::{
    CurrentUserVariableToSessionUserFunctionCall, FixArrayLiteral, FixVersionColumnName,
    PrependUnqualifiedPgTableName, ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation,
    RewritePgCatalogOperator, RewriteRegCastToSubquery, SqlStatementRewriteRule,
    StripCallableQualifier, StripCollate,
};

use datafusion::common::ParamValues;

use super::{Engine, EngineError, Output, Result, names};

/// Whether `stmt` is a query eddy plans itself: a query that reads no
/// system catalog of PostgreSQL's. The others (and every non-query
/// statement eddy does not run) go to datafusion-postgres as text.
pub fn is_user_query(stmt: &SqlStatement) -> bool {
    let query = match stmt {
        SqlStatement::Query(_) => true,
        SqlStatement::Explain { statement, .. } => matches!(**statement, SqlStatement::Query(_)),
        _ => false,
    };
    query && !reads_pg_catalog(stmt)
}

/// Whether `stmt` names a relation of `pg_catalog` or `information_schema`
/// (qualified, or unqualified with a `pg_` name as psql writes them).
fn reads_pg_catalog(stmt: &SqlStatement) -> bool {
    let hit = visit_relations(stmt, |name: &ObjectName| {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
            .collect();
        let system = match parts.as_slice() {
            [] => false,
            [one] => one.starts_with("pg_"),
            [schemas @ .., _] => schemas
                .iter()
                .any(|p| p == "pg_catalog" || p == "information_schema"),
        };
        if system {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    hit.is_break()
}

/// The rewrites of datafusion-postgres' compatibility parser that keep a
/// query's meaning, in its order.
static REWRITES: LazyLock<Vec<Arc<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| {
    vec![
        Arc::new(ResolveUnqualifiedIdentifier),
        Arc::new(RewriteArrayAnyAllOperation),
        Arc::new(PrependUnqualifiedPgTableName),
        Arc::new(StripCallableQualifier),
        Arc::new(FixArrayLiteral),
        Arc::new(CurrentUserVariableToSessionUserFunctionCall),
        Arc::new(StripCollate),
        Arc::new(RewritePgCatalogOperator),
        Arc::new(RewriteRegCastToSubquery::new()),
        Arc::new(FixVersionColumnName),
    ]
});

impl Engine {
    /// Plan a query from its parsed statement: the statement as rewritten
    /// (the extended protocol keeps it beside the plan) and the logical
    /// plan, parameters (`$1`) unbound.
    ///
    /// Plans are kept by the statement's text until the catalog changes
    /// (`plans.rs`).
    pub async fn plan_query(&self, stmt: SqlStatement) -> Result<(SqlStatement, LogicalPlan)> {
        let key = stmt.to_string();
        if let Some(kept) = self.plans.get(&key) {
            return Ok(kept);
        }
        let generation = self.plans.generation();
        let (stmt, plan) = self.plan_afresh(stmt).await?;
        self.plans.put(key, generation, &stmt, &plan);
        Ok((stmt, plan))
    }

    async fn plan_afresh(&self, mut stmt: SqlStatement) -> Result<(SqlStatement, LogicalPlan)> {
        super::whole_rows::whole_row_arguments(&self.ctx, &mut stmt).await;
        self.check_calls(&stmt)?;
        let mut stmt = REWRITES.iter().fold(stmt, |s, rule| rule.rewrite(s));
        float_is_double(&mut stmt);
        let state = self.ctx.state();
        let mut planned = stmt.clone();
        self.hide_rowtime(&mut planned);
        set_returning_in_select_list(&mut planned);
        super::using::merge_join_columns(&self.ctx, &mut planned).await;
        super::set_ops::multiset_operations(&self.ctx, &mut planned).await;
        names::name_result_columns(&mut planned);
        super::aliases::complete_partial_aliases(&self.ctx, &mut planned).await;
        let plan = match state
            .statement_to_plan(DfStatement::Statement(Box::new(planned.clone())))
            .await
        {
            Err(e) if names::is_duplicate_name_error(&e) => {
                let Some(aliased) = names::with_internal_aliases(planned) else {
                    return Err(e.into());
                };
                state
                    .statement_to_plan(DfStatement::Statement(Box::new(aliased)))
                    .await?
            }
            other => other?,
        };
        Ok((stmt, plan))
    }

    /// A query's plan, its parameters bound, ready to run: the correlated
    /// subqueries DataFusion leaves undecorrelated (a correlated scalar
    /// subquery in the SELECT list or inside CASE, as SQLAlchemy's column
    /// reflection has them) made applies (`apply.rs`). After binding,
    /// since an apply runs its subquery's plan as it stands.
    ///
    /// The frame is pinned to one start time, which its subqueries' runs
    /// share, so every relation it reads is read at one epoch.
    pub fn runnable(&self, plan: LogicalPlan) -> Result<datafusion::dataframe::DataFrame> {
        let state = self.ctx.state();
        let as_of = state.execution_props().query_execution_start_time;
        let plan = super::apply::rewrite(plan, &self.ctx, as_of)?;
        Ok(datafusion::dataframe::DataFrame::new(state, plan))
    }

    /// Run a query statement: its rows and PostgreSQL's names for its
    /// columns.
    pub async fn run_query(
        &self,
        stmt: SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let (df, names) = self.query_frame(stmt, params).await?;
        Ok(Output::Rows { df, names })
    }

    /// A query planned from `stmt` with its `$n` parameters bound, ready
    /// to run, and PostgreSQL's names for its columns (SELECT and COPY …
    /// TO alike).
    pub(super) async fn query_frame(
        &self,
        stmt: SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<(datafusion::dataframe::DataFrame, Vec<String>)> {
        let (stmt, plan) = self.plan_query(stmt).await?;
        let plan = match params {
            Some(p) => plan.replace_params_with_values(&p)?,
            None => plan,
        };
        let names = names::column_names(&stmt, plan.schema().as_arrow());
        Ok((self.runnable(plan)?, names))
    }
}

/// The `INTO t` of a `SELECT … INTO t` (the leftmost SELECT's).
pub fn select_into(q: &Query) -> Option<&ObjectName> {
    match q.body.as_ref() {
        SetExpr::Select(s) => s.into.as_ref().map(|i| &i.name),
        _ => None,
    }
}

/// Remove the `INTO t` of a `SELECT … INTO t`: the table's name.
pub fn take_select_into(q: &mut Query) -> String {
    match q.body.as_mut() {
        SetExpr::Select(s) => s
            .into
            .take()
            .map(|i| i.name.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

impl Engine {
    /// `CREATE TABLE t [(columns)] AS query`: a table with the query's
    /// columns (named as its result is, typed as its plan), filled with
    /// its rows in one fsynced INSERT; answered `SELECT n` as PostgreSQL.
    pub(super) async fn create_table_as(&self, mut ct: CreateTable) -> Result<Output> {
        let Some(query) = ct.query.take() else {
            return Err(EngineError::Invalid(
                "CREATE TABLE AS without a query".into(),
            ));
        };
        let name = names::object(&ct.name);
        if ct.if_not_exists && self.lock()?.get(&name).is_some() {
            return Ok(Output::Command("CREATE TABLE AS".into(), None));
        }
        let (stmt, plan) = self.plan_query(SqlStatement::Query(query.clone())).await?;
        let mut columns = names::column_names(&stmt, plan.schema().as_arrow());
        if !ct.columns.is_empty() {
            if ct.columns.len() > columns.len() {
                return Err(EngineError::Refused {
                    code: "42601",
                    message: "too many column names were specified".into(),
                });
            }
            for (c, def) in columns.iter_mut().zip(&ct.columns) {
                *c = names::ident(&def.name);
            }
        }
        if let Some(dup) = columns
            .iter()
            .enumerate()
            .find(|(i, c)| columns[..*i].contains(c))
        {
            return Err(EngineError::DuplicateColumn(dup.1.clone()));
        }
        ct.columns = columns
            .iter()
            .zip(plan.schema().fields())
            .map(|(n, f)| {
                Ok(ColumnDef {
                    name: Ident::with_quote('"', n),
                    data_type: super::statement::parse_type(
                        &if crate::types::jsonb::is_jsonb(f) {
                            "jsonb".to_string()
                        } else {
                            crate::types::pg_name(f.data_type())
                        },
                    )?,
                    options: vec![],
                })
            })
            .collect::<Result<_>>()?;
        let text = SqlStatement::CreateTable(ct.clone()).to_string();
        Box::pin(self.create_table(ct, text)).await?;
        let insert = format!("INSERT INTO {} {query}", names::quoted(&name));
        let batches = self.ctx.sql(&insert).await?.collect().await?;
        let rows = batches
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .map_or(0, |a| a.value(0) as usize);
        Ok(Output::Command("SELECT".into(), Some(rows)))
    }
}

/// `generate_series(…)` as an item of a SELECT list is a set-returning
/// function in PostgreSQL (a row per value); DataFusion's returns one
/// array. An item that is such a call becomes `unnest(generate_series(…))`,
/// which DataFusion expands into rows (the other items repeated).
pub(super) fn set_returning_in_select_list(stmt: &mut SqlStatement) {
    let _ = names::visit_selects_mut(stmt, |select| {
        for item in select.projection.iter_mut() {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
            else {
                continue;
            };
            let Expr::Function(f) = expr else {
                continue;
            };
            if !f.name.to_string().eq_ignore_ascii_case("generate_series") {
                continue;
            }
            let call = expr.clone();
            *expr = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("unnest")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(call))],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            if let SelectItem::UnnamedExpr(e) = item {
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::new("generate_series"),
                };
            }
        }
    });
}

/// PostgreSQL's `float` (and `float(p)` for p > 24) is `double
/// precision`; DataFusion reads it as `real`.
fn float_is_double(stmt: &mut SqlStatement) {
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Cast { data_type, .. } = e
            && let SqlType::Float(info) = data_type
        {
            *data_type = match info {
                ExactNumberInfo::Precision(p) | ExactNumberInfo::PrecisionAndScale(p, _)
                    if *p <= 24 =>
                {
                    SqlType::Real
                }
                _ => SqlType::DoublePrecision,
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

impl Engine {
    /// Calls PostgreSQL refuses that DataFusion would run: `count()`
    /// (42809, as PostgreSQL), FILTER on a function that is not an
    /// aggregate (42809), and an aggregate over a whole row `t.*` (0A000:
    /// DataFusion would count a constant).
    fn check_calls(&self, stmt: &SqlStatement) -> Result<()> {
        let mut err = None;
        let _ = visit_expressions(stmt, |e| {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let name = f.name.to_string().to_ascii_lowercase();
            let args = match &f.args {
                FunctionArguments::List(l) => l.args.as_slice(),
                _ => &[],
            };
            if name == "count"
                && matches!(f.args, FunctionArguments::List(ref l) if l.args.is_empty())
            {
                err = Some(EngineError::WrongObject(
                    "count(*) must be used to call a parameterless aggregate function".into(),
                ));
            } else if f.filter.is_some()
                && datafusion::execution::FunctionRegistry::udaf(self.ctx.as_ref(), &name).is_err()
                && !matches!(f.args, FunctionArguments::None)
            {
                err = Some(EngineError::WrongObject(format!(
                    "FILTER specified, but {name} is not an aggregate function"
                )));
            } else if args.iter().any(|a| {
                matches!(
                    a,
                    FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_))
                )
            }) {
                err = Some(EngineError::Unsupported(format!(
                    "{name}() of a whole row (t.*)"
                )));
            }
            if err.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> SqlStatement {
        super::super::parse(sql)
            .expect("parses")
            .pop()
            .and_then(super::super::Statement::into_sql)
            .expect("one SQL statement")
    }

    #[test]
    fn introspection_queries_are_told_from_user_queries() {
        assert!(is_user_query(&one("SELECT a, (SELECT 1 FROM u) FROM t")));
        assert!(is_user_query(&one(
            "SELECT * FROM eddy_catalog.checkpoints"
        )));
        assert!(!is_user_query(&one("SELECT * FROM pg_catalog.pg_class")));
        assert!(!is_user_query(&one("SELECT relname FROM pg_class")));
        assert!(!is_user_query(&one(
            "SELECT table_name FROM information_schema.tables"
        )));
        assert!(!is_user_query(&one(
            "SELECT a FROM t WHERE a IN (SELECT oid FROM pg_catalog.pg_type)"
        )));
        assert!(!is_user_query(&one("INSERT INTO t VALUES (1)")));
    }
}
