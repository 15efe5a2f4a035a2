//! The one place where Arrow values become PostgreSQL values on the wire:
//! query results (DataRow, text or binary per column), COPY … TO STDOUT
//! (text, CSV, binary) and SUBSCRIBE all write their values here, so a
//! value prints the same way wherever a client reads it (floats as
//! PostgreSQL prints them, `2` not `2.0`; timestamps and intervals
//! without trailing fraction zeros; unconstrained numerics without their
//! fixed scale's zeros; arrays as `{…}`).
//!
//! (About 1,000 lines, 170 of them tests: text and binary encodings of
//! every type side by side, so a type's two forms are changed together.)
//!
//! The column types a client is told (RowDescription) come from `pg_type`:
//! jsonb for a column tagged as jsonb, otherwise arrow-pg's type mapping
//! (`field_into_pg_type`, which also knows pg_catalog's
//! `regclass`/`"char"` columns); every value is encoded by
//! this file, to the type that mapping names. Knows values and their
//! framing, not statements, sessions or errors' SQLSTATEs.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, DecimalType,
    DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    IntervalDayTimeType, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, Schema, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion_postgres::arrow_pg::datatypes::field_into_pg_type as arrow_pg_type;
use datafusion_postgres::pgwire;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

use crate::types::UNCONSTRAINED_NUMERIC_SCALE;
use crate::types::input::pg_interval_text;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The PostgreSQL type a column's values are sent as: arrow-pg's mapping,
/// except for UTF-8 columns tagged as jsonb or uuid (`types::pg_type_of`).
pub(super) fn pg_type(f: &Arc<datafusion::arrow::datatypes::Field>) -> PgWireResult<Type> {
    match crate::types::pg_type_of(f) {
        Some("jsonb") => Ok(Type::JSONB),
        Some("uuid") => Ok(Type::UUID),
        _ => arrow_pg_type(f),
    }
}

fn unsupported(what: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "0A000".into(),
        what,
    )))
}

/// The RowDescription of a result whose Arrow schema is `schema`, its
/// columns named `names` (PostgreSQL's, which may repeat), each in the
/// format the client asked for.
pub(super) fn fields(
    schema: &Schema,
    names: &[String],
    format: &Format,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = names.get(i).cloned().unwrap_or_else(|| f.name().clone());
            Ok(FieldInfo::new(
                name,
                None,
                None,
                pg_type(f)?,
                format.format_for(i),
            ))
        })
        .collect()
}

/// Columns of a batch ready to encode: those whose Arrow type this file
/// does not read directly (dictionaries, views of lists…) cast to one it
/// does.
fn plain_columns(batch: &RecordBatch) -> PgWireResult<Vec<ArrayRef>> {
    batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, v) => {
                cast(c, v).map_err(|e| PgWireError::ApiError(Box::new(e)))
            }
            DataType::RunEndEncoded(_, v) => {
                cast(c, v.data_type()).map_err(|e| PgWireError::ApiError(Box::new(e)))
            }
            DataType::ListView(f) | DataType::LargeListView(f) => {
                cast(c, &DataType::List(Arc::clone(f)))
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))
            }
            _ => Ok(Arc::clone(c)),
        })
        .collect()
}

/// The DataRows of `batch`, each value in its field's format.
pub(super) fn data_rows(batch: &RecordBatch, fields: &[FieldInfo]) -> PgWireResult<Vec<DataRow>> {
    let columns = plain_columns(batch)?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut data = BytesMut::with_capacity(16 * columns.len());
        for (col, field) in columns.iter().zip(fields) {
            framed(&mut data, col.as_ref(), row, |out| match field.format() {
                FieldFormat::Text => text(out, col.as_ref(), row),
                FieldFormat::Binary => binary(out, col.as_ref(), row, field.datatype()),
            })?;
        }
        rows.push(DataRow::new(data, columns.len() as i16));
    }
    Ok(rows)
}

