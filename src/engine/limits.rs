//! What one client request may ask of the server: the size of a query
//! string, the statements in one Query message, how deeply a statement's
//! expressions and set operations nest. A request over a limit is refused
//! with a SQLSTATE (54000, 54001, as PostgreSQL's "statement too complex"
//! and "stack depth limit exceeded") before anything plans it, and the
//! server stays up: planning and printing a syntax tree are recursive, and
//! a left-deep chain of 2,000 `+` or 5,000 `UNION ALL`s overflowed a
//! thread's stack and aborted the process.
//!
//! The limits are server settings (`eddy serve --max-…`, environment
//! fallbacks) and readable in SQL from the `eddy_limits` system table.
//!
//! sqlparser builds infix chains (`a + b + …`, `x::t::t…`, `… UNION …`)
//! iteratively, so parsing itself is safe; nesting that sqlparser builds by
//! recursion (parentheses, subqueries) stops at its own recursion limit.
//! What is checked here is the depth of the tree, by a visit that stops at
//! the limit (so its own recursion is bounded too); a refused tree is taken
//! apart iteratively ([`dismantle`]), since dropping it recursively would
//! overflow the stack as well.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, Statement as SqlStatement, Values, Visit, Visitor,
};

use super::{EngineError, Result};

/// Limits on one request; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest query string accepted, in bytes.
    pub max_query_bytes: usize,
    /// Most statements in one query string.
    pub max_statements: usize,
    /// Deepest nesting of expressions, subqueries and set operations in
    /// one statement.
    pub max_depth: usize,
    /// How long a SUBSCRIBE client may leave its changes unread (its socket
    /// full) before it is disconnected, in milliseconds; meanwhile the
    /// changes it has not read are held for it.
    pub max_subscriber_stall_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_bytes: 16 * 1024 * 1024,
            max_statements: 10_000,
            max_depth: 1_000,
            max_subscriber_stall_ms: 30_000,
        }
    }
}

impl Limits {
    /// (name, value, what it bounds) for each limit: the rows of
    /// `eddy_limits`.
    pub fn rows(&self) -> Vec<(&'static str, i64, &'static str)> {
        vec![
            (
                "max_query_bytes",
                self.max_query_bytes as i64,
                "largest query string accepted, in bytes (eddy serve --max-query-bytes)",
            ),
            (
                "max_statements",
                self.max_statements as i64,
                "most statements in one query string (eddy serve --max-statements)",
            ),
            (
                "max_depth",
                self.max_depth as i64,
                "deepest nesting of expressions, subqueries and set operations (eddy serve --max-depth)",
            ),
            (
                "max_subscriber_stall_ms",
                self.max_subscriber_stall_ms as i64,
                "how long a SUBSCRIBE client may leave its changes unread before it is disconnected (eddy serve --max-subscriber-stall-ms)",
            ),
        ]
    }

    /// Refuse a query string longer than `max_query_bytes` (54000), before
    /// it is tokenized (a token takes many times its text's bytes).
    pub fn check_text(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_query_bytes {
            return Err(EngineError::Limit {
                code: "54000",
                message: format!(
                    "query string of {} bytes is longer than the limit of {} bytes (max_query_bytes)",
                    sql.len(),
                    self.max_query_bytes
                ),
            });
        }
        Ok(())
    }

    /// Refuse the statement after `max_statements` (54000).
    pub fn check_count(&self, parsed: usize) -> Result<()> {
        if parsed >= self.max_statements {
            return Err(EngineError::Limit {
                code: "54000",
                message: format!(
                    "query string holds more than {} statements, the limit (max_statements); send them in several queries",
                    self.max_statements
                ),
            });
        }
        Ok(())
    }

    /// Refuse (and take apart) a statement nested deeper than `max_depth`
    /// (54001); checked right after parsing, before anything walks it.
    pub fn check_depth(&self, stmt: SqlStatement) -> Result<SqlStatement> {
        if !too_deep(&stmt, self.max_depth) {
            return Ok(stmt);
        }
        dismantle(stmt);
        Err(EngineError::Limit {
            code: "54001",
            message: format!(
                "statement is too complex: its expressions, subqueries or set operations nest deeper than {} levels, the limit (max_depth)",
                self.max_depth
            ),
        })
    }
}

