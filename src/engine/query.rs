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

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, Statement as SqlStatement, visit_relations};
use datafusion_postgres::datafusion_pg_catalog::sql::rules::{
    CurrentUserVariableToSessionUserFunctionCall, FixArrayLiteral, FixVersionColumnName,
    PrependUnqualifiedPgTableName, ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation,
    RewritePgCatalogOperator, RewriteRegCastToSubquery, SqlStatementRewriteRule,
    StripCallableQualifier, StripCollate,
};

use datafusion::common::ParamValues;

use super::{Engine, Output, Result, names};

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
    pub async fn plan_query(&self, stmt: SqlStatement) -> Result<(SqlStatement, LogicalPlan)> {
        let stmt = REWRITES.iter().fold(stmt, |s, rule| rule.rewrite(s));
        let state = self.ctx.state();
        let plan = match state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt.clone())))
            .await
        {
            Err(e) if names::is_duplicate_name_error(&e) => {
                let Some(aliased) = names::with_internal_aliases(stmt.clone()) else {
                    return Err(e.into());
                };
                state
                    .statement_to_plan(DfStatement::Statement(Box::new(aliased)))
                    .await?
            }
            other => other?,
        };
        let plan = super::apply::rewrite(plan, &self.ctx)?;
        Ok((stmt, plan))
    }

    /// Run a query statement: its rows and PostgreSQL's names for its
    /// columns.
    pub async fn run_query(
        &self,
        stmt: SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let (stmt, plan) = self.plan_query(stmt).await?;
        let plan = match params {
            Some(p) => plan.replace_params_with_values(&p)?,
            None => plan,
        };
        let names = names::column_names(&stmt, plan.schema().as_arrow());
        let df = self.ctx.execute_logical_plan(plan).await?;
        Ok(Output::Rows { df, names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> SqlStatement {
        match super::super::parse(sql).unwrap().pop().unwrap() {
            super::super::Statement::Sql(s, _) => *s,
            _ => panic!("not SQL"),
        }
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