/// A value preceded by its length (-1 for NULL), as DataRow and binary
/// COPY frame them.
fn framed(
    out: &mut BytesMut,
    a: &dyn Array,
    row: usize,
    write: impl FnOnce(&mut BytesMut) -> PgWireResult<()>,
) -> PgWireResult<()> {
    if a.is_null(row) {
        out.put_i32(-1);
        return Ok(());
    }
    let at = out.len();
    out.put_i32(0);
    write(out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// COPY … TO STDOUT's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyStyle {
    Text,
    Csv,
    Binary,
}

/// Binary COPY's header: signature, flags, header extension length.
pub(super) fn copy_binary_header() -> Bytes {
    let mut b = BytesMut::with_capacity(19);
    b.put_slice(b"PGCOPY\n\xff\r\n\0");
    b.put_i32(0);
    b.put_i32(0);
    b.freeze()
}

/// Binary COPY's trailer.
pub(super) fn copy_binary_trailer() -> Bytes {
    Bytes::from_static(&[0xff, 0xff])
}

/// One COPY data message per row of `batch`: text (tab-separated,
/// backslash escapes, `\N` for NULL), CSV (quoted where needed, NULL
/// unquoted and empty) or binary tuples (of the column types `types`;
/// text and CSV need none).
pub(super) fn copy_rows(
    batch: &RecordBatch,
    style: CopyStyle,
    types: &[Type],
) -> PgWireResult<Vec<Bytes>> {
    let columns = plain_columns(batch)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut value = BytesMut::new();
    for row in 0..batch.num_rows() {
        let mut line = BytesMut::with_capacity(16 * columns.len());
        if style == CopyStyle::Binary {
            line.put_i16(columns.len() as i16);
        }
        for (i, col) in columns.iter().enumerate() {
            let a = col.as_ref();
            match style {
                CopyStyle::Binary => {
                    let ty = types.get(i).unwrap_or(&Type::UNKNOWN);
                    framed(&mut line, a, row, |o| binary(o, a, row, ty))?
                }
                CopyStyle::Text | CopyStyle::Csv => {
                    if i > 0 {
                        line.put_u8(if style == CopyStyle::Text {
                            b'\t'
                        } else {
                            b','
                        });
                    }
                    if a.is_null(row) {
                        if style == CopyStyle::Text {
                            line.put_slice(b"\\N");
                        }
                        continue;
                    }
                    value.clear();
                    text(&mut value, a, row)?;
                    if style == CopyStyle::Text {
                        copy_text_escape(&mut line, &value);
                    } else {
                        csv_quote(&mut line, &value);
                    }
                }
            }
        }
        if style != CopyStyle::Binary {
            line.put_u8(b'\n');
        }
        out.push(line.freeze());
    }
    Ok(out)
}

fn copy_text_escape(out: &mut BytesMut, v: &[u8]) {
    for &b in v {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            8 => out.put_slice(b"\\b"),
            12 => out.put_slice(b"\\f"),
            11 => out.put_slice(b"\\v"),
            _ => out.put_u8(b),
        }
    }
}

/// CSV as PostgreSQL writes it: a value is quoted when it is empty (an
/// unquoted empty field is NULL) or holds the delimiter, a quote, a
/// newline or a backslash-period line; quotes inside are doubled.
fn csv_quote(out: &mut BytesMut, v: &[u8]) {
    let needs =
        v.is_empty() || v == b"\\." || v.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs {
        out.put_slice(v);
        return;
    }
    out.put_u8(b'"');
    for &b in v {
        if b == b'"' {
            out.put_u8(b'"');
        }
        out.put_u8(b);
    }
    out.put_u8(b'"');
}

