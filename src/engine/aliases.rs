//! PostgreSQL's partial column lists. `FROM t AS x (a)`, `FROM (SELECT 1
//! AS a, 2 AS b) AS s (x)`, `CREATE VIEW v (p) AS …` and `CREATE
//! MATERIALIZED VIEW m (p) AS …` rename a relation's first columns and keep
//! the others' names; DataFusion wants a name for every column. Each list
//! shorter than its relation is completed with the names of the rest (a
//! materialized view's list excepted: it names every column, as in
//! Materialize and RisingWave): a
//! table's from the session, a subquery's from planning it alone (a
//! LATERAL one, or one that does not plan alone, is left as written and
//! DataFusion's error stands). A view's list longer than its query is
//! refused as PostgreSQL refuses it (42601).

use std::collections::HashMap;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Ident, Query, Statement as SqlStatement, TableAliasColumnDef, TableFactor, ViewColumnDef,
};

use super::names::{self, visit_selects_mut};
use super::{EngineError, Result};

/// The columns of what a factor with a column list reads, by key.
enum Source {
    Table(String),
    Derived(Box<Query>),
}

impl Source {
    fn key(&self) -> String {
        match self {
            Source::Table(t) => format!("table {t}"),
            Source::Derived(q) => q.to_string(),
        }
    }

    /// What `factor` reads, when it has a column list.
    fn of(factor: &TableFactor) -> Option<Source> {
        match factor {
            TableFactor::Table {
                name,
                alias: Some(a),
                args: None,
                ..
            } if !a.columns.is_empty() => Some(Source::Table(names::object(name))),
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(a),
                ..
            } if !a.columns.is_empty() => Some(Source::Derived(subquery.clone())),
            _ => None,
        }
    }
}

/// Every FROM item of `s`, joined ones included.
fn factors(s: &mut datafusion::sql::sqlparser::ast::Select) -> Vec<&mut TableFactor> {
    let mut out = Vec::new();
    for from in &mut s.from {
        out.push(&mut from.relation);
        for j in &mut from.joins {
            out.push(&mut j.relation);
        }
    }
    out
}

/// Complete the column lists of `stmt`'s FROM items that name fewer
/// columns than their relation has.
pub async fn complete_partial_aliases(ctx: &SessionContext, stmt: &mut SqlStatement) {
    let mut sources = Vec::new();
    let _ = visit_selects_mut(stmt, |s| {
        for f in factors(s) {
            sources.extend(Source::of(f));
        }
    });
    if sources.is_empty() {
        return;
    }
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for source in sources {
        let key = source.key();
        if columns.contains_key(&key) {
            continue;
        }
        if let Some(found) = names_of(ctx, source).await {
            columns.insert(key, found);
        }
    }
    let _ = visit_selects_mut(stmt, |s| {
        for f in factors(s) {
            let Some(key) = Source::of(f).map(|s| s.key()) else {
                continue;
            };
            let (
                Some(all),
                TableFactor::Table { alias: Some(a), .. }
                | TableFactor::Derived { alias: Some(a), .. },
            ) = (columns.get(&key), f)
            else {
                continue;
            };
            if a.columns.len() < all.len() {
                let rest = all[a.columns.len()..].iter().map(|n| TableAliasColumnDef {
                    name: Ident::with_quote('"', n),
                    data_type: None,
                });
                a.columns.extend(rest);
            }
        }
    });
}

/// The column names of a table or of a subquery planned alone.
async fn names_of(ctx: &SessionContext, source: Source) -> Option<Vec<String>> {
    let fields = match source {
        Source::Table(t) => ctx
            .table_provider(t.as_str())
            .await
            .ok()?
            .schema()
            .fields()
            .clone(),
        Source::Derived(q) => ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                SqlStatement::Query(q),
            )))
            .await
            .ok()?
            .schema()
            .as_arrow()
            .fields()
            .clone(),
    };
    Some(fields.iter().map(|f| f.name().clone()).collect())
}

/// A view's column list against its query: completed with the query's
/// other columns' names when shorter and `partial` (PostgreSQL's plain
/// views; a materialized view's must name every column, as Materialize
/// and RisingWave refuse one that does not); refused (42601, `too_many`
/// as PostgreSQL words it) when longer. A query that does not plan alone is
/// left to the view's own planning.
pub async fn complete_view_columns(
    ctx: &SessionContext,
    query: &Query,
    columns: &mut Vec<ViewColumnDef>,
    too_many: &str,
    partial: bool,
) -> Result<()> {
    if columns.is_empty() {
        return Ok(());
    }
    let mut q = SqlStatement::Query(Box::new(query.clone()));
    names::name_result_columns(&mut q);
    let SqlStatement::Query(q) = q else {
        return Ok(());
    };
    let Some(all) = names_of(ctx, Source::Derived(q)).await else {
        return Ok(());
    };
    if columns.len() > all.len() {
        return Err(EngineError::Refused {
            code: "42601",
            message: too_many.to_string(),
        });
    }
    if !partial && columns.len() != all.len() {
        return Err(EngineError::Refused {
            code: "42601",
            message: format!(
                "the column list names {} columns but the query has {} (a materialized view's list names every column, as in Materialize and RisingWave)",
                columns.len(),
                all.len()
            ),
        });
    }
    let rest = all[columns.len()..].iter().map(|n| ViewColumnDef {
        name: Ident::with_quote('"', n),
        data_type: None,
        options: None,
    });
    columns.extend(rest.collect::<Vec<_>>());
    Ok(())
}
