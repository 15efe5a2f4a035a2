//! The names PostgreSQL gives a query's result columns, and the planning
//! of a SELECT list whose names repeat.
//!
//! DataFusion names an unaliased column after its whole expression
//! (`count(*)`, `t.a + Int64(1)`) and refuses two columns of one name;
//! PostgreSQL names it by `FigureColname` (a column's or function's name,
//! `?column?` for the rest) and allows repeats (`SELECT 1, 2`,
//! `SELECT a AS x, b AS x`). Clients read these names (psql's header,
//! psycopg's dict rows, pandas' columns), so eddy sends PostgreSQL's. A
//! SELECT list DataFusion refuses for repeated names is planned with each
//! item aliased `__eddy_col_<i>`; the names sent are PostgreSQL's either way.

use datafusion::arrow::datatypes::Schema;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, Expr, Ident, ObjectName, ObjectNamePart, Query, Select, SelectItem,
    SetExpr, Statement as SqlStatement, VisitMut, VisitorMut,
};

const INTERNAL: &str = "__eddy_col_";

/// The SELECT list whose names the result takes: the leftmost SELECT of
/// the query (a UNION takes its first branch's).
fn select_items(stmt: &SqlStatement) -> Option<&Vec<SelectItem>> {
    let query = match stmt {
        SqlStatement::Query(q) => q,
        _ => return None,
    };
    fn body(e: &SetExpr) -> Option<&Vec<SelectItem>> {
        match e {
            SetExpr::Select(s) => Some(&s.projection),
            SetExpr::SetOperation { left, .. } => body(left),
            SetExpr::Query(q) => body(&q.body),
            _ => None,
        }
    }
    body(&query.body)
}

fn select_items_mut(stmt: &mut SqlStatement) -> Option<&mut Vec<SelectItem>> {
    fn body(e: &mut SetExpr) -> Option<&mut Vec<SelectItem>> {
        match e {
            SetExpr::Select(s) => Some(&mut s.projection),
            SetExpr::SetOperation { left, .. } => body(left),
            SetExpr::Query(q) => body(&mut q.body),
            _ => None,
        }
    }
    match stmt {
        SqlStatement::Query(q) => body(&mut q.body),
        _ => None,
    }
}

/// `stmt` with every named item of its SELECT list aliased
/// `__eddy_col_<i>` (wildcards stay), and in the SELECT lists nested in it
/// (derived tables, CTEs, `INSERT … SELECT`) each item whose name repeats
/// in its list aliased `__eddy_dup_<i>` (PostgreSQL allows the repeat; a
/// reference to such a name would be ambiguous there anyway).
pub fn with_internal_aliases(mut stmt: SqlStatement) -> Option<SqlStatement> {
    let _ = visit_selects_mut(&mut stmt, |select| {
        let names: Vec<String> = select.projection.iter().map(item_name).collect();
        for (i, item) in select.projection.iter_mut().enumerate() {
            if names.iter().filter(|n| **n == names[i]).count() > 1
                && let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } = item
            {
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: Ident::with_quote('"', format!("__eddy_dup_{i}")),
                };
            }
        }
    });
    let Some(items) = select_items_mut(&mut stmt) else {
        return matches!(stmt, SqlStatement::Insert(_)).then_some(stmt);
    };
    for (i, item) in items.iter_mut().enumerate() {
        let alias = Ident::with_quote('"', format!("{INTERNAL}{i}"));
        *item = match std::mem::replace(
            item,
            SelectItem::UnnamedExpr(Expr::Value(
                datafusion::sql::sqlparser::ast::Value::Null.into(),
            )),
        ) {
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                SelectItem::ExprWithAlias { expr, alias }
            }
            other => other,
        };
    }
    Some(stmt)
}

