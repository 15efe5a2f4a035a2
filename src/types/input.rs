//! PostgreSQL's text form of the types whose spelling Arrow's casts do
//! not read or print as PostgreSQL does: `interval` (PostgreSQL's own output `3 days 04:05:06`,
//! `hh:mm:ss`, ISO 8601 `P1DT2H`, `@ 1 hour ago`, fractional units) and
//! `bytea` (`\x00ff` hex and the escape format). `cast` is Arrow's cast with
//! these two conversions from text done here; every path that turns text
//! into a column (record decoding, COPY, UPDATE) goes through it.
//! `pg_interval_text` is the output side (COPY TO).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, IntervalMonthDayNanoBuilder, ListArray, StringArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano, IntervalUnit};
use datafusion::arrow::error::ArrowError;

const SECS_PER_DAY: f64 = 86_400.0;
const DAYS_PER_MONTH: f64 = 30.0;

/// Cast `array` to `to` as PostgreSQL's input functions would; `safe`:
/// a value that does not convert becomes NULL (else the cast fails).
pub fn cast(array: &dyn Array, to: &DataType, safe: bool) -> Result<ArrayRef, ArrowError> {
    let options = CastOptions {
        safe,
        ..Default::default()
    };
    let text = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            cast_with_options(array, &DataType::Utf8, &options)?
        }
        _ => return cast_with_options(array, to, &options),
    };
    let text = text.as_string::<i32>();
    match to {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let mut b = IntervalMonthDayNanoBuilder::with_capacity(text.len());
            for v in text.iter() {
                match v.map(|s| (s, parse_interval(s))) {
                    None => b.append_null(),
                    Some((_, Some(i))) => b.append_value(i),
                    Some((_, None)) if safe => b.append_null(),
                    Some((s, None)) => return Err(invalid("interval", s)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
            for v in text.iter() {
                match v.map(|s| (s, parse_bytea(s))) {
                    None => b.append_null(),
                    Some((_, Some(bytes))) => b.append_value(bytes),
                    Some((_, None)) if safe => b.append_null(),
                    Some((s, None)) => return Err(invalid("bytea", s)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::List(field) => cast_array_literals(text, field, safe),
        _ => cast_with_options(text, to, &options),
    }
}

/// PostgreSQL array literals (`{1,2,NULL}`, `{"a b","c\"d"}`) into a list
/// of `field`'s type, each element read by [`cast`].
fn cast_array_literals(
    text: &StringArray,
    field: &FieldRef,
    safe: bool,
) -> Result<ArrayRef, ArrowError> {
    let mut elements: Vec<Option<String>> = Vec::new();
    let mut offsets = vec![0i32];
    let mut valid = Vec::with_capacity(text.len());
    for v in text.iter() {
        match v.map(|s| (s, parse_array(s))) {
            None => valid.push(false),
            Some((_, Some(items))) => {
                elements.extend(items);
                valid.push(true);
            }
            Some((_, None)) if safe => valid.push(false),
            Some((s, None)) => return Err(invalid("array", s)),
        }
        offsets.push(
            i32::try_from(elements.len())
                .map_err(|_| ArrowError::CastError("array literals too large".into()))?,
        );
    }
    let strings: StringArray = elements.iter().map(Option::as_deref).collect();
    let values = cast(&strings, field.data_type(), safe)?;
    // An element that did not read makes its whole array not read.
    for (row, w) in offsets.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if valid[row] && (a..b).any(|i| values.is_null(i) && !strings.is_null(i)) {
            valid[row] = false;
        }
    }
    Ok(Arc::new(ListArray::try_new(
        Arc::clone(field),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        values,
        Some(NullBuffer::from(valid)),
    )?))
}

/// The elements of a one-dimensional PostgreSQL array literal: `{` items
/// separated by commas `}`; an item is double-quoted (backslash escapes)
/// or bare (trimmed; `NULL` in any case is a null). None when it is not
/// one (including nested, multidimensional arrays).
pub fn parse_array(s: &str) -> Option<Vec<Option<String>>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return None,
                    '\\' => {
                        chars.next();
                        item.push(chars.next()?);
                    }
                    c => {
                        item.push(c);
                        chars.next();
                    }
                }
            }
            let trimmed = item.trim_end().len();
            item.truncate(trimmed);
            if item.is_empty() {
                return None;
            }
        }
        items.push(if !quoted && item.eq_ignore_ascii_case("null") {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            None => return Some(items),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

fn invalid(ty: &str, s: &str) -> ArrowError {
    ArrowError::CastError(format!("invalid input syntax for type {ty}: \"{s}\""))
}

/// PostgreSQL's bytea input: `\x` then hex digit pairs (whitespace between
/// pairs allowed), else the escape format (`\\` a backslash, `\ooo` an
/// octal byte, any other byte itself).
pub fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|p| {
                let hi = (p[0] as char).to_digit(16)?;
                let lo = (p[1] as char).to_digit(16)?;
                Some((hi * 16 + lo) as u8)
            })
            .collect();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4)?;
            if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) || oct[0] > b'3' {
                return None;
            }
            out.push(oct.iter().fold(0u8, |a, c| a * 8 + (c - b'0')));
            i += 4;
        }
    }
    Some(out)
}

