//! `COPY … FROM STDIN (FORMAT binary)`: PostgreSQL's binary COPY format.
//!
//! The stream: the signature `PGCOPY\n\377\r\n\0`, a flags word (bit 16:
//! OIDs included, which eddy refuses), a header extension (skipped), then
//! each row as a field count and each field as a length (−1: NULL) and its
//! value in the type's binary send format, then a count of −1.
//!
//! The format carries no types: each value is read as the type of the
//! column it lands in, as PostgreSQL does. Integers of any width are
//! accepted into any integer column they fit (clients such as psycopg pick
//! the width from the value). The decoders are ours: `postgres-types`
//! (already in the tree through pgwire) covers neither numeric nor interval
//! nor Arrow, and each type here is a few lines.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, IntervalMonthDayNanoArray, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};

use super::{EngineError, Result};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds and days between the Unix epoch and PostgreSQL's
/// (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// One row's fields (None: NULL).
pub type BinaryRow<'a> = Vec<Option<&'a [u8]>>;

fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError::CopyData(format!("invalid COPY binary data: {what}"))
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| bad(format!("unexpected end of data in {what}")))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn i16(&mut self, what: &str) -> Result<i16> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Split binary COPY data into rows; every row must have `width` fields.
pub fn parse(data: &[u8], width: usize) -> Result<Vec<BinaryRow<'_>>> {
    let mut c = Cursor { data, at: 0 };
    if c.take(SIGNATURE.len(), "the signature")? != SIGNATURE {
        return Err(bad("COPY file signature not recognized"));
    }
    let flags = c.i32("the header")?;
    if flags & (1 << 16) != 0 {
        return Err(bad("OIDs in COPY data are not supported"));
    }
    let ext = c.i32("the header")?;
    let ext = usize::try_from(ext).map_err(|_| bad("negative header extension length"))?;
    c.take(ext, "the header extension")?;
    let mut rows = Vec::new();
    loop {
        let fields = c.i16("a row")?;
        if fields == -1 {
            break;
        }
        let n = usize::try_from(fields).map_err(|_| bad(format!("field count {fields}")))?;
        if n != width {
            return Err(EngineError::CopyData(format!(
                "row field count is {n}, expected {width} (COPY row {})",
                rows.len() + 1
            )));
        }
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.i32("a field")?;
            if len == -1 {
                row.push(None);
            } else {
                let len = usize::try_from(len).map_err(|_| bad(format!("field length {len}")))?;
                row.push(Some(c.take(len, "a field")?));
            }
        }
        rows.push(row);
    }
    if c.at != data.len() {
        return Err(bad("data after the end-of-data marker"));
    }
    Ok(rows)
}

/// A value that is not one of its column's type.
fn wrong(field: &Field, row: usize, what: impl std::fmt::Display) -> EngineError {
    EngineError::CopyBinary(format!(
        "incorrect binary data format for column \"{}\" of type {}: {what} (COPY row {row})",
        field.name(),
        crate::types::pg_name(field.data_type()),
    ))
}

