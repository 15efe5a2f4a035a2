//! Window table functions, as RisingWave and Flink SQL write them, in
//! FROM: `TUMBLE(t, ts, INTERVAL '1 minute')` and `HOP(t, ts, slide,
//! size)` give every row of `t` with the `window_start` and `window_end` of
//! each window holding its `ts`. They are rewritten into plain SQL before
//! planning, so views over them run on the ordinary operators:
//!
//! - TUMBLE: `SELECT *, date_bin(size, ts) AS window_start, date_bin(size,
//!   ts) + size AS window_end FROM t` (windows aligned on the Unix epoch).
//! - HOP: one such SELECT per window a row falls in (`size / slide` of
//!   them, which must be a whole number), starts `date_bin(slide, ts) - i *
//!   slide`, glued with UNION ALL.
//!
//! The size and slide must be interval literals (they fix the shape of
//! the rewrite). A last interval argument, as in RisingWave, moves the
//! windows that far from the epoch's (`TUMBLE(t, ts, INTERVAL '1 hour',
//! INTERVAL '15 minutes')`: hours from a quarter past).

use datafusion::sql::sqlparser::ast::{self, FunctionArg, FunctionArgExpr, TableFactor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::types::input::parse_interval;

/// Most windows one row may fall in under HOP.
const MAX_HOPS: i64 = 64;

/// A TUMBLE or HOP call left after rewriting (one `expand` could not
/// take), as the message of the error it is.
pub fn invalid_call(stmt: &ast::Statement) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    struct Find(Option<String>);
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = t
                && matches!(
                    name.to_string().to_ascii_lowercase().as_str(),
                    "tumble" | "hop"
                )
            {
                self.0 = Some(format!(
                    "{t}: TUMBLE takes (table, time column, size[, offset]) and HOP (table, \
                     time column, slide, size[, offset]), with interval literals for a HOP \
                     and an offset, a HOP's size a whole number of slides (at most \
                     {MAX_HOPS}) and holding no months"
                ));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Find(None);
    let _ = stmt.visit(&mut f);
    f.0
}

/// Rewrite `t` in place if it is a TUMBLE or HOP call; true if it was.
pub fn expand(t: &mut TableFactor) -> bool {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = t
    else {
        return false;
    };
    let func = name.to_string().to_ascii_lowercase();
    let args: Vec<String> = args
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    // RisingWave's optional last argument, the windows' offset from the
    // epoch: `TUMBLE(t, ts, size, offset)`, `HOP(t, ts, slide, size,
    // offset)`.
    let (args, offset) = match (func.as_str(), args.as_slice()) {
        ("tumble", [rest @ .., offset]) if rest.len() == 3 => (rest, Some(offset.as_str())),
        ("hop", [rest @ .., offset]) if rest.len() == 4 => (rest, Some(offset.as_str())),
        (_, all) => (all, None),
    };
    if offset.is_some_and(|o| nanos(o).is_none()) {
        return false;
    }
    let sql = match (func.as_str(), args) {
        ("tumble", [table, ts, size]) => window_select(table, ts, size, size, 0, offset),
        ("hop", [table, ts, slide, size]) => {
            let (Some(slide_ns), Some(size_ns)) = (nanos(slide), nanos(size)) else {
                return false;
            };
            if slide_ns <= 0 || size_ns % slide_ns != 0 || size_ns / slide_ns > MAX_HOPS {
                return false;
            }
            (0..size_ns / slide_ns)
                .map(|i| window_select(table, ts, slide, size, i, offset))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        }
        _ => return false,
    };
    let Ok(subquery) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
    else {
        return false;
    };
    // Columns keep being reachable as `t.col` when no alias is given.
    let alias = alias.take().or_else(|| {
        let table = args.first()?;
        let last = table.rsplit('.').next()?.trim_matches('"');
        Some(ast::TableAlias {
            name: ast::Ident::new(last),
            columns: vec![],
            explicit: true,
            at: None,
        })
    });
    *t = TableFactor::Derived {
        lateral: false,
        subquery,
        alias,
        sample: None,
    };
    true
}

/// The rows of `table` with the window that starts `back` slides before
/// the one `ts` falls in (slides of `slide`, windows of `size`, starting
/// `offset` after the epoch's).
fn window_select(
    table: &str,
    ts: &str,
    slide: &str,
    size: &str,
    back: i64,
    offset: Option<&str>,
) -> String {
    let mut start = match offset {
        None => format!("date_bin({slide}, {ts})"),
        Some(o) => format!("date_bin({slide}, {ts}, TIMESTAMP '1970-01-01 00:00:00' + {o})"),
    };
    for _ in 0..back {
        start = format!("{start} - {slide}");
    }
    format!("SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {table}")
}

/// An interval literal's length in nanoseconds (days of 24 hours; none
/// with months, whose length varies).
fn nanos(literal: &str) -> Option<i64> {
    let text = literal.trim();
    let body = text
        .strip_prefix("INTERVAL")
        .or_else(|| text.strip_prefix("interval"))?
        .trim()
        .replace('\'', " ")
        .to_ascii_lowercase();
    let i = parse_interval(body.trim())?;
    if i.months != 0 {
        return None;
    }
    i64::from(i.days)
        .checked_mul(86_400_000_000_000)?
        .checked_add(i.nanoseconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut q = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_query())
            .expect("parses");
        let ast::SetExpr::Select(s) = q.body.as_mut() else {
            unreachable!("a select")
        };
        assert!(expand(&mut s.from[0].relation));
        q.to_string()
    }

    #[test]
    fn tumble_and_hop_become_plain_sql() {
        assert_eq!(
            rewritten("SELECT * FROM TUMBLE(bids, at, INTERVAL '1 minute')"),
            "SELECT * FROM (SELECT *, date_bin(INTERVAL '1 minute', at) AS window_start, \
             date_bin(INTERVAL '1 minute', at) + INTERVAL '1 minute' AS window_end FROM bids) AS bids"
        );
        let hop =
            rewritten("SELECT * FROM HOP(bids, at, INTERVAL '1' MINUTE, INTERVAL '3' MINUTE) AS h");
        assert_eq!(hop.matches("UNION ALL").count(), 2, "{hop}");
        assert!(hop.ends_with("AS h"), "{hop}");
        assert_eq!(nanos("INTERVAL '1' MINUTE"), Some(60_000_000_000));
        assert_eq!(nanos("INTERVAL '2 days'"), Some(2 * 86_400_000_000_000));
        assert_eq!(nanos("INTERVAL '1 month'"), None);
    }
}
