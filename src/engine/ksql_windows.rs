//! ksqlDB's windowed aggregations: `SELECT k, COUNT(*) FROM s WINDOW
//! TUMBLING (SIZE 30 SECONDS) GROUP BY k` and `WINDOW HOPPING (SIZE 1
//! MINUTE, ADVANCE BY 10 SECONDS)`, over the record time `ROWTIME`, with
//! `WINDOWSTART` / `WINDOWEND` (epoch milliseconds, as ksqlDB gives them).
//!
//! sqlparser does not read the WINDOW clause, so the statement's text has
//! it blanked out first (`statement/ksql.rs`, which keeps where it was); the
//! query is then rewritten onto eddy's window table functions
//! (`windows.rs`): the FROM relation becomes `TUMBLE(rel, rowtime, size)`
//! or `HOP(rel, rowtime, advance, size)`, the GROUP BY gains the window,
//! and WINDOWSTART/WINDOWEND read it. A windowed table query's topic is
//! keyed by its GROUP BY columns and the window (`persistent.rs`).
//!
//! A persistent query's windows close by event time (the record time,
//! `ROWTIME`): once the stream's watermark has passed a window's end plus
//! its `GRACE PERIOD` (24 hours when not said, as in ksqlDB), the window's
//! state is freed and rows for it are late (counted in
//! `eddy_catalog.dataflow_operators.late_rows` and dropped); with `EMIT
//! FINAL` its rows appear once, when it closes (`dataflow/aggregate.rs`).
//! RETENTION is accepted: a closed window's row stays in the view until
//! dropped. Not yet: SESSION windows.

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

use super::{EngineError, Result};

/// A WINDOW clause: its kind and its lengths as interval literal texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub hopping: bool,
    /// A session window: `size` is its inactivity gap.
    pub session: bool,
    pub size: String,
    pub advance: Option<String>,
    /// `GRACE PERIOD …`, in microseconds.
    pub grace_us: Option<i64>,
}

/// ksqlDB's grace period when a window names none: 24 hours.
pub const DEFAULT_GRACE_US: i64 = 24 * 3600 * 1_000_000;

impl Window {
    /// How the window closes: `GRACE PERIOD` past its end (24 hours when
    /// not said, as in ksqlDB); `emit_final` for EMIT FINAL.
    pub fn close(&self, emit_final: bool) -> Result<crate::dataflow::aggregate::WindowClose> {
        // A session's late rows are judged by its operator (they depend on
        // the sessions a row would merge with), not at the stream.
        let size_us = if self.session { 0 } else { micros(&self.size)? };
        Ok(crate::dataflow::aggregate::WindowClose {
            grace_us: self.grace_us.unwrap_or(DEFAULT_GRACE_US),
            emit_final,
            size_us,
            advance_us: match &self.advance {
                Some(a) => micros(a)?,
                None => size_us,
            },
        })
    }
}

/// Read a WINDOW clause's inside (`SIZE 30 SECONDS, ADVANCE BY 10
/// SECONDS, GRACE PERIOD 1 MINUTE`) for window kind `kind`.
pub fn parse(kind: &str, inside: &str) -> Result<Window> {
    let bad = |m: String| EngineError::Syntax(m);
    let kind = kind.to_ascii_lowercase();
    let session = kind == "session";
    let (mut size, mut advance, mut grace_us) = (None, None, None);
    for part in inside.split(',') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let length = |at: usize| -> Result<String> {
            match (words.get(at), words.get(at + 1), words.len() == at + 2) {
                (Some(n), Some(unit), true) if n.parse::<u64>().is_ok() => {
                    Ok(format!("{n} {}", unit.to_ascii_lowercase()))
                }
                _ => Err(bad(format!(
                    "expected a length (30 SECONDS) in WINDOW …({part})"
                ))),
            }
        };
        match upper.first().map(String::as_str) {
            // A session's inactivity gap: `SESSION (30 SECONDS, …)`.
            Some(n) if session && size.is_none() && n.parse::<u64>().is_ok() => {
                size = Some(length(0)?)
            }
            Some("SIZE") if !session => size = Some(length(1)?),
            Some("ADVANCE") if upper.get(1).map(String::as_str) == Some("BY") => {
                advance = Some(length(2)?)
            }
            Some("GRACE") if upper.get(1).map(String::as_str) == Some("PERIOD") => {
                grace_us = Some(micros(&length(2)?)?);
            }
            // Accepted: eddy keeps a closed window's row in the view and
            // none of its state (module documentation).
            Some("RETENTION") => {}
            _ => return Err(bad(format!("unexpected {part} in a WINDOW clause"))),
        }
    }
    let size = size.ok_or_else(|| match session {
        true => bad("WINDOW SESSION needs its gap (SESSION (30 SECONDS))".into()),
        false => bad("WINDOW … needs SIZE".into()),
    })?;
    let hopping = kind == "hopping";
    if hopping && advance.is_none() {
        return Err(bad("WINDOW HOPPING needs ADVANCE BY".into()));
    }
    Ok(Window {
        hopping,
        session,
        size,
        advance: if hopping { advance } else { None },
        grace_us,
    })
}