fn int_of(b: &[u8]) -> Option<i64> {
    Some(match b.len() {
        2 => i64::from(i16::from_be_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        8 => i64::from_be_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// A `numeric` in its binary form as decimal text (NaN and infinities are
/// None: a decimal column cannot hold them).
fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        let s = b.get(2 * i..2 * i + 2)?;
        Some(i16::from_be_bytes([s[0], s[1]]))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::from(word(3)? as u16);
    if b.len() != 8 + 2 * ndigits || !matches!(sign, 0x0000 | 0x4000) {
        return None;
    }
    let digit = |i: i32| -> Option<i16> {
        if i < 0 || i as usize >= ndigits {
            Some(0)
        } else {
            word(4 + i as usize).filter(|d| (0..10_000).contains(d))
        }
    };
    let mut int = String::new();
    for i in 0..=weight {
        let d = digit(i)?;
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut group = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(group)?));
        group += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// A UUID's 16 bytes in its text form.
fn uuid_text(b: &[u8]) -> Option<String> {
    let b: [u8; 16] = b.try_into().ok()?;
    Some(uuid::Uuid::from_bytes(b).hyphenated().to_string())
}

/// The column `field` from the values in position `i` of `rows`, each read
/// in the binary format of the column's type; `declared` is the SQL type
/// the column was declared with (jsonb and uuid are text columns whose
/// binary forms differ from text's).
pub fn column(field: &Field, declared: &str, rows: &[BinaryRow<'_>], i: usize) -> Result<ArrayRef> {
    // Row numbers count from 1, as in PostgreSQL's messages.
    let values = || rows.iter().enumerate().map(move |(r, row)| (r + 1, row[i]));
    let ints = || -> Result<Vec<Option<i64>>> {
        values()
            .map(|(r, v)| match v {
                None => Ok(None),
                Some(b) => int_of(b)
                    .map(Some)
                    .ok_or_else(|| wrong(field, r, format!("{} bytes for an integer", b.len()))),
            })
            .collect()
    };
    let narrow = |v: Vec<Option<i64>>, min: i64, max: i64| -> Result<()> {
        match v.iter().position(|x| x.is_some_and(|x| x < min || x > max)) {
            Some(r) => Err(EngineError::CopyBinary(format!(
                "value out of range for column \"{}\" of type {} (COPY row {})",
                field.name(),
                crate::types::pg_name(field.data_type()),
                r + 1
            ))),
            None => Ok(()),
        }
    };
    let fixed = |len: usize, what: &str| -> Result<Vec<Option<&[u8]>>> {
        values()
            .map(|(r, v)| match v {
                Some(b) if b.len() != len => {
                    Err(wrong(field, r, format!("{} bytes for {what}", b.len())))
                }
                v => Ok(v),
            })
            .collect()
    };
    let array: ArrayRef = match field.data_type() {
        DataType::Boolean => Arc::new(
            fixed(1, "a boolean")?
                .into_iter()
                .map(|v| v.map(|b| b[0] != 0))
                .collect::<BooleanArray>(),
        ),
        DataType::Int16 => {
            let v = ints()?;
            narrow(v.clone(), i16::MIN.into(), i16::MAX.into())?;
            Arc::new(
                v.into_iter()
                    .map(|x| x.map(|x| x as i16))
                    .collect::<Int16Array>(),
            )
        }
        DataType::Int32 => {
            let v = ints()?;
            narrow(v.clone(), i32::MIN.into(), i32::MAX.into())?;
            Arc::new(
                v.into_iter()
                    .map(|x| x.map(|x| x as i32))
                    .collect::<Int32Array>(),
            )
        }
        DataType::Int64 => Arc::new(ints()?.into_iter().collect::<Int64Array>()),
        DataType::Float32 => Arc::new(
            fixed(4, "a real")?
                .into_iter()
                .map(|v| v.map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                .collect::<Float32Array>(),
        ),
        DataType::Float64 => Arc::new(
            values()
                .map(|(r, v)| match v {
                    None => Ok(None),
                    Some(b) if b.len() == 8 => Ok(Some(f64::from_be_bytes(
                        b.try_into().map_err(|_| wrong(field, r, "8 bytes"))?,
                    ))),
                    Some(b) if b.len() == 4 => Ok(Some(f64::from(f32::from_be_bytes([
                        b[0], b[1], b[2], b[3],
                    ])))),
                    Some(b) => Err(wrong(field, r, format!("{} bytes for a double", b.len()))),
                })
                .collect::<Result<Float64Array>>()?,
        ),
        DataType::Decimal128(..) => {
            let text = values()
                .map(|(r, v)| match v {
                    None => Ok(None),
                    Some(b) => numeric_text(b)
                        .map(Some)
                        .ok_or_else(|| wrong(field, r, "not a finite numeric")),
                })
                .collect::<Result<StringArray>>()?;
            cast_with_options(
                &text,
                field.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| EngineError::CopyValue(format!("column \"{}\": {e}", field.name())))?
        }
        DataType::Utf8 => {
            let declared = declared.to_ascii_lowercase();
            Arc::new(
                values()
                    .map(|(r, v)| {
                        let Some(b) = v else { return Ok(None) };
                        let b = match declared.as_str() {
                            "jsonb" => match b.split_first() {
                                Some((1, rest)) => rest,
                                _ => return Err(wrong(field, r, "unsupported jsonb version")),
                            },
                            "uuid" => {
                                return uuid_text(b)
                                    .map(Some)
                                    .ok_or_else(|| wrong(field, r, "not 16 bytes"));
                            }
                            _ => b,
                        };
                        std::str::from_utf8(b)
                            .map(|s| Some(s.to_string()))
                            .map_err(|_| wrong(field, r, "not UTF-8"))
                    })
                    .collect::<Result<StringArray>>()?,
            )
        }
        DataType::Binary => Arc::new(values().map(|(_, v)| v).collect::<BinaryArray>()),
        DataType::Date32 => Arc::new(
            fixed(4, "a date")?
                .into_iter()
                .map(|v| {
                    v.map(|b| {
                        i32::from_be_bytes([b[0], b[1], b[2], b[3]]).saturating_add(PG_EPOCH_DAYS)
                    })
                })
                .collect::<Date32Array>(),
        ),
        DataType::Timestamp(unit, tz) => {
            let micros: TimestampMicrosecondArray = fixed(8, "a timestamp")?
                .into_iter()
                .map(|v| {
                    v.and_then(|b| b.try_into().ok())
                        .map(|b| i64::from_be_bytes(b).saturating_add(PG_EPOCH_MICROS))
                })
                .collect();
            let micros = micros.with_timezone_opt(tz.clone());
            if *unit == TimeUnit::Microsecond {
                Arc::new(micros)
            } else {
                cast_with_options(&micros, field.data_type(), &CastOptions::default())
                    .map_err(|e| EngineError::CopyValue(e.to_string()))?
            }
        }
        DataType::Interval(_) => {
            let v = fixed(16, "an interval")?
                .into_iter()
                .map(|v| {
                    v.map(|b| {
                        let micros = i64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
                        let days = i32::from_be_bytes(b[8..12].try_into().unwrap_or_default());
                        let months = i32::from_be_bytes(b[12..16].try_into().unwrap_or_default());
                        IntervalMonthDayNano::new(months, days, micros.saturating_mul(1000))
                    })
                })
                .collect::<IntervalMonthDayNanoArray>();
            cast_with_options(&v, field.data_type(), &CastOptions::default())
                .map_err(|e| EngineError::CopyValue(e.to_string()))?
        }
        other => {
            return Err(EngineError::Unsupported(format!(
                "COPY FROM in binary format into a column of type {}",
                crate::types::pg_name(other)
            )));
        }
    };
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [digits.len() as i16, weight, sign as i16, dscale as i16] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_as_postgres_sends_them() {
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3.
        assert_eq!(
            numeric_text(&numeric(1, 0, 3, &[1, 2345, 6780])).as_deref(),
            Some("12345.678")
        );
        // -0.0042 = [42], weight -1, dscale 4.
        assert_eq!(
            numeric_text(&numeric(-1, 0x4000, 4, &[42])).as_deref(),
            Some("-0.0042")
        );
        // 0.00000001 = [1], weight -2, dscale 8.
        assert_eq!(
            numeric_text(&numeric(-2, 0, 8, &[1])).as_deref(),
            Some("0.00000001")
        );
        // 1000000 = [100], weight 1 (trailing zero groups dropped).
        assert_eq!(
            numeric_text(&numeric(1, 0, 0, &[100])).as_deref(),
            Some("1000000")
        );
        assert_eq!(
            numeric_text(&numeric(0, 0, 2, &[])).as_deref(),
            Some("0.00")
        );
        assert_eq!(numeric_text(&numeric(0, 0xC000, 0, &[])), None, "NaN");
        assert_eq!(numeric_text(&[0, 1]), None, "torn");
    }

    #[test]
    fn framing_errors_are_precise() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&2i16.to_be_bytes());
        data.extend_from_slice(&4i32.to_be_bytes());
        data.extend_from_slice(&7i32.to_be_bytes());
        data.extend_from_slice(&(-1i32).to_be_bytes());
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let rows = parse(&data, 2).expect("parses");
        assert_eq!(rows, vec![vec![Some(&7i32.to_be_bytes()[..]), None]]);
        assert!(parse(&data, 3).is_err(), "wrong width");
        for len in 0..data.len() {
            assert!(parse(&data[..len], 2).is_err(), "truncated at {len}");
        }
        assert!(parse(b"PGCOPY\nxx", 2).is_err());
    }
}
