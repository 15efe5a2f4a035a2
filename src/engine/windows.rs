//! Window table functions, as RisingWave and Flink SQL write them, in
//! FROM: `TUMBLE(t, ts, INTERVAL '1 minute')` and `HOP(t, ts, slide,
//! size)` give every row of `t` with the `window_start` and `window_end` of
//! each window holding its `ts`. They are rewritten into plain SQL before
//! planning, so views over them run on the ordinary operators:
//!
//! - TUMBLE: `SELECT *, date_bin(size, ts) AS window_start, date_bin(size,
//!   ts) + size AS window_end FROM t` (windows aligned on the Unix epoch).
//! - HOP: `SELECT *, window_start + size AS window_end FROM (SELECT *,
//!   unnest(hop_starts(ts, slide, size)) AS window_start FROM t)`: the
//!   `hop_starts` function lists the starts of every window holding `ts`,
//!   and UNNEST gives a row per window. In a materialized view that is one
//!   pass over the stream (the dataflow's `unnest` operator), however many
//!   windows a row falls in. A size need not be a whole number of slides
//!   (as in Flink and RisingWave, a row is then in `size / slide` rounded
//!   down or up windows, by where it falls).
//!
//! The size and slide must be interval literals (they fix the shape of
//! the rewrite). A last interval argument, as in RisingWave, moves the
//! windows that far from the epoch's (`TUMBLE(t, ts, INTERVAL '1 hour',
//! INTERVAL '15 minutes')`: hours from a quarter past).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, ListArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, IntervalUnit, TimeUnit};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
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
                     and an offset, a HOP's size at most {MAX_HOPS} slides and holding no \
                     months"
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
    expand_as(t, Hop::Unnest)
}

/// How a HOP is spelled after the rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// One row per window through `unnest(hop_starts(…))`: one pass.
    Unnest,
    /// A UNION ALL of one shifted copy per window (the size a whole number
    /// of slides). ksqlDB's WINDOW HOPPING with a grace period takes this:
    /// its late rows are judged per (row, window) at each copy's source,
    /// by the stream time at that row, which only the source knows.
    Copies,
}

/// [`expand`], with HOP spelled as `hop`.
pub fn expand_as(t: &mut TableFactor, hop: Hop) -> bool {
    let TableFactor::Table {
        name,
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
        ("tumble", [table, ts, size]) => window_select(table, ts, size, offset),
        ("hop", [table, ts, slide, size]) => {
            let (Some(slide_ns), Some(size_ns)) = (nanos(slide), nanos(size)) else {
                return false;
            };
            if slide_ns <= 0 || size_ns <= 0 || (size_ns + slide_ns - 1) / slide_ns > MAX_HOPS {
                return false;
            }
            if hop == Hop::Copies {
                if size_ns % slide_ns != 0 {
                    return false;
                }
                return replace(
                    t,
                    args,
                    &(0..size_ns / slide_ns)
                        .map(|i| shifted_select(table, ts, slide, size, i))
                        .collect::<Vec<_>>()
                        .join(" UNION ALL "),
                );
            }
            let offset = offset.map(|o| format!(", {o}")).unwrap_or_default();
            format!(
                "SELECT *, window_start + {size} AS window_end FROM (SELECT *, \
                 unnest({HOP_STARTS}({ts}, {slide}, {size}{offset})) AS window_start \
                 FROM {table}) AS __eddy_hop"
            )
        }
        _ => return false,
    };
    replace(t, args, &sql)
}

/// Put the query `sql` in place of the call `t` (whose arguments are
/// `args`), keeping its alias or naming it after its table.
fn replace(t: &mut TableFactor, args: &[String], sql: &str) -> bool {
    let TableFactor::Table { alias, .. } = t else {
        return false;
    };
    let Ok(subquery) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
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

/// The rows of `table` with the tumbling window (of `size`, starting
/// `offset` after the epoch's) their `ts` falls in.
fn window_select(table: &str, ts: &str, size: &str, offset: Option<&str>) -> String {
    let start = match offset {
        None => format!("date_bin({size}, {ts})"),
        Some(o) => format!("date_bin({size}, {ts}, TIMESTAMP '1970-01-01 00:00:00' + {o})"),
    };
    format!("SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {table}")
}

/// The rows of `table` with the window that starts `back` slides before
/// the latest one holding `ts` (epoch-aligned slides).
fn shifted_select(table: &str, ts: &str, slide: &str, size: &str, back: i64) -> String {
    let mut start = format!("date_bin({slide}, {ts})");
    for _ in 0..back {
        start = format!("{start} - {slide}");
    }
    format!("SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {table}")
}

/// The function listing the starts of the HOP windows holding a time.
pub const HOP_STARTS: &str = "hop_starts";

/// `hop_starts(ts, slide, size [, offset])`: the starts of every window of
/// `size`, one every `slide` (from `offset` after the epoch), that holds
/// `ts`, earliest first; NULL for a NULL `ts`. Slide, size and offset are
/// constant intervals without months.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopStarts {
    signature: Signature,
}

