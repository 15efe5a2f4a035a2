//! The merged columns of `JOIN … USING (c)` and NATURAL JOIN.
//!
//! In PostgreSQL the join column `c` of `l JOIN r USING (c)` is one column:
//! `l.c` for an inner or left join, `r.c` for a right join and
//! `COALESCE(l.c, r.c)` for a full join. `SELECT *` shows the join columns
//! first (in the USING list's order; for NATURAL, the common columns in the
//! left side's order), then the left side's other columns, then the
//! right's; an unqualified `c` means the merged column. DataFusion takes
//! one side's `c` for every kind of join and orders the wildcard its own
//! way, so a row only one side has can show a NULL key. For a SELECT whose
//! FROM is one such join of two relations — tables, views, or subqueries
//! with an alias (their columns from planning them) — the wildcard is
//! spelled out in PostgreSQL's order and an unqualified join column in the
//! SELECT list, WHERE, GROUP BY and HAVING becomes the merged column.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, JoinConstraint, JoinOperator, ObjectName, Select, SelectItem,
    Statement as SqlStatement, TableAlias, TableFactor, visit_expressions, visit_expressions_mut,
};

use super::names::visit_selects_mut;

/// Rewrite the SELECTs of `stmt` that read a USING or NATURAL join of two
/// relations (their columns from `ctx`).
pub async fn merge_join_columns(ctx: &SessionContext, stmt: &mut SqlStatement) {
    let mut sources = Vec::new();
    let _ = visit_selects_mut(stmt, |s| {
        if let Some(j) = Join::of(s) {
            sources.push(j.left.source);
            sources.push(j.right.source);
        }
    });
    if sources.is_empty() {
        return;
    }
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for source in sources {
        let (key, names) = match source {
            Source::Table(t) => match ctx.table_provider(t.as_str()).await {
                Ok(p) => {
                    let names = field_names(p.schema().fields());
                    (t, names)
                }
                Err(_) => continue,
            },
            // A subquery's columns are its plan's (one that does not plan
            // on its own, a LATERAL one, is left as it is).
            Source::Derived(q) => {
                let key = q.to_string();
                let plan = ctx
                    .state()
                    .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                        SqlStatement::Query(q),
                    )))
                    .await;
                match plan {
                    Ok(p) => (key, field_names(p.schema().fields())),
                    Err(_) => continue,
                }
            }
        };
        columns.insert(key, names);
    }
    let _ = visit_selects_mut(stmt, |s| rewrite(s, &columns));
}

fn field_names(fields: &datafusion::arrow::datatypes::Fields) -> Vec<String> {
    fields.iter().map(|f| f.name().clone()).collect()
}

enum Source {
    Table(String),
    Derived(Box<datafusion::sql::sqlparser::ast::Query>),
}

impl Source {
    fn key(&self) -> String {
        match self {
            Source::Table(t) => t.clone(),
            Source::Derived(q) => q.to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Inner,
    Left,
    Right,
    Full,
}

struct Side {
    source: Source,
    qualifier: Ident,
    /// Column names an alias gives it (`AS j (a, b)`).
    renamed: Vec<String>,
}

struct Join {
    kind: Kind,
    left: Side,
    right: Side,
    /// The USING columns; none for NATURAL (the common ones).
    using: Option<Vec<String>>,
}

impl Join {
    fn of(s: &Select) -> Option<Join> {
        let [from] = s.from.as_slice() else {
            return None;
        };
        let [join] = from.joins.as_slice() else {
            return None;
        };
        let (kind, constraint) = match &join.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (Kind::Inner, c),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (Kind::Left, c),
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (Kind::Right, c),
            JoinOperator::FullOuter(c) => (Kind::Full, c),
            _ => return None,
        };
        let using = match constraint {
            JoinConstraint::Using(cols) => Some(
                cols.iter()
                    .map(|c| match c.0.last().and_then(|p| p.as_ident()) {
                        Some(i) => folded(i),
                        None => c.to_string(),
                    })
                    .collect(),
            ),
            JoinConstraint::Natural => None,
            _ => return None,
        };
        Some(Join {
            kind,
            left: side(&from.relation)?,
            right: side(&join.relation)?,
            using,
        })
    }
}

fn side(f: &TableFactor) -> Option<Side> {
    let renamed = |alias: &Option<TableAlias>| -> Vec<String> {
        alias
            .as_ref()
            .map(|a| a.columns.iter().map(|c| folded(&c.name)).collect())
            .unwrap_or_default()
    };
    match f {
        TableFactor::Table { name, alias, .. } => Some(Side {
            source: Source::Table(name.to_string()),
            qualifier: match alias {
                Some(a) => a.name.clone(),
                None => name.0.last()?.as_ident()?.clone(),
            },
            renamed: renamed(alias),
        }),
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(a),
            ..
        } => Some(Side {
            source: Source::Derived(subquery.clone()),
            qualifier: a.name.clone(),
            renamed: renamed(&Some(a.clone())),
        }),
        _ => None,
    }
}

