//! Values as PostgreSQL prints them, where datafusion-postgres' encoder
//! prints them otherwise: floats (`2`, not `2.0`; `1e+20`), timestamps and
//! intervals without trailing fraction zeros, unconstrained numerics
//! without their fixed scale's zeros. Fixes text result rows after the
//! encoder (`pg_text_values`) and turns such columns into text before
//! COPY encodes them (`pg_text_columns`). Knows values and row encodings,
//! not statements, sessions or errors' SQLSTATEs.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion_postgres::pgwire;
use futures::{StreamExt, stream};
use pgwire::api::results::QueryResponse;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// PostgreSQL's text form of a float8: the shortest digits that round-trip,
/// plain notation for decimal exponents in [-4, 15), otherwise `1e+20`
/// style; `NaN`, `Infinity`, `-Infinity`.
pub fn pg_float(x: f64) -> String {
    pg_float_text(x, format!("{x:e}"), || format!("{x}"), 15)
}

/// PostgreSQL's text form of a float4: the shortest digits that round-trip
/// as an f32, plain notation for decimal exponents in [-4, 6).
pub fn pg_float4(x: f32) -> String {
    pg_float_text(x as f64, format!("{x:e}"), || format!("{x}"), 6)
}

fn pg_float_text(x: f64, sci: String, plain: impl FnOnce() -> String, max_exp: i32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..max_exp).contains(&exp) {
        plain()
    } else {
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// Rewrite the float4/float8 columns of text-format result rows (encoded
/// by datafusion-postgres as Rust prints floats, `2.0`) as PostgreSQL
/// prints them (`2`). Other columns pass through untouched.
pub(super) fn pg_text_values(mut resp: QueryResponse) -> QueryResponse {
    use pgwire::api::Type;
    use pgwire::api::results::FieldFormat;
    let kinds: Vec<Option<TextFix>> = resp
        .row_schema
        .iter()
        .map(|f| match (f.datatype(), f.format()) {
            (t, FieldFormat::Text) if *t == Type::FLOAT8 => Some(TextFix::Float8),
            (t, FieldFormat::Text) if *t == Type::FLOAT4 => Some(TextFix::Float4),
            (t, FieldFormat::Text) if *t == Type::NUMERIC => Some(TextFix::Numeric),
            (t, FieldFormat::Text)
                if *t == Type::TIMESTAMP || *t == Type::TIMESTAMPTZ || *t == Type::INTERVAL =>
            {
                Some(TextFix::Timestamp)
            }
            _ => None,
        })
        .collect();
    if kinds.iter().all(Option::is_none) {
        return resp;
    }
    let rows = std::mem::replace(&mut resp.data_rows, Box::pin(stream::empty()));
    resp.data_rows = Box::pin(rows.map(move |row| row.map(|r| rewrite_floats(r, &kinds))));
    resp
}

/// Text values datafusion-postgres prints differently from PostgreSQL.
#[derive(Debug, Clone, Copy)]
enum TextFix {
    Float8,
    Float4,
    /// `…:07.000000+00` → `…:07+00`, `.500000` → `.5` (timestamps and
    /// intervals).
    Timestamp,
    /// An unconstrained `numeric` (see [`trim_numeric`]).
    Numeric,
}

/// An unconstrained `numeric` column is an Arrow decimal of scale 10 (and
/// what arithmetic derives from it, of more): its values print without
/// the trailing zeros of that fixed scale, as Materialize and RisingWave
/// print numerics (`21`, `2.5`; PostgreSQL keeps each value's input scale,
/// which a fixed-scale decimal does not remember). A value with fewer
/// fraction digits is of a declared `numeric(p, s)` and keeps its scale.
/// None: leave the text as it is.
fn trim_numeric(t: &str) -> Option<String> {
    let dot = t.find('.')?;
    let frac = &t[dot + 1..];
    if frac.len() < UNCONSTRAINED_NUMERIC_SCALE as usize
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let kept = frac.trim_end_matches('0');
    Some(if kept.is_empty() {
        t[..dot].to_string()
    } else {
        format!("{}.{kept}", &t[..dot])
    })
}

const UNCONSTRAINED_NUMERIC_SCALE: i8 = crate::types::UNCONSTRAINED_NUMERIC_SCALE;

/// A timestamp's text with PostgreSQL's fraction: only the significant
/// digits, none when whole.
fn trim_fraction(t: &str) -> String {
    let Some(dot) = t.find('.') else {
        return t.to_string();
    };
    let digits = t[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(t.len(), |n| dot + 1 + n);
    let frac = t[dot + 1..digits].trim_end_matches('0');
    let mut out = t[..dot].to_string();
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.push_str(&t[digits..]);
    out
}

/// PostgreSQL's text form of a timestamp in µs since the epoch (UTC).
pub fn pg_timestamp(us: i64, with_tz: bool) -> Option<String> {
    let dt = chrono::DateTime::from_timestamp_micros(us)?.naive_utc();
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = us.rem_euclid(1_000_000);
    if frac != 0 {
        s.push('.');
        s.push_str(format!("{frac:06}").trim_end_matches('0'));
    }
    if with_tz {
        s.push_str("+00");
    }
    Some(s)
}

fn rewrite_floats(mut row: DataRow, kinds: &[Option<TextFix>]) -> DataRow {
    let data = &row.data[..];
    let mut out = bytes::BytesMut::with_capacity(data.len());
    let mut at = 0usize;
    for kind in kinds {
        let Some(len_bytes) = data.get(at..at + 4) else {
            return row;
        };
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if len < 0 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let Some(value) = data.get(at..at + len as usize) else {
            return row;
        };
        at += len as usize;
        let text = std::str::from_utf8(value).ok();
        let fixed = match (kind, text) {
            (Some(TextFix::Float8), Some(t)) => t.parse::<f64>().ok().map(pg_float),
            (Some(TextFix::Float4), Some(t)) => t.parse::<f32>().ok().map(pg_float4),
            (Some(TextFix::Timestamp), Some(t)) => Some(trim_fraction(t)),
            (Some(TextFix::Numeric), Some(t)) => trim_numeric(t),
            _ => None,
        };
        match fixed {
            Some(f) => {
                out.extend_from_slice(&(f.len() as i32).to_be_bytes());
                out.extend_from_slice(f.as_bytes());
            }
            None => {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    row.data = out;
    row
}

/// Floats, timestamps and intervals as PostgreSQL prints them (COPY must
/// be byte-identical): such columns become text columns holding
/// PostgreSQL's text of each value.
pub(super) fn pg_text_columns(batch: &RecordBatch) -> PgWireResult<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{
        DataType, Field, Float32Type, Float64Type, Int64Type, IntervalMonthDayNanoType,
        IntervalUnit, Schema, TimeUnit,
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| {
        matches!(
            f.data_type(),
            DataType::Float32 | DataType::Float64 | DataType::Timestamp(..) | DataType::Interval(_)
        ) || matches!(f.data_type(), DataType::Decimal128(_, s) if *s >= UNCONSTRAINED_NUMERIC_SCALE)
    }) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut cols: Vec<Arc<dyn Array>> = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let text: Option<StringArray> = match f.data_type() {
            DataType::Float64 => Some(
                c.as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map(pg_float))
                    .collect(),
            ),
            DataType::Float32 => Some(
                c.as_primitive::<Float32Type>()
                    .iter()
                    .map(|v| v.map(pg_float4))
                    .collect(),
            ),
            DataType::Timestamp(_, tz) => {
                let us = cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    .and_then(|t| cast(&t, &DataType::Int64))
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    us.as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.and_then(|us| pg_timestamp(us, tz.is_some())))
                        .collect(),
                )
            }
            DataType::Decimal128(_, s) if *s >= UNCONSTRAINED_NUMERIC_SCALE => {
                let text =
                    cast(c, &DataType::Utf8).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    text.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(|t| trim_numeric(t).unwrap_or_else(|| t.to_string())))
                        .collect(),
                )
            }
            DataType::Interval(_) => {
                let iv = cast(c, &DataType::Interval(IntervalUnit::MonthDayNano))
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    iv.as_primitive::<IntervalMonthDayNanoType>()
                        .iter()
                        .map(|v| v.map(crate::types::input::pg_interval_text))
                        .collect(),
                )
            }
            _ => None,
        };
        match text {
            Some(t) => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                cols.push(Arc::new(t));
            }
            None => {
                fields.push(f.as_ref().clone());
                cols.push(Arc::clone(c));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::{pg_float, pg_float4, pg_timestamp, trim_fraction, trim_numeric};

    #[test]
    fn unconstrained_numerics_print_without_the_fixed_scale() {
        assert_eq!(trim_numeric("21.0000000000").as_deref(), Some("21"));
        assert_eq!(trim_numeric("-2.5000000000").as_deref(), Some("-2.5"));
        assert_eq!(
            trim_numeric("7.12345678901234").as_deref(),
            Some("7.12345678901234")
        );
        assert_eq!(trim_numeric("0.0000000000").as_deref(), Some("0"));
        // numeric(p, s) with s < 10 keeps its scale, as PostgreSQL prints it.
        assert_eq!(trim_numeric("9.90"), None);
        assert_eq!(trim_numeric("12"), None);
        assert_eq!(trim_numeric("NaN"), None);
    }

    #[test]
    fn timestamps_print_as_postgresql_does() {
        assert_eq!(
            trim_fraction("2026-01-02 03:04:07.000000+00"),
            "2026-01-02 03:04:07+00"
        );
        assert_eq!(
            trim_fraction("2026-01-02 03:04:07.678000"),
            "2026-01-02 03:04:07.678"
        );
        assert_eq!(trim_fraction("2026-01-02 03:04:07"), "2026-01-02 03:04:07");
        assert_eq!(
            pg_timestamp(1_767_323_047_500_000, true).as_deref(),
            Some("2026-01-02 03:04:07.5+00")
        );
        assert_eq!(
            pg_timestamp(1_767_323_047_000_000, false).as_deref(),
            Some("2026-01-02 03:04:07")
        );
    }

    #[test]
    fn floats_print_as_postgresql_does() {
        for (x, s) in [
            (2.0, "2"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(pg_float(x), s, "{x}");
        }
        for (x, s) in [
            (0.1f32, "0.1"),
            (2.0, "2"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1.0 / 3.0, "0.33333334"),
        ] {
            assert_eq!(pg_float4(x), s, "{x}");
        }
    }
}