impl HopStarts {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(HopStarts {
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }
}

fn interval_nanos(v: &ColumnarValue) -> DfResult<i64> {
    let ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(i))) = v else {
        return Err(DataFusionError::Plan(format!(
            "{HOP_STARTS}: slide, size and offset must be interval literals"
        )));
    };
    if i.months != 0 {
        return Err(DataFusionError::Plan(format!(
            "{HOP_STARTS}: a window of months has no fixed length"
        )));
    }
    i64::from(i.days)
        .checked_mul(86_400_000_000_000)
        .and_then(|d| d.checked_add(i.nanoseconds))
        .ok_or_else(|| DataFusionError::Plan(format!("{HOP_STARTS}: interval out of range")))
}

impl ScalarUDFImpl for HopStarts {
    fn name(&self) -> &str {
        HOP_STARTS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> DfResult<Vec<DataType>> {
        let interval = DataType::Interval(IntervalUnit::MonthDayNano);
        match types {
            [t @ DataType::Timestamp(..), rest @ ..] if (2..=3).contains(&rest.len()) => {
                let mut out = vec![t.clone()];
                out.extend(rest.iter().map(|_| interval.clone()));
                Ok(out)
            }
            [DataType::Null, rest @ ..] if (2..=3).contains(&rest.len()) => {
                let mut out = vec![DataType::Timestamp(TimeUnit::Microsecond, None)];
                out.extend(rest.iter().map(|_| interval.clone()));
                Ok(out)
            }
            _ => Err(DataFusionError::Plan(format!(
                "{HOP_STARTS}(timestamp, slide interval, size interval [, offset interval]), \
                 got ({})",
                types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn return_type(&self, types: &[DataType]) -> DfResult<DataType> {
        let item = types
            .first()
            .cloned()
            .unwrap_or(DataType::Timestamp(TimeUnit::Microsecond, None));
        Ok(DataType::new_list(item, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let ts = args.args[0].to_array(n)?;
        let DataType::Timestamp(unit, tz) = ts.data_type().clone() else {
            return Err(DataFusionError::Plan(format!(
                "{HOP_STARTS}: the time column must be a timestamp"
            )));
        };
        let per = match unit {
            TimeUnit::Second => 1_000_000_000,
            TimeUnit::Millisecond => 1_000_000,
            TimeUnit::Microsecond => 1_000,
            TimeUnit::Nanosecond => 1,
        };
        let slide = interval_nanos(&args.args[1])? / per;
        let size = interval_nanos(&args.args[2])? / per;
        let offset = match args.args.get(3) {
            Some(o) => interval_nanos(o)? / per,
            None => 0,
        };
        if slide <= 0 || size <= 0 {
            return Err(DataFusionError::Plan(format!(
                "{HOP_STARTS}: slide and size must be positive (in the time column's unit)"
            )));
        }
        let values = cast(&ts, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let mut offsets = vec![0i32];
        let mut starts: Vec<i64> = Vec::new();
        let mut nulls = Vec::with_capacity(n);
        for i in 0..values.len() {
            if values.is_null(i) {
                nulls.push(false);
            } else {
                let t = values.value(i);
                // The latest window start at or before t, then back by
                // slides while the window still reaches past t.
                let latest = offset + (t - offset).div_euclid(slide) * slide;
                let first = starts.len();
                let mut s = latest;
                while s > t - size {
                    starts.push(s);
                    s -= slide;
                }
                starts[first..].reverse();
                nulls.push(true);
            }
            offsets.push(starts.len() as i32);
        }
        let items = cast(
            &Int64Array::from(starts),
            &DataType::Timestamp(unit, tz.clone()),
        )?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Timestamp(unit, tz), true)),
            OffsetBuffer::new(offsets.into()),
            items,
            Some(NullBuffer::from(nulls)),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
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
        assert_eq!(hop.matches("unnest(hop_starts(at").count(), 1, "{hop}");
        assert!(hop.ends_with("AS h"), "{hop}");
        assert_eq!(nanos("INTERVAL '1' MINUTE"), Some(60_000_000_000));
        assert_eq!(nanos("INTERVAL '2 days'"), Some(2 * 86_400_000_000_000));
        assert_eq!(nanos("INTERVAL '1 month'"), None);
    }
}