/// ksqlDB's stream-stream join window (`a JOIN b WITHIN 1 HOUR ON …`):
/// the ON condition gains `b.rowtime BETWEEN a.rowtime - before AND
/// a.rowtime + after` (the joined stream's record time within the window
/// around the first's).
pub fn within(q: &mut Query, before: &str, after: &str) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{JoinConstraint, JoinOperator};
    micros(before)?;
    micros(after)?;
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err(EngineError::Unsupported(
            "WITHIN outside a SELECT's JOIN".into(),
        ));
    };
    let [from] = select.from.as_mut_slice() else {
        return Err(EngineError::Unsupported(
            "WITHIN over several FROM items".into(),
        ));
    };
    let name = |t: &TableFactor| match t {
        TableFactor::Table { name, alias, .. } => Some(
            alias
                .as_ref()
                .map(|a| a.name.to_string())
                .or_else(|| name.0.last().map(|p| p.to_string()))
                .unwrap_or_else(|| name.to_string()),
        ),
        _ => None,
    };
    let left = name(&from.relation)
        .ok_or_else(|| EngineError::Unsupported("WITHIN over a subquery".into()))?;
    let [join] = from.joins.as_mut_slice() else {
        return Err(EngineError::Unsupported(
            "WITHIN without exactly one JOIN".into(),
        ));
    };
    let right = name(&join.relation)
        .ok_or_else(|| EngineError::Unsupported("WITHIN over a subquery".into()))?;
    let window = expr(&format!(
        "{right}.rowtime BETWEEN {left}.rowtime - INTERVAL '{before}' AND {left}.rowtime + INTERVAL '{after}'"
    ));
    let constraint = match &mut join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => c,
        _ => {
            return Err(EngineError::Unsupported(
                "WITHIN on this kind of join".into(),
            ));
        }
    };
    match constraint {
        JoinConstraint::On(on) => {
            let cond = std::mem::replace(
                on,
                Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()),
            );
            *on = Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(cond))),
                op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
                right: Box::new(window),
            };
            Ok(())
        }
        _ => Err(EngineError::Unsupported("WITHIN needs JOIN … ON".into())),
    }
}

/// A WITHIN clause's lengths (grace: 24 hours when not said, as for
/// windows).
pub fn join_window(
    before: &str,
    after: &str,
    grace: Option<&str>,
) -> Result<crate::dataflow::join::JoinWindow> {
    Ok(crate::dataflow::join::JoinWindow {
        before_us: micros(before)?,
        after_us: micros(after)?,
        grace_us: match grace {
            Some(g) => micros(g)?,
            None => DEFAULT_GRACE_US,
        },
    })
}

/// A length (`30 seconds`) in microseconds; months have no fixed length.
fn micros(length: &str) -> Result<i64> {
    let i = crate::types::input::parse_interval(length)
        .filter(|i| i.months == 0)
        .ok_or_else(|| EngineError::Syntax(format!("a WINDOW length of {length}")))?;
    Ok(i64::from(i.days)
        .saturating_mul(86_400_000_000)
        .saturating_add(i.nanoseconds / 1000))
}

fn expr(sql: &str) -> Expr {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .expect("a fixed expression parses")
}

fn is_word(e: &Expr, w: &str) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case(w))
}

/// Rewrite `q` (a SELECT … GROUP BY over one relation) onto the window;
/// with `keyed`, WINDOWSTART and WINDOWEND are selected if they are not
/// (a windowed table's rows are keyed by their window).
pub fn apply(q: &mut Query, w: &Window, keyed: bool) -> Result<()> {
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err(EngineError::Unsupported(
            "a WINDOW clause on a query other than one SELECT".into(),
        ));
    };
    let [from] = select.from.as_mut_slice() else {
        return Err(EngineError::Unsupported(
            "a WINDOW clause over joins or several relations".into(),
        ));
    };
    if !from.joins.is_empty() {
        return Err(EngineError::Unsupported(
            "a WINDOW clause over joins".into(),
        ));
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = from.relation.clone()
    else {
        return Err(EngineError::Unsupported(
            "a WINDOW clause over something other than a relation".into(),
        ));
    };
    if w.session {
        let gap = micros(&w.size)?;
        let last = alias
            .as_ref()
            .map(|a| a.name.to_string())
            .or_else(|| name.0.last().map(|p| p.to_string()))
            .unwrap_or_else(|| name.to_string());
        let mark = format!("{}(rowtime, {gap})", crate::dataflow::session::SESSION_UDF);
        let sql = format!(
            "SELECT * FROM (SELECT *, {mark} AS window_start, {mark} AS window_end FROM {name}) AS {last}"
        );
        from.relation = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_query())
            .map_err(|e| EngineError::Syntax(e.to_string()))
            .and_then(|q| match *q.body {
                SetExpr::Select(s) => Ok(s.from[0].relation.clone()),
                _ => Err(EngineError::Syntax(sql.clone())),
            })?;
    } else {
        window_relation(from, &name, &alias, w)?;
    }
    group_and_bounds(select, keyed)
}