/// An interval being summed: months and days whole (as PostgreSQL keeps
/// them), the rest in seconds.
#[derive(Default)]
struct Parts {
    months: f64,
    days: f64,
    secs: f64,
}

impl Parts {
    /// `n` of `unit`, a fraction cascading down as PostgreSQL's does
    /// (a month is 30 days, a day 24 hours).
    fn add(&mut self, n: f64, unit: &str) -> Option<()> {
        let months = |p: &mut Parts, m: f64| {
            let whole = m.trunc();
            p.months += whole;
            let days = (m - whole) * DAYS_PER_MONTH;
            p.days += days.trunc();
            p.secs += (days - days.trunc()) * SECS_PER_DAY;
        };
        let days = |p: &mut Parts, d: f64| {
            p.days += d.trunc();
            p.secs += (d - d.trunc()) * SECS_PER_DAY;
        };
        match unit {
            "millennium" | "millennia" | "millenniums" | "mil" | "mils" => {
                months(self, n * 12_000.0)
            }
            "century" | "centuries" | "c" => months(self, n * 1200.0),
            "decade" | "decades" | "dec" | "decs" => months(self, n * 120.0),
            "year" | "years" | "yr" | "yrs" | "y" => months(self, n * 12.0),
            "month" | "months" | "mon" | "mons" => months(self, n),
            "week" | "weeks" | "w" => days(self, n * 7.0),
            "day" | "days" | "d" => days(self, n),
            "hour" | "hours" | "hr" | "hrs" | "h" => self.secs += n * 3600.0,
            "minute" | "minutes" | "min" | "mins" | "m" => self.secs += n * 60.0,
            "second" | "seconds" | "sec" | "secs" | "s" => self.secs += n,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => self.secs += n / 1e3,
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" => self.secs += n / 1e6,
            _ => return None,
        }
        Some(())
    }

    fn finish(self, negate: bool) -> Option<IntervalMonthDayNano> {
        let sign = if negate { -1.0 } else { 1.0 };
        let months = (self.months * sign).round();
        let days = (self.days * sign).round();
        // Microseconds, as PostgreSQL keeps them.
        let micros = (self.secs * sign * 1e6).round();
        let fits = |v: f64| v.abs() <= i32::MAX as f64;
        if !fits(months) || !fits(days) || micros.abs() > (i64::MAX / 1000) as f64 {
            return None;
        }
        Some(IntervalMonthDayNano::new(
            months as i32,
            days as i32,
            micros as i64 * 1000,
        ))
    }
}