/// A result column name of `stmt` that repeats, told from its SELECT list
/// (none when the list has a wildcard: planning finds those).
pub fn repeated_name(stmt: &SqlStatement) -> Option<String> {
    let items = select_items(stmt)?;
    let mut seen = std::collections::HashSet::new();
    for item in items {
        if matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        ) {
            return None;
        }
        let name = item_name(item);
        if !seen.insert(name.clone()) {
            return Some(name);
        }
    }
    None
}

/// Name the result columns of `stmt` `columns` (a view's column list) by
/// aliasing its SELECT list; false when the list has a wildcard or another
/// length, and `stmt` is unchanged.
pub fn alias_items(stmt: &mut SqlStatement, columns: &[Ident]) -> bool {
    let Some(items) = select_items_mut(stmt) else {
        return false;
    };
    if items.len() != columns.len()
        || items.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
    {
        return false;
    }
    for (item, alias) in items.iter_mut().zip(columns) {
        if let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } = item {
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: alias.clone(),
            };
        }
    }
    true
}

/// Call `f` on every SELECT in `stmt`, nested ones included.
pub(super) fn visit_selects_mut(
    stmt: &mut SqlStatement,
    mut f: impl FnMut(&mut Select),
) -> ControlFlow<()> {
    struct V<F>(F);
    impl<F: FnMut(&mut Select)> VisitorMut for V<F> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            fn each<F: FnMut(&mut Select)>(e: &mut SetExpr, f: &mut F) {
                match e {
                    SetExpr::Select(s) => f(s),
                    SetExpr::SetOperation { left, right, .. } => {
                        each(left, f);
                        each(right, f);
                    }
                    _ => {}
                }
            }
            each(&mut query.body, &mut self.0);
            ControlFlow::Continue(())
        }
    }
    stmt.visit(&mut V(&mut f))
}

/// Give the unnamed expressions of every SELECT list whose names a reader
/// sees their PostgreSQL names as aliases (`count(*)` → `count`,
/// `a + 1` → `?column?`): the query's own result (a view's columns), its
/// CTEs and its derived tables in FROM (`SELECT s.count FROM (SELECT
/// count(*) FROM t) s`). DataFusion would name them `count(*)` and
/// `t.a + Int64(1)`. A list with a wildcard, and a name that repeats in
/// its list, are left as they are (PostgreSQL's repeated names are
/// `with_internal_aliases`' business).
pub fn name_result_columns(stmt: &mut SqlStatement) {
    if let SqlStatement::Query(q) = stmt {
        name_query(q);
    }
}

fn name_query(q: &mut Query) {
    if let Some(with) = q.with.as_mut() {
        for cte in &mut with.cte_tables {
            name_query(&mut cte.query);
        }
    }
    name_body(&mut q.body, true);
}

/// `leftmost`: whether this SELECT's names are the body's (a set
/// operation takes its first branch's).
fn name_body(e: &mut SetExpr, leftmost: bool) {
    match e {
        SetExpr::Select(s) => {
            for from in &mut s.from {
                name_factor(&mut from.relation);
                for j in &mut from.joins {
                    name_factor(&mut j.relation);
                }
            }
            if leftmost {
                name_items(&mut s.projection);
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_body(left, leftmost);
            name_body(right, false);
        }
        SetExpr::Query(q) => name_query(q),
        _ => {}
    }
}

fn name_factor(f: &mut datafusion::sql::sqlparser::ast::TableFactor) {
    use datafusion::sql::sqlparser::ast::TableFactor as F;
    match f {
        F::Derived { subquery, .. } => name_query(subquery),
        F::NestedJoin {
            table_with_joins, ..
        } => {
            name_factor(&mut table_with_joins.relation);
            for j in &mut table_with_joins.joins {
                name_factor(&mut j.relation);
            }
        }
        _ => {}
    }
}

fn name_items(items: &mut [SelectItem]) {
    if items.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let names: Vec<String> = items.iter().map(item_name).collect();
    for (item, name) in items.iter_mut().zip(&names) {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
            || name.starts_with(INTERNAL)
            || names.iter().filter(|n| *n == name).count() > 1
        {
            continue;
        }
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', name.clone()),
        };
    }
}