/// The FROM relation `name` as TUMBLE or HOP over ROWTIME.
fn window_relation(
    from: &mut datafusion::sql::sqlparser::ast::TableWithJoins,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
    alias: &Option<datafusion::sql::sqlparser::ast::TableAlias>,
    w: &Window,
) -> Result<()> {
    let call = match &w.advance {
        Some(advance) => format!(
            "HOP({name}, rowtime, INTERVAL '{advance}', INTERVAL '{}')",
            w.size
        ),
        None => format!("TUMBLE({name}, rowtime, INTERVAL '{}')", w.size),
    };
    let alias = alias.clone();
    let mut windowed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("SELECT * FROM {call}"))
        .and_then(|mut p| p.parse_query())
        .map_err(|e| EngineError::Syntax(e.to_string()))
        .and_then(|q| match *q.body {
            SetExpr::Select(s) => Ok(s.from[0].relation.clone()),
            _ => Err(EngineError::Syntax(call.clone())),
        })?;
    if let TableFactor::Table { alias: a, .. } = &mut windowed {
        *a = alias;
    }
    if !super::windows::expand_as(&mut windowed, super::windows::Hop::Copies) {
        return Err(EngineError::Invalid(format!(
            "WINDOW: {call} (a hopping window's size must be a whole number of advances, at most 64 of them)"
        )));
    }
    from.relation = windowed;
    Ok(())
}

/// The GROUP BY gains the window; WINDOWSTART/WINDOWEND read it.
fn group_and_bounds(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    keyed: bool,
) -> Result<()> {
    match &mut select.group_by {
        GroupByExpr::Expressions(exprs, _) if !exprs.is_empty() => {
            exprs.push(Expr::Identifier(Ident::new("window_start")));
            exprs.push(Expr::Identifier(Ident::new("window_end")));
        }
        _ => {
            return Err(EngineError::Unsupported(
                "a WINDOW clause without GROUP BY".into(),
            ));
        }
    }
    if keyed {
        for w in ["windowstart", "windowend"] {
            let selected = select.projection.iter().any(|i| match i {
                SelectItem::UnnamedExpr(e) => is_word(e, w),
                SelectItem::ExprWithAlias { alias, .. } => alias.value.eq_ignore_ascii_case(w),
                _ => false,
            });
            if !selected {
                select
                    .projection
                    .push(SelectItem::UnnamedExpr(Expr::Identifier(Ident::new(w))));
            }
        }
    }
    // WINDOWSTART / WINDOWEND: the window's bounds in epoch milliseconds,
    // named as written.
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(e) = item {
            for w in ["windowstart", "windowend"] {
                if is_word(e, w) {
                    let alias = match e {
                        Expr::Identifier(i) => i.clone(),
                        _ => Ident::new(w),
                    };
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias,
                    };
                    break;
                }
            }
        }
    }
    struct Bounds;
    impl VisitorMut for Bounds {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            for (w, column) in [("windowstart", "window_start"), ("windowend", "window_end")] {
                if is_word(e, w) {
                    *e = expr(&format!(
                        "CAST(EXTRACT(EPOCH FROM {column}) * 1000 AS BIGINT)"
                    ));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = select.projection.visit(&mut Bounds);
    if let Some(having) = &mut select.having {
        let _ = having.visit(&mut Bounds);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_clauses_read_as_ksqldb_writes_them() {
        assert_eq!(
            parse("TUMBLING", "SIZE 30 SECONDS").expect("in the test"),
            Window {
                hopping: false,
                session: false,
                size: "30 seconds".into(),
                advance: None,
                grace_us: None,
            }
        );
        assert_eq!(
            parse(
                "hopping",
                "SIZE 1 MINUTE, ADVANCE BY 10 SECONDS, GRACE PERIOD 1 HOUR"
            )
            .expect("in the test"),
            Window {
                hopping: true,
                session: false,
                size: "1 minute".into(),
                advance: Some("10 seconds".into()),
                grace_us: Some(3600 * 1_000_000),
            }
        );
        assert!(parse("HOPPING", "SIZE 1 MINUTE").is_err());
        assert!(parse("TUMBLING", "SIZE thirty SECONDS").is_err());
        let s = parse("SESSION", "30 SECONDS, GRACE PERIOD 1 MINUTE").expect("in the test");
        assert!(s.session && s.size == "30 seconds" && s.grace_us == Some(60_000_000));
        assert!(parse("SESSION", "SIZE 30 SECONDS").is_err());
    }
}