/// `[-]h:m[:s[.f]]`: seconds.
fn clock(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let fields: Vec<&str> = body.split(':').collect();
    if !(2..=3).contains(&fields.len()) {
        return None;
    }
    let num = |f: &str| -> Option<f64> {
        (!f.is_empty() && f.bytes().all(|c| c.is_ascii_digit() || c == b'.'))
            .then(|| f.parse().ok())
            .flatten()
    };
    let h = num(fields[0])?;
    let m = num(fields[1])?;
    let sec = fields.get(2).map(|f| num(f)).unwrap_or(Some(0.0))?;
    let total = h * 3600.0 + m * 60.0 + sec;
    Some(if neg { -total } else { total })
}

/// PostgreSQL's interval input (`postgres` and `iso_8601` styles and the
/// SQL-standard `y-m d h:m:s`); None if it is not one.
pub fn parse_interval(s: &str) -> Option<IntervalMonthDayNano> {
    let s = s.trim();
    if let Some(iso) = s.strip_prefix('P').or_else(|| s.strip_prefix('p')) {
        return parse_iso(iso);
    }
    let lower = s.to_ascii_lowercase();
    let mut body = lower.trim_start_matches('@').trim();
    let mut negate = false;
    if let Some(b) = body.strip_suffix("ago") {
        body = b.trim_end();
        negate = true;
    }
    if body.is_empty() {
        return None;
    }
    let mut parts = Parts::default();
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if t.contains(':') {
            parts.secs += clock(t)?;
            i += 1;
            continue;
        }
        // SQL standard year-month: `1-2`.
        if let Some((y, m)) = t.split_once('-').filter(|(y, _)| !y.is_empty())
            && let (Ok(y), Ok(m)) = (y.parse::<i64>(), m.parse::<i64>())
        {
            parts.months += (y * 12 + m) as f64;
            i += 1;
            continue;
        }
        // A number glued to its unit (`10min`), or followed by one.
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (num, glued) = t.split_at(split);
        let n: f64 = num.parse().ok()?;
        let unit = if !glued.is_empty() {
            i += 1;
            glued
        } else if let Some(u) = tokens
            .get(i + 1)
            .filter(|u| u.starts_with(|c: char| c.is_ascii_alphabetic()))
        {
            i += 2;
            u
        } else {
            // A bare number: seconds, or days when a time follows.
            i += 1;
            if tokens.get(i).is_some_and(|n| n.contains(':')) {
                "days"
            } else {
                "seconds"
            }
        };
        parts.add(n, unit.trim_end_matches(','))?;
    }
    parts.finish(negate)
}