/// Whether planning failed only because result columns share a name.
pub fn is_duplicate_name_error(e: &datafusion::error::DataFusionError) -> bool {
    e.to_string()
        .contains("Projections require unique expression names")
}

/// The names of the result columns of `stmt`, planned with `schema`: by
/// position from the SELECT list when it has no wildcard, else
/// DataFusion's names with internal aliases replaced.
pub fn column_names(stmt: &SqlStatement, schema: &Schema) -> Vec<String> {
    let fields = schema.fields();
    let Some(items) = select_items(stmt) else {
        return fields.iter().map(|f| f.name().clone()).collect();
    };
    let wildcard = items.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    if !wildcard && items.len() == fields.len() {
        return items.iter().map(item_name).collect();
    }
    fields
        .iter()
        .map(|f| {
            f.name()
                .strip_prefix(INTERNAL)
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| items.get(i))
                .map(item_name)
                .unwrap_or_else(|| f.name().clone())
        })
        .collect()
}

/// `schema` with its fields named `names` (which may repeat).
pub fn renamed(schema: &Schema, names: &[String]) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match names.get(i) {
                Some(n) => f.as_ref().clone().with_name(n),
                None => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    )
}

fn item_name(item: &SelectItem) -> String {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => ident(alias),
        SelectItem::UnnamedExpr(e) => figure(e).map(|(n, _)| n).unwrap_or("?column?".into()),
        _ => "?column?".into(),
    }
}

/// The name an identifier denotes, by PostgreSQL's rule (which
/// DataFusion's planner applies too): unquoted ones folded to lower case
/// (`FooBar` is `foobar`), quoted ones as written (`"MixT"` is `MixT`).
/// The catalog, the dataflows and the session all hold these names, never
/// spellings.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// The name of the relation an object name denotes: its identifiers
/// folded as [`ident`] folds them, and the schema eddy has (`public`,
/// also as `eddy.public`) dropped: `public.FooBar` is `foobar`. Another
/// qualifier stays, dotted, so that the name is unknown rather than
/// another relation.
pub fn object(n: &ObjectName) -> String {
    let parts: Vec<String> =
        n.0.iter()
            .map(|p| match p.as_ident() {
                Some(i) => ident(i),
                None => p.to_string(),
            })
            .collect();
    match parts.as_slice() {
        [name] => name.clone(),
        [schema, name] if schema == "public" => name.clone(),
        [_, schema, name] if schema == "public" => name.clone(),
        _ => parts.join("."),
    }
}