/// Whether `stmt` nests deeper than `max`. The visit stops at the limit,
/// so its recursion is bounded by it.
fn too_deep(stmt: &SqlStatement, max: usize) -> bool {
    struct Depth {
        depth: usize,
        max: usize,
    }
    impl Depth {
        fn enter(&mut self, by: usize) -> ControlFlow<()> {
            self.depth += by;
            if self.depth > self.max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            // Set operations nest without a Query between them: count the
            // chain's depth (iteratively) before the visit descends it.
            self.enter(1 + set_operation_depth(&q.body))
        }
        fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.depth -= 1 + set_operation_depth(&q.body);
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.enter(1)
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    stmt.visit(&mut Depth { depth: 0, max }).is_break()
}

/// The depth of the chain of set operations at the top of `body`.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut todo = vec![(body, 0usize)];
    while let Some((e, d)) = todo.pop() {
        deepest = deepest.max(d);
        if let SetExpr::SetOperation { left, right, .. } = e {
            todo.push((left, d + 1));
            todo.push((right, d + 1));
        }
    }
    deepest
}

/// Drop a syntax tree without recursing down its long chains: the infix
/// forms sqlparser builds iteratively (binary operators, casts, IS …,
/// set operations) are taken apart with a work list; what remains of each
/// node is shallow and dropped normally.
pub fn dismantle(stmt: SqlStatement) {
    let mut queries: Vec<Box<Query>> = Vec::new();
    let mut sets: Vec<Box<SetExpr>> = Vec::new();
    let mut exprs: Vec<Box<Expr>> = Vec::new();
    match stmt {
        SqlStatement::Query(q) => queries.push(q),
        SqlStatement::CreateView(v) => queries.push(v.query),
        SqlStatement::Insert(i) => queries.extend(i.source),
        // Other statements' depth is the parser's to bound (their
        // expressions nest by recursion there); Drop takes them apart.
        other => drop(other),
    }
    let placeholder = || {
        Box::new(Expr::Value(
            datafusion::sql::sqlparser::ast::Value::Null.into(),
        ))
    };
    loop {
        if let Some(mut q) = queries.pop() {
            sets.push(std::mem::replace(&mut q.body, empty_set()));
        } else if let Some(mut s) = sets.pop() {
            match &mut *s {
                SetExpr::SetOperation { left, right, .. } => {
                    sets.push(std::mem::replace(left, empty_set()));
                    sets.push(std::mem::replace(right, empty_set()));
                }
                SetExpr::Query(q) => {
                    let body = std::mem::replace(&mut q.body, empty_set());
                    sets.push(body);
                }
                SetExpr::Select(select) => {
                    for item in select.projection.drain(..) {
                        use datafusion::sql::sqlparser::ast::SelectItem;
                        match item {
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => exprs.push(Box::new(e)),
                            other => drop(other),
                        }
                    }
                    if let Some(e) = select.selection.take() {
                        exprs.push(Box::new(e));
                    }
                    if let Some(e) = select.having.take() {
                        exprs.push(Box::new(e));
                    }
                }
                SetExpr::Values(v) => {
                    for row in v.rows.drain(..) {
                        exprs.extend(row.content.into_iter().map(Box::new));
                    }
                }
                _ => {}
            }
        } else if let Some(mut e) = exprs.pop() {
            match &mut *e {
                Expr::BinaryOp { left, right, .. }
                | Expr::AnyOp { left, right, .. }
                | Expr::AllOp { left, right, .. }
                | Expr::IsDistinctFrom(left, right)
                | Expr::IsNotDistinctFrom(left, right) => {
                    exprs.push(std::mem::replace(left, placeholder()));
                    exprs.push(std::mem::replace(right, placeholder()));
                }
                Expr::UnaryOp { expr, .. }
                | Expr::Nested(expr)
                | Expr::Cast { expr, .. }
                | Expr::IsNull(expr)
                | Expr::IsNotNull(expr)
                | Expr::IsTrue(expr)
                | Expr::IsNotTrue(expr)
                | Expr::IsFalse(expr)
                | Expr::IsNotFalse(expr)
                | Expr::IsUnknown(expr)
                | Expr::IsNotUnknown(expr)
                | Expr::Collate { expr, .. } => {
                    exprs.push(std::mem::replace(expr, placeholder()));
                }
                Expr::Like { expr, pattern, .. }
                | Expr::ILike { expr, pattern, .. }
                | Expr::SimilarTo { expr, pattern, .. } => {
                    exprs.push(std::mem::replace(expr, placeholder()));
                    exprs.push(std::mem::replace(pattern, placeholder()));
                }
                Expr::Between {
                    expr, low, high, ..
                } => {
                    exprs.push(std::mem::replace(expr, placeholder()));
                    exprs.push(std::mem::replace(low, placeholder()));
                    exprs.push(std::mem::replace(high, placeholder()));
                }
                Expr::InList { expr, list, .. } => {
                    exprs.push(std::mem::replace(expr, placeholder()));
                    exprs.extend(list.drain(..).map(Box::new));
                }
                Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => {
                    queries.push(std::mem::replace(q, Box::new(empty_query())));
                }
                Expr::InSubquery { expr, subquery, .. } => {
                    exprs.push(std::mem::replace(expr, placeholder()));
                    queries.push(std::mem::replace(subquery, Box::new(empty_query())));
                }
                _ => {}
            }
        } else {
            break;
        }
    }
}