/// A side's column names: its relation's, as its alias renames them.
fn names_of(side: &Side, columns: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    let mut names = columns.get(&side.source.key())?.clone();
    for (n, r) in names.iter_mut().zip(&side.renamed) {
        *n = r.clone();
    }
    Some(names)
}

fn folded(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn rewrite(s: &mut Select, columns: &HashMap<String, Vec<String>>) {
    let Some(join) = Join::of(s) else {
        return;
    };
    let (Some(left), Some(right)) = (
        names_of(&join.left, columns),
        names_of(&join.right, columns),
    ) else {
        return;
    };
    // A name twice on one side is PostgreSQL's error; DataFusion gives its
    // own.
    let twice = |names: &[String]| {
        names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
    };
    if twice(&left) || twice(&right) {
        return;
    }
    let using: Vec<String> = match join.using {
        Some(u) => u,
        None => left.iter().filter(|c| right.contains(c)).cloned().collect(),
    };
    if using.is_empty()
        || using
            .iter()
            .any(|c| !left.contains(c) || !right.contains(c))
    {
        return;
    }
    let (lq, rq) = (&join.left.qualifier, &join.right.qualifier);
    let column =
        |q: &Ident, c: &str| Expr::CompoundIdentifier(vec![q.clone(), Ident::with_quote('"', c)]);
    let kind = join.kind;
    let merged = |c: &str| match kind {
        Kind::Inner | Kind::Left => column(lq, c),
        Kind::Right => column(rq, c),
        Kind::Full => Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("coalesce")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(column(lq, c))),
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(column(rq, c))),
                ],
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        }),
    };
    let replace = |e: &mut Expr| {
        let _ = visit_expressions_mut(e, |e| {
            if let Expr::Identifier(i) = e
                && let name = folded(i)
                && using.contains(&name)
            {
                *e = merged(&name);
            }
            ControlFlow::<()>::Continue(())
        });
    };
    let mut projection = Vec::new();
    for item in s.projection.drain(..) {
        match item {
            SelectItem::Wildcard(_) => {
                for c in &using {
                    projection.push(SelectItem::ExprWithAlias {
                        expr: merged(c),
                        alias: Ident::with_quote('"', c),
                    });
                }
                for c in left.iter().filter(|c| !using.contains(c)) {
                    projection.push(SelectItem::UnnamedExpr(column(lq, c)));
                }
                for c in right.iter().filter(|c| !using.contains(c)) {
                    projection.push(SelectItem::UnnamedExpr(column(rq, c)));
                }
            }
            SelectItem::UnnamedExpr(Expr::Identifier(i)) if using.contains(&folded(&i)) => {
                projection.push(SelectItem::ExprWithAlias {
                    expr: merged(&folded(&i)),
                    alias: i,
                });
            }
            SelectItem::UnnamedExpr(mut e) => {
                if !has_subquery(&e) {
                    replace(&mut e);
                }
                projection.push(SelectItem::UnnamedExpr(e));
            }
            SelectItem::ExprWithAlias { mut expr, alias } => {
                if !has_subquery(&expr) {
                    replace(&mut expr);
                }
                projection.push(SelectItem::ExprWithAlias { expr, alias });
            }
            other => projection.push(other),
        }
    }
    s.projection = projection;
    // WHERE, unless a subquery in it could mean its own column of the name.
    if let Some(w) = s.selection.as_mut()
        && !has_subquery(w)
    {
        replace(w);
    }
    if let GroupByExpr::Expressions(exprs, _) = &mut s.group_by {
        exprs.iter_mut().for_each(replace);
    }
    if let Some(h) = s.having.as_mut()
        && !has_subquery(h)
    {
        replace(h);
    }
}

fn has_subquery(e: &Expr) -> bool {
    visit_expressions(e, |e| {
        if matches!(
            e,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
        ) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}