/// `name` as SQL text that denotes it: always double-quoted (so a name
/// with capitals, spaces or a keyword reads back as itself).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL's `FigureColnameInternal`: a name and its strength (2 for a
/// column or function name, 1 for a construct's keyword such as `case`),
/// or none (`?column?`).
fn figure(e: &Expr) -> Option<(String, u8)> {
    match e {
        Expr::Identifier(i) => Some((ident(i), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| (ident(i), 2)),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(ObjectNamePart::as_ident)
            .map(|i| (ident(i), 2)),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure(inner),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some((n, 2)) => Some((n, 2)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure) {
            Some((n, 2)) => Some((n, 2)),
            _ => Some(("case".into(), 1)),
        },
        Expr::Subquery(q) => subquery_name(q),
        Expr::Exists { .. } => Some(("exists".into(), 2)),
        Expr::Array(_) => Some(("array".into(), 2)),
        Expr::Tuple(_) => Some(("row".into(), 2)),
        Expr::Extract { .. } => Some(("extract".into(), 2)),
        Expr::Substring { .. } => Some(("substring".into(), 2)),
        Expr::Trim { .. } => Some(("btrim".into(), 2)),
        Expr::Position { .. } => Some(("position".into(), 2)),
        Expr::Overlay { .. } => Some(("overlay".into(), 2)),
        Expr::Ceil { .. } => Some(("ceil".into(), 2)),
        Expr::Floor { .. } => Some(("floor".into(), 2)),
        Expr::TypedString(t) => Some((type_name(&t.data_type), 1)),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        Expr::Value(v) => match &v.value {
            datafusion::sql::sqlparser::ast::Value::Boolean(_) => Some(("bool".into(), 1)),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar subquery is named after its own first column.
fn subquery_name(q: &Query) -> Option<(String, u8)> {
    fn first(e: &SetExpr) -> Option<&SelectItem> {
        match e {
            SetExpr::Select(s) => s.projection.first(),
            SetExpr::SetOperation { left, .. } => first(left),
            SetExpr::Query(q) => first(&q.body),
            _ => None,
        }
    }
    match first(&q.body)? {
        SelectItem::ExprWithAlias { alias, .. } => Some((ident(alias), 2)),
        SelectItem::UnnamedExpr(e) => figure(e),
        _ => None,
    }
}

/// The name PostgreSQL gives a type in a cast's column name.
fn type_name(t: &SqlType) -> String {
    use SqlType as T;
    match t {
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4",
        T::BigInt(_) | T::Int8(_) => "int8",
        T::SmallInt(_) | T::Int2(_) => "int2",
        T::Real | T::Float4 => "float4",
        T::Float(_) | T::Double(_) | T::DoublePrecision | T::Float8 => "float8",
        T::Boolean | T::Bool => "bool",
        T::Text | T::String(_) => "text",
        T::Varchar(_) | T::CharacterVarying(_) | T::CharVarying(_) => "varchar",
        T::Char(_) | T::Character(_) => "bpchar",
        T::Numeric(_) | T::Decimal(_) | T::Dec(_) => "numeric",
        T::Date => "date",
        T::Timestamp(_, tz) => {
            use datafusion::sql::sqlparser::ast::TimezoneInfo as Z;
            match tz {
                Z::WithTimeZone | Z::Tz => "timestamptz",
                _ => "timestamp",
            }
        }
        T::Time(..) => "time",
        T::Interval { .. } => "interval",
        T::Bytea => "bytea",
        T::JSON => "json",
        T::JSONB => "jsonb",
        T::Uuid => "uuid",
        T::Custom(name, _) => {
            return name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(ident)
                .unwrap_or_else(|| "?column?".into());
        }
        other => return other.to_string().to_lowercase(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn names(sql: &str) -> Vec<String> {
        let stmt = super::super::parse(sql)
            .expect("parses")
            .pop()
            .and_then(super::super::Statement::into_sql)
            .expect("one SQL statement");
        let n = select_items(&stmt).map_or(0, |i| i.len());
        let schema = Schema::new(
            (0..n)
                .map(|i| Field::new(format!("f{i}"), DataType::Int32, true))
                .collect::<Vec<_>>(),
        );
        column_names(&stmt, &schema)
    }

    #[test]
    fn names_follow_postgresql() {
        assert_eq!(
            names("SELECT a, t.B, \"Q\", count(*), a + 1, 1, 2 AS x, 3 AS x FROM t"),
            ["a", "b", "Q", "count", "?column?", "?column?", "x", "x"]
        );
        assert_eq!(
            names("SELECT 1::int, a::text, CASE WHEN a THEN 1 END, CASE WHEN a THEN 1 ELSE b END"),
            ["int4", "a", "case", "b"]
        );
        assert_eq!(
            names("SELECT (SELECT max(b) FROM u), (SELECT 1), EXISTS (SELECT 1), true, - -1"),
            ["max", "?column?", "exists", "bool", "?column?"]
        );
        assert_eq!(names("SELECT a FROM t UNION SELECT b FROM u"), ["a"]);
    }
}
