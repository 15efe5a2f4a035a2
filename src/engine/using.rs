//! The merged column of a RIGHT or FULL `JOIN … USING (c)` / NATURAL
//! JOIN.
//!
//! In PostgreSQL the join column `c` of `l FULL JOIN r USING (c)` is one
//! column, `COALESCE(l.c, r.c)`: `SELECT *` shows it first, and an
//! unqualified `c` means it. DataFusion takes `l.c` for both, so a row
//! only the right side has shows a NULL key. For a SELECT whose FROM is
//! one such join of two tables, the wildcard is spelled out in
//! PostgreSQL's order (the merged columns, then the left's others, then
//! the right's) and an unqualified join column in the SELECT list, WHERE,
//! GROUP BY and HAVING becomes the COALESCE. (For inner and left joins
//! `l.c` is the merged value already.)

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, JoinConstraint, JoinOperator, ObjectName, Select, SelectItem,
    Statement as SqlStatement, TableFactor, visit_expressions, visit_expressions_mut,
};

use super::names::visit_selects_mut;

/// Rewrite the SELECTs of `stmt` that read a RIGHT/FULL USING or NATURAL
/// join of two tables (the tables' columns from `ctx`).
pub async fn merge_join_columns(ctx: &SessionContext, stmt: &mut SqlStatement) {
    let mut tables = Vec::new();
    let _ = visit_selects_mut(stmt, |s| {
        if let Some(j) = Join::of(s) {
            tables.push(j.left.table);
            tables.push(j.right.table);
        }
    });
    if tables.is_empty() {
        return;
    }
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for t in tables {
        if let Ok(p) = ctx.table_provider(t.as_str()).await {
            let names = p
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            columns.insert(t, names);
        }
    }
    let _ = visit_selects_mut(stmt, |s| rewrite(s, &columns));
}

struct Side {
    table: String,
    qualifier: Ident,
}

struct Join {
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
        let constraint = match &join.join_operator {
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) | JoinOperator::FullOuter(c) => c,
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
            left: side(&from.relation)?,
            right: side(&join.relation)?,
            using,
        })
    }
}

fn side(f: &TableFactor) -> Option<Side> {
    match f {
        TableFactor::Table { name, alias, .. } => Some(Side {
            table: name.to_string(),
            qualifier: match alias {
                Some(a) => a.name.clone(),
                None => name.0.last()?.as_ident()?.clone(),
            },
        }),
        _ => None,
    }
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
        columns.get(&join.left.table),
        columns.get(&join.right.table),
    ) else {
        return;
    };
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
    let merged = |c: &str| {
        Expr::Function(Function {
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
        })
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
