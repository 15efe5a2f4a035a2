//! A whole row as an aggregate's argument: `count(t.*)` and
//! `count(DISTINCT t.*)`, which PostgreSQL reads as the row value of `t`.
//! DataFusion has no row values, so `t.*` there becomes `struct(t.c1, …)`
//! of `t`'s columns (from the catalog, or from planning a derived table),
//! which counts and compares as a row does: one value per row, never NULL,
//! equal when every column is (NULLs alike, as DISTINCT takes them).
//!
//! Only where `t` cannot be NULL-extended: a SELECT whose FROM has an
//! outer join is left as written (and refused with 0A000 by
//! `query::check_calls`), since PostgreSQL's row of a NULL-extended side
//! is NULL and a struct is not.

use std::collections::HashMap;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    JoinOperator, ObjectName, Select, Statement as SqlStatement, TableFactor, visit_expressions,
};

use super::names::{self, visit_selects_mut};

/// Where a whole-row argument's relation is: a table or view by name, or
/// a derived table's query; and the columns an alias renames.
enum Source {
    Table(String),
    Derived(Box<datafusion::sql::sqlparser::ast::Query>),
}

/// Rewrite the `t.*` arguments of function calls in `stmt`.
pub async fn whole_row_arguments(ctx: &SessionContext, stmt: &mut SqlStatement) {
    // (select's relation name as written → its source and alias columns)
    let mut wanted: Vec<(String, Source, Vec<String>)> = Vec::new();
    let _ = visit_selects_mut(stmt, |s| {
        if !has_whole_row_argument(s) || has_outer_join(s) {
            return;
        }
        for (name, source, renamed) in relations(s) {
            wanted.push((name, source, renamed));
        }
    });
    if wanted.is_empty() {
        return;
    }
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for (name, source, renamed) in wanted {
        let found = match source {
            Source::Table(t) => ctx
                .table_provider(t.as_str())
                .await
                .ok()
                .map(|p| field_names(p.schema().fields())),
            Source::Derived(q) => ctx
                .state()
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    SqlStatement::Query(q),
                )))
                .await
                .ok()
                .map(|p| field_names(p.schema().fields())),
        };
        if let Some(mut found) = found {
            for (i, r) in renamed.into_iter().enumerate() {
                if let Some(c) = found.get_mut(i) {
                    *c = r;
                }
            }
            columns.insert(name, found);
        }
    }
    let _ = visit_selects_mut(stmt, |s| {
        if has_outer_join(s) {
            return;
        }
        for item in &mut s.projection {
            let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(item, |e| {
                if let Expr::Function(f) = e
                    && let FunctionArguments::List(list) = &mut f.args
                {
                    for a in &mut list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(t)) = a
                            && let Some(cols) = columns.get(&names::object(t))
                        {
                            *a = FunctionArg::Unnamed(FunctionArgExpr::Expr(row_of(t, cols)));
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
    });
}

fn field_names(fields: &datafusion::arrow::datatypes::Fields) -> Vec<String> {
    fields.iter().map(|f| f.name().clone()).collect()
}

/// `struct(t.c1, …)`.
fn row_of(t: &ObjectName, columns: &[String]) -> Expr {
    let args = columns
        .iter()
        .map(|c| {
            let mut parts: Vec<Ident> = t.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
            parts.push(Ident::with_quote('"', c));
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts)))
        })
        .collect();
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("struct")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn has_whole_row_argument(s: &Select) -> bool {
    s.projection.iter().any(|item| {
        visit_expressions(item, |e| match e {
            Expr::Function(f)
                if matches!(&f.args, FunctionArguments::List(l) if l.args.iter().any(|a| matches!(
                    a,
                    FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_))
                ))) =>
            {
                std::ops::ControlFlow::Break(())
            }
            _ => std::ops::ControlFlow::Continue(()),
        })
        .is_break()
    })
}

fn has_outer_join(s: &Select) -> bool {
    s.from.iter().flat_map(|f| &f.joins).any(|j| {
        matches!(
            j.join_operator,
            JoinOperator::Left(_)
                | JoinOperator::LeftOuter(_)
                | JoinOperator::Right(_)
                | JoinOperator::RightOuter(_)
                | JoinOperator::FullOuter(_)
        )
    })
}

/// The relations of a SELECT's FROM: the name a `t.*` would use for each
/// (its alias, else its name), its source and the columns its alias
/// names.
fn relations(s: &Select) -> Vec<(String, Source, Vec<String>)> {
    let factors = s
        .from
        .iter()
        .flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)));
    let mut out = Vec::new();
    for factor in factors {
        match factor {
            TableFactor::Table { name, alias, .. } => {
                let (called, renamed) = match alias {
                    Some(a) => (
                        names::ident(&a.name),
                        a.columns.iter().map(|c| names::ident(&c.name)).collect(),
                    ),
                    None => (names::object(name), vec![]),
                };
                out.push((called, Source::Table(names::object(name)), renamed));
            }
            TableFactor::Derived {
                subquery,
                alias: Some(a),
                lateral: false,
                ..
            } => out.push((
                names::ident(&a.name),
                Source::Derived(subquery.clone()),
                a.columns.iter().map(|c| names::ident(&c.name)).collect(),
            )),
            _ => {}
        }
    }
    out
}
