//! `EXCEPT ALL` and `INTERSECT ALL` with SQL's multiset meaning.
//!
//! In PostgreSQL a row that the left side has `l` times and the right `r`
//! times is in `L EXCEPT ALL R` max(l − r, 0) times and in
//! `L INTERSECT ALL R` min(l, r) times. DataFusion plans both as a semi or
//! anti join of the left side's rows, so `EXCEPT ALL` dropped every copy
//! of a row the right side has once, and `INTERSECT ALL` kept every copy
//! the left side has (wrong results, not errors).
//!
//! Each such operation is rewritten before planning into the distinct one
//! over numbered copies, which has the multiset meaning:
//!
//! ```sql
//! SELECT c1 AS name1, … FROM (
//!   SELECT c1, …, row_number() OVER (PARTITION BY c1, …) AS rn FROM (L) AS l (c1, …)
//!   EXCEPT | INTERSECT
//!   SELECT c1, …, row_number() OVER (PARTITION BY c1, …) AS rn FROM (R) AS r (c1, …)
//! ) AS s
//! ```
//!
//! The copies of a row are numbered 1‥l on the left and 1‥r on the right,
//! so the left's numbers above r (EXCEPT) or up to r (INTERSECT) remain.
//! A materialized view maintains the numbering with the `Enumerate`
//! operator (`dataflow/enumerate.rs`). The left side's column names are
//! the result's, from planning it alone; a side that does not plan alone
//! (it reads an outer query's columns or CTEs) is left as written.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Query, SetExpr, SetOperator, SetQuantifier, Statement as SqlStatement, TableFactor, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::names;

/// Rewrite every `EXCEPT ALL` and `INTERSECT ALL` of `stmt` (column names
/// from `ctx`).
pub async fn multiset_operations(ctx: &SessionContext, stmt: &mut SqlStatement) {
    let mut found = Found::default();
    let _ = stmt.visit(&mut found);
    if found.sides.is_empty() {
        return;
    }
    let mut columns = HashMap::new();
    for (key, query) in found.sides {
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                SqlStatement::Query(Box::new(query.clone())),
            )))
            .await;
        if let Ok(plan) = plan {
            let schema = plan.schema().as_arrow().clone();
            let names = names::column_names(&SqlStatement::Query(Box::new(query)), &schema);
            columns.insert(key, names);
        }
    }
    let _ = stmt.visit(&mut Rewrite { columns });
}

fn is_multiset(set: &SetExpr) -> bool {
    matches!(
        set,
        SetExpr::SetOperation {
            op: SetOperator::Except | SetOperator::Intersect,
            set_quantifier: SetQuantifier::All,
            ..
        }
    )
}

/// The left sides of the multiset operations, each as a query of its own
/// (with the CTEs of the query it is in), by their text.
#[derive(Default)]
struct Found {
    sides: Vec<(String, Query)>,
}

impl Found {
    fn walk(&mut self, set: &SetExpr, within: &Query) {
        if let SetExpr::SetOperation { left, right, .. } = set {
            if is_multiset(set) {
                let mut alone = within.clone();
                alone.body = left.clone();
                alone.order_by = None;
                alone.limit_clause = None;
                alone.fetch = None;
                self.sides.push((left.to_string(), alone));
            }
            self.walk(left, within);
            self.walk(right, within);
        }
    }
}

impl VisitorMut for Found {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let q = query.clone();
        self.walk(&q.body, &q);
        ControlFlow::Continue(())
    }
}

struct Rewrite {
    columns: HashMap<String, Vec<String>>,
}

impl Rewrite {
    fn walk(&self, set: &mut SetExpr) {
        if is_multiset(set)
            && let Some(columns) = self.columns.get(&left_text(set))
            && let Some(q) = numbered(set, columns)
        {
            *set = SetExpr::Query(Box::new(q));
            return;
        }
        if let SetExpr::SetOperation { left, right, .. } = set {
            self.walk(left);
            self.walk(right);
        }
    }
}

fn left_text(set: &SetExpr) -> String {
    match set {
        SetExpr::SetOperation { left, .. } => left.to_string(),
        _ => String::new(),
    }
}

impl VisitorMut for Rewrite {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.walk(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// The distinct operation over numbered copies that `set` (a multiset
/// EXCEPT or INTERSECT of `columns.len()` columns) means.
fn numbered(set: &SetExpr, columns: &[String]) -> Option<Query> {
    let SetExpr::SetOperation {
        op, left, right, ..
    } = set
    else {
        return None;
    };
    let cols: Vec<String> = (1..=columns.len())
        .map(|i| format!("__eddy_c{i}"))
        .collect();
    let list = cols.join(", ");
    let outer: Vec<String> = cols
        .iter()
        .zip(columns)
        .map(|(c, name)| format!("{c} AS {}", names::quoted(name)))
        .collect();
    let side = |alias: &str| {
        format!(
            "SELECT {list}, row_number() OVER (PARTITION BY {list}) AS __eddy_rn \
             FROM (SELECT 1) AS {alias} ({list})"
        )
    };
    let op = match op {
        SetOperator::Except => "EXCEPT",
        _ => "INTERSECT",
    };
    let sql = format!(
        "SELECT {} FROM ({} {op} {}) AS __eddy_s",
        outer.join(", "),
        side("__eddy_l"),
        side("__eddy_r")
    );
    let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?.pop()?;
    let mut fill = Fill {
        left: Some(left.as_ref().clone()),
        right: Some(right.as_ref().clone()),
    };
    let _ = stmt.visit(&mut fill);
    match stmt {
        SqlStatement::Query(q) if fill.left.is_none() && fill.right.is_none() => Some(*q),
        _ => None,
    }
}

/// Puts the two sides into the template's derived tables.
struct Fill {
    left: Option<SetExpr>,
    right: Option<SetExpr>,
}

impl VisitorMut for Fill {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Derived {
            subquery,
            alias: Some(alias),
            ..
        } = factor
        {
            let side = match alias.name.value.as_str() {
                "__eddy_l" => self.left.take(),
                "__eddy_r" => self.right.take(),
                _ => None,
            };
            if let Some(side) = side {
                *subquery.body = side;
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn multiset_operations_become_numbered_distinct_ones() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a int, b int)").await.unwrap();
        let mut stmt = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT a, b AS x FROM t EXCEPT ALL SELECT a, b FROM t UNION SELECT 1, 2 ORDER BY 1",
        )
        .unwrap()
        .pop()
        .unwrap();
        multiset_operations(&ctx, &mut stmt).await;
        let text = stmt.to_string();
        assert!(
            text.contains(r#"__eddy_c1 AS "a", __eddy_c2 AS "x""#),
            "{text}"
        );
        assert!(
            text.contains("(SELECT a, b AS x FROM t) AS __eddy_l"),
            "{text}"
        );
        assert!(text.contains(") EXCEPT SELECT __eddy_c1"), "{text}");
        assert!(text.ends_with("UNION SELECT 1, 2 ORDER BY 1"), "{text}");
        assert!(!text.contains("ALL"), "{text}");
    }
}