fn empty_query() -> Query {
    let mut q = match datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        "VALUES (1)",
    ) {
        Ok(mut v) => match v.pop() {
            Some(SqlStatement::Query(q)) => *q,
            _ => unreachable!("VALUES parses as a query"),
        },
        Err(_) => unreachable!("VALUES parses"),
    };
    q.body = empty_set();
    q
}

fn empty_set() -> Box<SetExpr> {
    Box::new(SetExpr::Values(Values {
        explicit_row: false,
        value_keyword: false,
        rows: vec![],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no overflow, no panic")
    }

    fn check(sql: String) -> Result<usize> {
        run_small_stack(move || {
            Ok(crate::engine::statement::parse_with(&sql, &Limits::default())?.len())
        })
    }

    #[test]
    fn deep_chains_are_refused_on_a_small_stack() {
        for (sql, code) in [
            (format!("SELECT {}", vec!["1"; 200_000].join("+")), "54001"),
            (
                format!("SELECT {}", vec!["true"; 50_000].join(" AND ")),
                "54001",
            ),
            (
                format!("SELECT {}", vec!["'a'"; 50_000].join(" || ")),
                "54001",
            ),
            (format!("SELECT 1{}", "::int".repeat(50_000)), "54001"),
            (vec!["SELECT 1"; 20_000].join(" UNION "), "54001"),
            (vec!["SELECT 1"; 50_000].join(" UNION ALL "), "54001"),
            (
                format!(
                    "SELECT * FROM t WHERE {}",
                    vec!["a = 1"; 50_000].join(" OR ")
                ),
                "54001",
            ),
            ("SELECT 1;".repeat(20_000), "54000"),
            (
                format!("SELECT '{}'", "x".repeat(17 * 1024 * 1024)),
                "54000",
            ),
        ] {
            let e = check(sql).expect_err("refused");
            assert_eq!(e.sqlstate(), code, "{e}");
        }
    }

    #[test]
    fn statements_within_the_limits_pass() {
        assert_eq!(
            check(format!("SELECT {}", vec!["1"; 900].join("+"))).expect("within the limits"),
            1
        );
        assert_eq!(
            check(vec!["SELECT 1"; 900].join(" UNION ALL ")).expect("within the limits"),
            1
        );
        assert_eq!(
            check("SELECT 1;".repeat(10_000)).expect("within the limits"),
            10_000
        );
        // Wide is not deep.
        let list = (0..50_000).map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check(format!("SELECT 1 IN ({})", list.join(","))).expect("within the limits"),
            1
        );
    }
}