/// ISO 8601 after the `P`: `1Y2M3W4DT5H6M7.5S` or `0001-02-03T04:05:06`.
fn parse_iso(s: &str) -> Option<IntervalMonthDayNano> {
    let mut parts = Parts::default();
    let (date, time) = match s.find(['T', 't']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if date.contains('-') {
        let f: Vec<&str> = date.split('-').collect();
        let n = |i: usize| f.get(i).map(|v| v.parse::<f64>().ok()).unwrap_or(Some(0.0));
        parts.add(n(0)?, "years")?;
        parts.add(n(1)?, "months")?;
        parts.add(n(2)?, "days")?;
        if let Some(t) = time {
            parts.secs += clock(t)?;
        }
        return parts.finish(false);
    }
    let mut designated = |text: &str, units: &[(char, &str)]| -> Option<()> {
        let mut num = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() || c == '.' || c == '-' || c == '+' {
                num.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| u.eq_ignore_ascii_case(&c))?.1;
                parts.add(num.parse().ok()?, unit)?;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    designated(
        date,
        &[
            ('Y', "years"),
            ('M', "months"),
            ('W', "weeks"),
            ('D', "days"),
        ],
    )?;
    if let Some(t) = time {
        designated(t, &[('H', "hours"), ('M', "minutes"), ('S', "seconds")])?;
    }
    parts.finish(false)
}

/// The interval spelled so Arrow's parser (DataFusion's `INTERVAL '…'`)
/// reads it exactly: `M mons D days S secs`.
pub fn arrow_interval_text(i: IntervalMonthDayNano) -> String {
    let whole = i.nanoseconds / 1_000_000_000;
    let frac = (i.nanoseconds % 1_000_000_000).abs();
    let sign = if i.nanoseconds < 0 && whole == 0 {
        "-"
    } else {
        ""
    };
    format!(
        "{} mons {} days {sign}{whole}.{frac:09} secs",
        i.months, i.days
    )
}

/// PostgreSQL's text output of an interval (`IntervalStyle = postgres`):
/// `1 year 2 mons -3 days +04:05:06.5`, `00:00:00` when zero.
pub fn pg_interval_text(i: IntervalMonthDayNano) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut negative_before = false;
    let mut unit = |n: i64, one: &str, many: &str, parts: &mut Vec<String>| {
        if n != 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
            negative_before |= n < 0;
        }
    };
    let months = i64::from(i.months);
    unit(months / 12, "year", "years", &mut parts);
    unit(months % 12, "mon", "mons", &mut parts);
    unit(i64::from(i.days), "day", "days", &mut parts);
    let micros = i.nanoseconds / 1000;
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 {
            "-"
        } else if negative_before {
            "+"
        } else {
            ""
        };
        let m = micros.unsigned_abs();
        let secs = m / 1_000_000;
        let frac = m % 1_000_000;
        let mut t = format!(
            "{sign}{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        if frac != 0 {
            t.push('.');
            t.push_str(format!("{frac:06}").trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// What Arrow's own parser makes of `s` as an interval.
pub fn arrow_reads_interval(s: &str) -> Option<IntervalMonthDayNano> {
    let a = datafusion::arrow::array::StringArray::from(vec![s]);
    let to = DataType::Interval(IntervalUnit::MonthDayNano);
    let v = cast_with_options(&a, &to, &CastOptions::default()).ok()?;
    let v = v.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
    v.is_valid(0).then(|| v.value(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_as_postgres_reads_them() {
        let some = |v: &[Option<&str>]| Some(v.iter().map(|x| x.map(String::from)).collect());
        assert_eq!(parse_array("{}"), some(&[]));
        assert_eq!(parse_array(" { } "), some(&[]));
        assert_eq!(
            parse_array("{1, 2 ,NULL,null}"),
            some(&[Some("1"), Some("2"), None, None])
        );
        assert_eq!(
            parse_array(r#"{"a b","NULL",c\,d,"q\"r"}"#),
            some(&[Some("a b"), Some("NULL"), Some("c,d"), Some("q\"r")])
        );
        assert_eq!(parse_array(r#"{"",x}"#), some(&[Some(""), Some("x")]));
        for bad in [
            "",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{{1,2},{3,4}}",
            r#"{"a}"#,
            "{a b\"}",
        ] {
            assert_eq!(parse_array(bad), None, "{bad}");
        }
        // Elements take the element type's input rules; a bad element makes
        // the whole value not read.
        let text = StringArray::from(vec![Some("{1,NULL,3}"), None, Some("{x}"), Some("{}")]);
        let to = DataType::List(Arc::new(
            datafusion::arrow::datatypes::Field::new_list_field(DataType::Int32, true),
        ));
        assert!(cast(&text, &to, false).is_err());
        let got = cast(&text, &to, true).expect("converts");
        let list = got.as_list::<i32>();
        assert_eq!(
            format!("{:?}", list.value(0)),
            format!(
                "{:?}",
                datafusion::arrow::array::Int32Array::from(vec![Some(1), None, Some(3)])
            )
        );
        assert!(list.is_null(1) && list.is_null(2));
        assert!(list.is_valid(3) && list.value(3).is_empty());
    }

    fn iv(months: i32, days: i32, micros: i64) -> Option<IntervalMonthDayNano> {
        Some(IntervalMonthDayNano::new(months, days, micros * 1000))
    }

    #[test]
    fn intervals_as_postgres_reads_them() {
        // Each value as PostgreSQL 16 reads it (months, days, microseconds).
        let h = 3_600_000_000i64;
        for (s, want) in [
            ("3 days 04:05:06.7", iv(0, 3, 4 * h + 306_700_000)),
            ("3 days 00:00:04.000005", iv(0, 3, 4_000_005)),
            ("01:02:03", iv(0, 0, h + 123_000_000)),
            ("-01:02", iv(0, 0, -(h + 120_000_000))),
            ("1 year 2 mons", iv(14, 0, 0)),
            ("1 day -02:00:00", iv(0, 1, -2 * h)),
            ("@ 1 hour ago", iv(0, 0, -h)),
            ("1.5 months", iv(1, 15, 0)),
            ("1.5 days", iv(0, 1, 12 * h)),
            ("2 weeks", iv(0, 14, 0)),
            ("15 minutes", iv(0, 0, 900_000_000)),
            ("10min", iv(0, 0, 600_000_000)),
            ("5", iv(0, 0, 5_000_000)),
            ("1 12:00:00", iv(0, 1, 12 * h)),
            ("1-2", iv(14, 0, 0)),
            ("P1Y2M3DT4H5M6.5S", iv(14, 3, 4 * h + 306_500_000)),
            ("PT15M", iv(0, 0, 900_000_000)),
            ("P0001-02-03T04:05:06", iv(14, 3, 4 * h + 306_000_000)),
            ("1 millisecond", iv(0, 0, 1000)),
            ("", None),
            ("3 fortnights", None),
            ("abc", None),
            ("1:2:3:4", None),
        ] {
            assert_eq!(parse_interval(s), want, "{s:?}");
        }
    }

    #[test]
    fn intervals_print_as_postgres_prints_them() {
        let h = 3_600_000_000i64;
        for (i, want) in [
            (iv(0, 0, 0), "00:00:00"),
            (iv(0, 3, 4 * h + 306_500_000), "3 days 04:05:06.5"),
            (iv(14, 1, 0), "1 year 2 mons 1 day"),
            (iv(-14, 0, 0), "-1 years -2 mons"),
            (iv(0, -1, 2 * h), "-1 days +02:00:00"),
            (iv(0, 1, -2 * h), "1 day -02:00:00"),
            (iv(0, 0, 30 * h + 5), "30:00:00.000005"),
            (iv(1, 0, -1), "1 mon -00:00:00.000001"),
        ] {
            assert_eq!(pg_interval_text(i.expect("converts")), want);
        }
    }

    #[test]
    fn bytea_as_postgres_reads_it() {
        assert_eq!(parse_bytea("\\x00ff"), Some(vec![0, 255]));
        assert_eq!(parse_bytea("\\xDE AD"), Some(vec![0xde, 0xad]));
        assert_eq!(parse_bytea("\\x0"), None);
        assert_eq!(parse_bytea("\\xzz"), None);
        assert_eq!(parse_bytea("ab\\\\c\\001"), Some(b"ab\\c\x01".to_vec()));
        assert_eq!(parse_bytea("a\\9"), None);
        assert_eq!(parse_bytea("plain"), Some(b"plain".to_vec()));
    }

    #[test]
    fn cast_reads_text_and_reports_the_bad_value() {
        use datafusion::arrow::array::StringArray;
        let a = StringArray::from(vec![Some("01:00:00"), None, Some("nope")]);
        let to = DataType::Interval(IntervalUnit::MonthDayNano);
        let safe = cast(&a, &to, true).expect("converts");
        assert_eq!(safe.null_count(), 2);
        let err = cast(&a, &to, false).expect_err("fails").to_string();
        assert!(
            err.contains("invalid input syntax for type interval: \"nope\""),
            "{err}"
        );
        let b =
            cast(&StringArray::from(vec!["\\x01"]), &DataType::Binary, false).expect("converts");
        assert_eq!(b.as_binary::<i32>().value(0), [1]);
    }

    #[test]
    fn arrow_reads_the_normalized_text() {
        for s in [
            "3 days 04:05:06.7",
            "-01:02",
            "1 day -02:00:00",
            "P1Y2M3DT4H5M6.5S",
        ] {
            let i = parse_interval(s).expect("converts");
            let text = arrow_interval_text(i);
            assert_eq!(arrow_reads_interval(&text), Some(i), "{s} as {text}");
        }
    }
}