/// PostgreSQL's text form of the (non-NULL) value at `row` of `a`.
pub(super) fn text(out: &mut BytesMut, a: &dyn Array, row: usize) -> PgWireResult<()> {
    macro_rules! int {
        ($t:ty) => {{
            let _ = write!(out, "{}", a.as_primitive::<$t>().value(row));
        }};
    }
    match a.data_type() {
        DataType::Boolean => out.put_u8(if a.as_boolean().value(row) {
            b't'
        } else {
            b'f'
        }),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float16 => {
            out.put_slice(pg_float4(a.as_primitive::<Float16Type>().value(row).to_f32()).as_bytes())
        }
        DataType::Float32 => {
            out.put_slice(pg_float4(a.as_primitive::<Float32Type>().value(row)).as_bytes())
        }
        DataType::Float64 => {
            out.put_slice(pg_float(a.as_primitive::<Float64Type>().value(row)).as_bytes())
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            out.put_slice(numeric_text(a, row).as_bytes())
        }
        DataType::Utf8 => out.put_slice(a.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => out.put_slice(a.as_string::<i64>().value(row).as_bytes()),
        DataType::Utf8View => out.put_slice(a.as_string_view().value(row).as_bytes()),
        DataType::Binary => bytea_text(out, a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => bytea_text(out, a.as_binary::<i64>().value(row)),
        DataType::BinaryView => bytea_text(out, a.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => bytea_text(out, a.as_fixed_size_binary().value(row)),
        DataType::Date32 | DataType::Date64 => date_text(out, days(a, row)),
        DataType::Time32(_) | DataType::Time64(_) => time_text(out, time_us(a, row)),
        DataType::Timestamp(_, tz) => {
            let us = timestamp_us(a, row);
            match tz {
                None => timestamp_text(out, us, None),
                Some(tz) => timestamp_text(out, us, Some(offset_seconds(tz, us)?)),
            }
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            out.put_slice(pg_interval_text(interval(a, row)).as_bytes())
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            array_text(out, l.value(row).as_ref())?
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            array_text(out, l.value(row).as_ref())?
        }
        DataType::FixedSizeList(..) => {
            let l = a.as_fixed_size_list();
            array_text(out, l.value(row).as_ref())?
        }
        DataType::Struct(_) => record_text(out, a.as_struct(), row)?,
        DataType::Null => {}
        other => {
            // Anything else as Arrow displays it (maps, unions).
            let s = cast(&a.slice(row, 1), &DataType::Utf8)
                .map_err(|_| unsupported(format!("values of type {other} cannot be sent")))?;
            out.put_slice(s.as_string::<i32>().value(0).as_bytes());
        }
    }
    Ok(())
}

/// PostgreSQL's binary form of the (non-NULL) value at `row` of `a`, for
/// the column type `ty`.
pub(super) fn binary(out: &mut BytesMut, a: &dyn Array, row: usize, ty: &Type) -> PgWireResult<()> {
    match a.data_type() {
        DataType::Boolean => out.put_u8(u8::from(a.as_boolean().value(row))),
        DataType::Int8 => out.put_i16(a.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => out.put_i16(a.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => out.put_i16(a.as_primitive::<UInt8Type>().value(row).into()),
        DataType::Int32 => out.put_i32(a.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => out.put_i32(a.as_primitive::<UInt16Type>().value(row).into()),
        DataType::Int64 => out.put_i64(a.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => out.put_i64(a.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            numeric_binary(out, &a.as_primitive::<UInt64Type>().value(row).to_string())
        }
        DataType::Float16 => out.put_f32(a.as_primitive::<Float16Type>().value(row).to_f32()),
        DataType::Float32 => out.put_f32(a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => out.put_f64(a.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            numeric_binary(out, &numeric_text(a, row))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if *ty == Type::UUID => {
            let mut t = BytesMut::new();
            text(&mut t, a, row)?;
            let u = std::str::from_utf8(&t)
                .ok()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    unsupported(format!(
                        "invalid input syntax for type uuid: \"{}\"",
                        String::from_utf8_lossy(&t)
                    ))
                })?;
            out.put_slice(u.as_bytes());
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            if *ty == Type::JSONB {
                out.put_u8(1);
            }
            text(out, a, row)?
        }
        DataType::Binary => out.put_slice(a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => out.put_slice(a.as_binary::<i64>().value(row)),
        DataType::BinaryView => out.put_slice(a.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => out.put_slice(a.as_fixed_size_binary().value(row)),
        DataType::Date32 | DataType::Date64 => out.put_i32(days(a, row) - PG_EPOCH_DAYS),
        DataType::Time32(_) | DataType::Time64(_) => out.put_i64(time_us(a, row)),
        DataType::Timestamp(..) => out.put_i64(timestamp_us(a, row) - PG_EPOCH_US),
        DataType::Interval(_) | DataType::Duration(_) => {
            let i = interval(a, row);
            out.put_i64(i.nanoseconds / 1000);
            out.put_i32(i.days);
            out.put_i32(i.months);
        }
        DataType::List(f) => {
            array_binary(out, a.as_list::<i32>().value(row).as_ref(), &pg_type(f)?)?
        }
        DataType::LargeList(f) => {
            array_binary(out, a.as_list::<i64>().value(row).as_ref(), &pg_type(f)?)?
        }
        DataType::FixedSizeList(f, _) => array_binary(
            out,
            a.as_fixed_size_list().value(row).as_ref(),
            &pg_type(f)?,
        )?,
        DataType::Struct(_) => record_binary(out, a.as_struct(), row)?,
        other => {
            return Err(unsupported(format!(
                "values of type {other} cannot be sent in binary format"
            )));
        }
    }
    Ok(())
}

/// PostgreSQL's text of a float8: the shortest digits that round-trip,
/// plain notation for decimal exponents in [-4, 15), otherwise `1e+20`
/// style; `NaN`, `Infinity`, `-Infinity`.
pub fn pg_float(x: f64) -> String {
    pg_float_text(x, format!("{x:e}"), || format!("{x}"), 15)
}

/// PostgreSQL's text of a float4: the shortest digits that round-trip as
/// an f32, plain notation for decimal exponents in [-4, 6).
pub fn pg_float4(x: f32) -> String {
    pg_float_text(x as f64, format!("{x:e}"), || format!("{x}"), 6)
}

fn pg_float_text(x: f64, sci: String, plain: impl FnOnce() -> String, max_exp: i32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
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

/// A decimal's text. An unconstrained `numeric` column is an Arrow
/// decimal of scale 10 (and what arithmetic derives from it, of more):
/// its values print without that fixed scale's trailing zeros, as
/// Materialize and RisingWave print numerics (`21`, `2.5`; PostgreSQL
/// keeps each value's input scale, which a fixed-scale decimal does not
/// remember). A declared `numeric(p, s)` with s < 10 keeps its scale.
fn numeric_text(a: &dyn Array, row: usize) -> String {
    let (t, scale) = match a.data_type() {
        DataType::Decimal128(p, s) => (
            Decimal128Type::format_decimal(a.as_primitive::<Decimal128Type>().value(row), *p, *s),
            *s,
        ),
        DataType::Decimal256(p, s) => (
            Decimal256Type::format_decimal(a.as_primitive::<Decimal256Type>().value(row), *p, *s),
            *s,
        ),
        _ => return String::new(),
    };
    if scale < UNCONSTRAINED_NUMERIC_SCALE {
        return t;
    }
    trim_numeric(&t).unwrap_or(t)
}

/// `t` without the trailing fraction zeros of an unconstrained numeric's
/// fixed scale; None when it has fewer fraction digits than that scale.
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

/// PostgreSQL's binary `numeric` of a decimal's text (`-12.50`): base
/// 10000 digits, the weight of the first, the sign and the display
/// scale (the text's fraction digits).
fn numeric_binary(out: &mut BytesMut, t: &str) {
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let int = int.trim_start_matches('0');
    let dscale = frac.len() as i16;
    // Group the integer digits from the right, the fraction from the left.
    let mut groups: Vec<i16> = Vec::new();
    let lead = int.len() % 4;
    let mut weight: i16 = (int.len().div_ceil(4)) as i16 - 1;
    let digit = |s: &str| -> i16 {
        s.bytes()
            .fold(0i16, |n, b| n * 10 + i16::from(b.wrapping_sub(b'0')))
    };
    if lead > 0 {
        groups.push(digit(&int[..lead]));
    }
    for chunk in int.as_bytes()[lead..].chunks(4) {
        groups.push(digit(std::str::from_utf8(chunk).unwrap_or("0")));
    }
    for chunk in frac.as_bytes().chunks(4) {
        let mut g = digit(std::str::from_utf8(chunk).unwrap_or("0"));
        for _ in chunk.len()..4 {
            g *= 10;
        }
        groups.push(g);
    }
    // No leading or trailing zero groups; the weight follows the first.
    let first = groups.iter().position(|g| *g != 0);
    let Some(first) = first else {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(0);
        out.put_i16(dscale);
        return;
    };
    weight -= first as i16;
    let last = groups.iter().rposition(|g| *g != 0).unwrap_or(first);
    let digits = &groups[first..=last];
    out.put_i16(digits.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative { 0x4000 } else { 0 });
    out.put_i16(dscale);
    for d in digits {
        out.put_i16(*d);
    }
}

fn bytea_text(out: &mut BytesMut, v: &[u8]) {
    out.put_slice(b"\\x");
    for b in v {
        let _ = write!(out, "{b:02x}");
    }
}

/// Days since the Unix epoch.
fn days(a: &dyn Array, row: usize) -> i32 {
    match a.data_type() {
        DataType::Date32 => a.as_primitive::<Date32Type>().value(row),
        DataType::Date64 => {
            (a.as_primitive::<Date64Type>()
                .value(row)
                .div_euclid(86_400_000)) as i32
        }
        _ => 0,
    }
}

/// `2026-01-02`, or `0044-03-15 BC` before year 1.
fn date_text(out: &mut BytesMut, days: i32) {
    use chrono::Datelike;
    let Some(d) = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163) else {
        let _ = write!(out, "{days}");
        return;
    };
    let (y, bc) = if d.year() <= 0 {
        (1 - d.year(), " BC")
    } else {
        (d.year(), "")
    };
    let _ = write!(out, "{y:04}-{:02}-{:02}{bc}", d.month(), d.day());
}

/// Microseconds since midnight.
fn time_us(a: &dyn Array, row: usize) -> i64 {
    match a.data_type() {
        DataType::Time32(TimeUnit::Second) => {
            i64::from(a.as_primitive::<Time32SecondType>().value(row)) * 1_000_000
        }
        DataType::Time32(_) => {
            i64::from(a.as_primitive::<Time32MillisecondType>().value(row)) * 1_000
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            a.as_primitive::<Time64MicrosecondType>().value(row)
        }
        DataType::Time64(_) => a.as_primitive::<Time64NanosecondType>().value(row) / 1_000,
        _ => 0,
    }
}

/// `HH:MM:SS` and the significant fraction digits, if any.
fn clock_text(out: &mut BytesMut, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    fraction(out, frac);
}

fn fraction(out: &mut BytesMut, frac_us: i64) {
    if frac_us != 0 {
        let digits = format!("{frac_us:06}");
        out.put_u8(b'.');
        out.put_slice(digits.trim_end_matches('0').as_bytes());
    }
}

fn time_text(out: &mut BytesMut, us: i64) {
    clock_text(out, us);
}

/// Microseconds since the Unix epoch (UTC for a zoned timestamp).
fn timestamp_us(a: &dyn Array, row: usize) -> i64 {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => a
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            a.as_primitive::<TimestampNanosecondType>().value(row) / 1_000
        }
        _ => 0,
    }
}

/// The UTC offset of zone `tz` at the instant `us`, in seconds.
fn offset_seconds(tz: &str, us: i64) -> PgWireResult<i32> {
    use chrono::Offset;
    if matches!(tz, "+00:00" | "UTC" | "Z" | "+00") {
        return Ok(0);
    }
    let zone = Tz::from_str(tz).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let at = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    Ok(at.with_timezone(&zone).offset().fix().local_minus_utc())
}

/// `2026-01-02 03:04:07.5`, with `+00` (or `+05:30`) when zoned: the
/// local time at that offset.
fn timestamp_text(out: &mut BytesMut, us: i64, offset: Option<i32>) {
    let local = us + i64::from(offset.unwrap_or(0)) * 1_000_000;
    let day = local.div_euclid(86_400_000_000);
    date_text_no_era(out, day);
    out.put_u8(b' ');
    clock_text(out, local.rem_euclid(86_400_000_000));
    if let Some(off) = offset {
        let sign = if off < 0 { '-' } else { '+' };
        let off = off.abs();
        let _ = write!(out, "{sign}{:02}", off / 3600);
        if off % 3600 != 0 {
            let _ = write!(out, ":{:02}", off % 3600 / 60);
        }
    }
    // Before year 1 the era goes last, as PostgreSQL prints it.
    if day + 719_163 <= 0 {
        out.put_slice(b" BC");
    }
}

fn date_text_no_era(out: &mut BytesMut, day: i64) {
    use chrono::Datelike;
    match chrono::NaiveDate::from_num_days_from_ce_opt((day + 719_163) as i32) {
        Some(d) => {
            let y = if d.year() <= 0 {
                1 - d.year()
            } else {
                d.year()
            };
            let _ = write!(out, "{y:04}-{:02}-{:02}", d.month(), d.day());
        }
        None => {
            let _ = write!(out, "{day}");
        }
    }
}

/// Any interval or duration as months, days and nanoseconds. A duration
/// (`timestamp - timestamp`) counts whole 24 hours as days, as
/// PostgreSQL's subtraction does (`justify_hours`): `1 day 12:00:00`, not
/// `36:00:00`; `-1 days -12:00:00` below zero.
fn interval(a: &dyn Array, row: usize) -> IntervalMonthDayNano {
    const DAY: i64 = 86_400_000_000_000;
    let nanos = |n: i64| IntervalMonthDayNano::new(0, (n / DAY) as i32, n % DAY);
    match a.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            a.as_primitive::<IntervalMonthDayNanoType>().value(row)
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = a.as_primitive::<IntervalDayTimeType>().value(row);
            IntervalMonthDayNano::new(0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            IntervalMonthDayNano::new(a.as_primitive::<IntervalYearMonthType>().value(row), 0, 0)
        }
        DataType::Duration(TimeUnit::Second) => nanos(
            a.as_primitive::<DurationSecondType>()
                .value(row)
                .saturating_mul(1_000_000_000),
        ),
        DataType::Duration(TimeUnit::Millisecond) => nanos(
            a.as_primitive::<DurationMillisecondType>()
                .value(row)
                .saturating_mul(1_000_000),
        ),
        DataType::Duration(TimeUnit::Microsecond) => nanos(
            a.as_primitive::<DurationMicrosecondType>()
                .value(row)
                .saturating_mul(1_000),
        ),
        DataType::Duration(TimeUnit::Nanosecond) => {
            nanos(a.as_primitive::<DurationNanosecondType>().value(row))
        }
        _ => IntervalMonthDayNano::new(0, 0, 0),
    }
}

/// `{1,2,NULL}`; strings quoted where PostgreSQL quotes them (empty,
/// `NULL`, or holding braces, quotes, commas, backslashes or spaces).
fn array_text(out: &mut BytesMut, values: &dyn Array) -> PgWireResult<()> {
    out.put_u8(b'{');
    let mut v = BytesMut::new();
    let nested = matches!(
        values.data_type(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    );
    for i in 0..values.len() {
        if i > 0 {
            out.put_u8(b',');
        }
        if values.is_null(i) {
            out.put_slice(b"NULL");
            continue;
        }
        v.clear();
        text(&mut v, values, i)?;
        let quote = !nested
            && (v.is_empty()
                || v.eq_ignore_ascii_case(b"NULL")
                || v.iter().any(|b| {
                    matches!(b, b'{' | b'}' | b'"' | b',' | b'\\') || b.is_ascii_whitespace()
                }));
        put_element(out, &v, quote, b'\\');
    }
    out.put_u8(b'}');
    Ok(())
}

/// PostgreSQL's binary array: dimensions, a NULL flag, the element type,
/// the length and lower bound (1), then each element framed.
fn array_binary(out: &mut BytesMut, values: &dyn Array, element: &Type) -> PgWireResult<()> {
    let empty = values.is_empty();
    out.put_i32(if empty { 0 } else { 1 });
    out.put_i32(i32::from(values.null_count() > 0));
    out.put_u32(element.oid());
    if empty {
        return Ok(());
    }
    out.put_i32(values.len() as i32);
    out.put_i32(1);
    for i in 0..values.len() {
        framed(out, values, i, |o| binary(o, values, i, element))?;
    }
    Ok(())
}

/// An array element or record field, in double quotes when `quote`:
/// quotes and backslashes inside are escaped with `escape` (an array's
/// backslash), or doubled when `escape` is 0 (a record's).
fn put_element(out: &mut BytesMut, v: &[u8], quote: bool, escape: u8) {
    if !quote {
        out.put_slice(v);
        return;
    }
    out.put_u8(b'"');
    for &b in v {
        if b == b'"' || b == b'\\' {
            out.put_u8(if escape == 0 { b } else { escape });
        }
        out.put_u8(b);
    }
    out.put_u8(b'"');
}

/// `(1,"a b",)`: a record's fields, NULL as nothing, quoted where
/// PostgreSQL quotes them.
fn record_text(
    out: &mut BytesMut,
    s: &datafusion::arrow::array::StructArray,
    row: usize,
) -> PgWireResult<()> {
    out.put_u8(b'(');
    let mut v = BytesMut::new();
    for (i, c) in s.columns().iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        if c.is_null(row) {
            continue;
        }
        v.clear();
        text(&mut v, c.as_ref(), row)?;
        let quote = v.is_empty()
            || v.iter()
                .any(|b| matches!(b, b'(' | b')' | b'"' | b',' | b'\\') || b.is_ascii_whitespace());
        put_element(out, &v, quote, 0);
    }
    out.put_u8(b')');
    Ok(())
}

/// PostgreSQL's binary record: the field count, then each field's type
/// and framed value.
fn record_binary(
    out: &mut BytesMut,
    s: &datafusion::arrow::array::StructArray,
    row: usize,
) -> PgWireResult<()> {
    let fields = match s.data_type() {
        DataType::Struct(f) => f.clone(),
        _ => return Ok(()),
    };
    out.put_i32(s.num_columns() as i32);
    for (f, c) in fields.iter().zip(s.columns()) {
        let ty = pg_type(f)?;
        out.put_u32(ty.oid());
        framed(out, c.as_ref(), row, |o| binary(o, c.as_ref(), row, &ty))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Decimal128Array, Float64Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::Int32Type as I32;

    fn text_of(a: &dyn Array, row: usize) -> String {
        let mut out = BytesMut::new();
        text(&mut out, a, row).expect("encodes");
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn unconstrained_numerics_print_without_the_fixed_scale() {
        assert_eq!(trim_numeric("21.0000000000").as_deref(), Some("21"));
        assert_eq!(trim_numeric("-2.5000000000").as_deref(), Some("-2.5"));
        assert_eq!(
            trim_numeric("7.12345678901234").as_deref(),
            Some("7.12345678901234")
        );
        assert_eq!(trim_numeric("0.0000000000").as_deref(), Some("0"));
        assert_eq!(trim_numeric("9.90"), None);
        assert_eq!(trim_numeric("12"), None);
        let a = Decimal128Array::from(vec![210_000_000_000i128, -25_000_000_000])
            .with_precision_and_scale(38, 10)
            .expect("decimal");
        assert_eq!(text_of(&a, 0), "21");
        assert_eq!(text_of(&a, 1), "-2.5");
        let a = Decimal128Array::from(vec![990i128])
            .with_precision_and_scale(5, 2)
            .expect("decimal");
        assert_eq!(text_of(&a, 0), "9.90");
    }

    #[test]
    fn timestamps_and_intervals_print_as_postgresql_does() {
        let a = TimestampMicrosecondArray::from(vec![1_767_323_047_500_000, 1_767_323_047_000_000]);
        assert_eq!(text_of(&a, 0), "2026-01-02 03:04:07.5");
        assert_eq!(text_of(&a, 1), "2026-01-02 03:04:07");
        let z = a.clone().with_timezone("+00:00");
        assert_eq!(text_of(&z, 0), "2026-01-02 03:04:07.5+00");
        let k = a.with_timezone("+05:30");
        assert_eq!(text_of(&k, 1), "2026-01-02 08:34:07+05:30");
        let iv = IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(14, 3, 3_600_500_000_000),
            IntervalMonthDayNano::new(0, 0, 0),
        ]);
        assert_eq!(text_of(&iv, 0), "1 year 2 mons 3 days 01:00:00.5");
        assert_eq!(text_of(&iv, 1), "00:00:00");
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
            assert_eq!(text_of(&Float64Array::from(vec![x]), 0), s);
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

    #[test]
    fn arrays_quote_as_postgresql_does() {
        let l = ListArray::from_iter_primitive::<I32, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
        ]);
        assert_eq!(text_of(&l, 0), "{1,NULL,3}");
        assert_eq!(text_of(&l, 1), "{}");
        let s = StringArray::from(vec!["a b", "", "NULL", "x\"y", "plain"]);
        let mut out = BytesMut::new();
        array_text(&mut out, &s).expect("encodes");
        assert_eq!(&out[..], br#"{"a b","","NULL","x\"y",plain}"#);
        // Records double quotes and backslashes instead, and leave NULL empty.
        let r = datafusion::arrow::array::StructArray::from(vec![
            (
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "a",
                    DataType::Int32,
                    true,
                )),
                Arc::new(datafusion::arrow::array::Int32Array::from(vec![Some(1)])) as ArrayRef,
            ),
            (
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "b",
                    DataType::Utf8,
                    true,
                )),
                Arc::new(StringArray::from(vec![Some("say \"hi\\")])) as ArrayRef,
            ),
            (
                Arc::new(datafusion::arrow::datatypes::Field::new(
                    "c",
                    DataType::Utf8,
                    true,
                )),
                Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef,
            ),
        ]);
        assert_eq!(text_of(&r, 0), r#"(1,"say ""hi\\",)"#);
    }

    #[test]
    fn copy_text_and_csv_escape_as_postgresql_does() {
        let mut out = BytesMut::new();
        copy_text_escape(&mut out, b"a\tb\\c\nd");
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd");
        let mut out = BytesMut::new();
        csv_quote(&mut out, b"say \"hi\", ok");
        assert_eq!(&out[..], b"\"say \"\"hi\"\", ok\"");
        let mut out = BytesMut::new();
        csv_quote(&mut out, b"");
        assert_eq!(&out[..], b"\"\"");
    }

    /// Numerics in the layout of PostgreSQL's `numeric_send`.
    #[test]
    fn numerics_encode_in_postgresql_binary() {
        let enc = |t: &str| {
            let mut out = BytesMut::new();
            numeric_binary(&mut out, t);
            out.to_vec()
        };
        // 12345.678: digits [1, 2345, 6780], weight 1, dscale 3.
        assert_eq!(
            enc("12345.678"),
            vec![0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
        // -0.5: digits [5000], weight -1, negative, dscale 1.
        assert_eq!(
            enc("-0.5"),
            vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 1, 0x13, 0x88]
        );
        // 0 and 0.00: no digits.
        assert_eq!(enc("0"), vec![0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(enc("0.00"), vec![0, 0, 0, 0, 0, 0, 0, 2]);
        // 10000: digits [1], weight 1.
        assert_eq!(enc("10000"), vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        // 0.0001: digits [1], weight -1, dscale 4.
        assert_eq!(enc("0.0001"), vec![0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1]);
    }
}
