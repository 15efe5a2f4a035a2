//! `to_char(timestamp|timestamptz|date, text)` with PostgreSQL's template
//! patterns (`YYYY-MM-DD HH24:MI:SS`, `Mon DD`, `FMDay`, `"quoted"`
//! text). DataFusion's `to_char` reads chrono's `%Y-%m-%d` instead and
//! gives a PostgreSQL pattern back as its own text, a wrong answer; this
//! one replaces it. A timestamptz is formatted in UTC (eddy's session
//! time zone). Numbers (`to_char(1234.5, 'FM9,999.00')`) are printed by
//! PostgreSQL's numeric templates, `to_char_number.rs`.

use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(ToChar {
        signature: Signature::any(2, Volatility::Immutable),
    }));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match &args[0] {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null => {
                Ok(DataType::Utf8)
            }
            t if t.is_numeric() => Ok(DataType::Utf8),
            // PostgreSQL has no such function: 42883.
            other => Err(DataFusionError::External(Box::new(
                crate::sqlstate::Coded {
                    code: "42883",
                    message: format!(
                        "function to_char({}, text) does not exist",
                        crate::types::pg_name(other)
                    ),
                },
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let values = args.args[0].to_array(n)?;
        let patterns = cast(&args.args[1].to_array(n)?, &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        if values.data_type().is_numeric() {
            return Ok(ColumnarValue::Array(Arc::new(numbers(&values, patterns)?)));
        }
        let zoned = matches!(values.data_type(), DataType::Timestamp(_, Some(_)));
        let values = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let values = values.as_primitive::<TimestampMicrosecondType>();
        let out: StringArray = (0..n)
            .map(|i| {
                if values.is_null(i) || patterns.is_null(i) {
                    return None;
                }
                let t = chrono::DateTime::from_timestamp_micros(values.value(i))?.naive_utc();
                Some(format(&t, patterns.value(i), zoned))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Numbers by PostgreSQL's numeric templates (`to_char_number.rs`): floats
/// as binary floats, integers and decimals as their exact decimal text.
fn numbers(
    values: &datafusion::arrow::array::ArrayRef,
    patterns: &StringArray,
) -> DfResult<StringArray> {
    use super::to_char_number::{Number, format as format_number};
    let float = matches!(
        values.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    );
    let (floats, texts) = if float {
        (Some(cast(values, &DataType::Float64)?), None)
    } else {
        (None, Some(cast(values, &DataType::Utf8)?))
    };
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) || patterns.is_null(i) {
                return None;
            }
            let number = match (&floats, &texts) {
                (Some(f), _) => Number::Float(f.as_primitive::<Float64Type>().value(i)),
                (_, Some(t)) => {
                    let t = t.as_string::<i32>().value(i);
                    match t.strip_prefix('-') {
                        Some(digits) => Number::Exact {
                            negative: true,
                            digits,
                        },
                        None => Number::Exact {
                            negative: false,
                            digits: t,
                        },
                    }
                }
                _ => return None,
            };
            Some(format_number(&number, patterns.value(i)))
        })
        .collect())
}

/// The case a text field is printed in, from how its pattern is written.
#[derive(Clone, Copy)]
enum Case {
    Upper,
    Capital,
    Lower,
}

fn case_of(written: &str) -> Case {
    let mut chars = written.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && b.is_uppercase() => Case::Upper,
        (Some(a), _) if a.is_uppercase() => Case::Capital,
        _ => Case::Lower,
    }
}

fn cased(s: &str, case: Case) -> String {
    match case {
        Case::Upper => s.to_uppercase(),
        Case::Lower => s.to_lowercase(),
        Case::Capital => s.to_string(),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The template fields, longest first (PostgreSQL matches the longest).
const FIELDS: &[&str] = &[
    "A.M.", "P.M.", "HH24", "HH12", "SSSSS", "SSSS", "MONTH", "Y,YYY", "IYYY", "YYYY", "FF1",
    "FF2", "FF3", "FF4", "FF5", "FF6", "MON", "DAY", "DDD", "IYY", "YYY", "AM", "PM", "HH", "MI",
    "SS", "MS", "US", "MM", "DD", "DY", "IW", "ID", "IY", "YY", "WW", "CC", "TZ", "OF", "Q", "W",
    "D", "J", "I", "Y",
];

/// `t` printed by PostgreSQL template `pattern`.
pub fn format(t: &NaiveDateTime, pattern: &str, zoned: bool) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            // Quoted text, with \" for a quote.
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &r[end.min(r.len())..];
            continue;
        }
        let (fill, body) = match rest.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("FM") => (true, &rest[2..]),
            _ => (false, rest),
        };
        let field = FIELDS.iter().find(|f| {
            body.get(..f.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(f))
        });
        let Some(field) = field else {
            if fill {
                rest = body;
                continue;
            }
            let c = rest.chars().next().expect("not empty");
            if c == '\\' && rest[1..].starts_with('"') {
                out.push('"');
                rest = &rest[2..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
            continue;
        };
        let written = &body[..field.len()];
        rest = &body[field.len()..];
        let mut text = print(t, field, written, fill, zoned);
        // An ordinal suffix: DDth is 05th, DDTH 05TH.
        if let Some(suffix) = rest.get(..2).filter(|s| s.eq_ignore_ascii_case("th")) {
            if let Ok(n) = text.trim().parse::<i64>() {
                let th = match (n % 100, n % 10) {
                    (11..=13, _) => "th",
                    (_, 1) => "st",
                    (_, 2) => "nd",
                    (_, 3) => "rd",
                    _ => "th",
                };
                text.push_str(&if suffix == "TH" {
                    th.to_uppercase()
                } else {
                    th.to_string()
                });
            }
            rest = &rest[2..];
        }
        out.push_str(&text);
    }
    out
}

fn print(t: &NaiveDateTime, field: &str, written: &str, fill: bool, zoned: bool) -> String {
    let num = |v: i64, width: usize| {
        if fill {
            v.to_string()
        } else if v < 0 {
            format!("-{:0width$}", -v, width = width)
        } else {
            format!("{v:0width$}")
        }
    };
    let word = |w: &str, pad: usize| {
        let w = cased(w, case_of(written));
        if fill { w } else { format!("{w:<pad$}") }
    };
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let pm = t.hour() >= 12;
    let iso = t.iso_week();
    match field {
        "HH24" => num(t.hour() as i64, 2),
        "HH12" | "HH" => num(hour12 as i64, 2),
        "MI" => num(t.minute() as i64, 2),
        "SS" => num(t.second() as i64, 2),
        "SSSS" | "SSSSS" => t.num_seconds_from_midnight().to_string(),
        "MS" => num((t.nanosecond() / 1_000_000) as i64, 3),
        "US" => num((t.nanosecond() / 1_000) as i64, 6),
        f if f.starts_with("FF") => {
            let digits = (f.as_bytes()[2] - b'0') as usize;
            let micros = format!("{:06}", t.nanosecond() / 1_000);
            micros[..digits].to_string()
        }
        "AM" | "PM" => cased(if pm { "PM" } else { "AM" }, case_of(written)),
        "A.M." | "P.M." => cased(if pm { "P.M." } else { "A.M." }, case_of(written)),
        "Y,YYY" => {
            let y = t.year();
            format!("{},{:03}", y / 1000, y % 1000)
        }
        "YYYY" => num(t.year() as i64, 4),
        "YYY" => num((t.year() % 1000) as i64, 3),
        "YY" => num((t.year() % 100) as i64, 2),
        "Y" => num((t.year() % 10) as i64, 1),
        "IYYY" => num(iso.year() as i64, 4),
        "IYY" => num((iso.year() % 1000) as i64, 3),
        "IY" => num((iso.year() % 100) as i64, 2),
        "I" => num((iso.year() % 10) as i64, 1),
        "IW" => num(iso.week() as i64, 2),
        "ID" => num(t.weekday().number_from_monday() as i64, 1),
        "MONTH" => word(MONTHS[t.month0() as usize], 9),
        "MON" => word(&MONTHS[t.month0() as usize][..3], 3),
        "MM" => num(t.month() as i64, 2),
        "DAY" => word(DAYS[t.weekday().num_days_from_sunday() as usize], 9),
        "DY" => word(&DAYS[t.weekday().num_days_from_sunday() as usize][..3], 3),
        "DDD" => num(t.ordinal() as i64, 3),
        "DD" => num(t.day() as i64, 2),
        "D" => (t.weekday().num_days_from_sunday() + 1).to_string(),
        "WW" => num(((t.ordinal() - 1) / 7 + 1) as i64, 2),
        "W" => ((t.day() - 1) / 7 + 1).to_string(),
        "Q" => (t.month0() / 3 + 1).to_string(),
        "CC" => {
            let y = t.year();
            num(if y > 0 { (y + 99) / 100 } else { y / 100 - 1 } as i64, 2)
        }
        "J" => (t.date().num_days_from_ce() as i64 + 1_721_425).to_string(),
        "TZ" if zoned => cased("UTC", case_of(written)),
        "OF" if zoned => "+00".into(),
        "TZ" | "OF" => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    fn at(s: &str) -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("in the test")
    }

    /// Each expected text is what PostgreSQL 15 prints.
    #[test]
    fn prints_as_postgresql_does() {
        let t = at("2024-03-05 14:07:09.123456");
        for (pattern, want) in [
            ("YYYY-MM-DD HH24:MI:SS", "2024-03-05 14:07:09"),
            ("HH12:MI AM", "02:07 PM"),
            ("hh:mi pm", "02:07 pm"),
            ("Mon DD, YYYY", "Mar 05, 2024"),
            ("FMMonth FMDDth", "March 5th"),
            ("Month|Day|", "March    |Tuesday  |"),
            ("MONTH DAY DY dy", "MARCH     TUESDAY   TUE tue"),
            ("DDD D Q WW W IW ID IYYY", "065 3 1 10 1 10 2 2024"),
            ("MS US FF3", "123 123456 123"),
            ("\"Week\" IW \"of\" YYYY", "Week 10 of 2024"),
            ("YYYY\"-Q\"Q", "2024-Q1"),
            ("SSSS", "50829"),
            ("CC J", "21 2460375"),
            ("TZ", ""),
            ("Y,YYY YY", "2,024 24"),
        ] {
            assert_eq!(format(&t, pattern, false), want, "{pattern}");
        }
        assert_eq!(
            format(&at("2024-01-01 00:00:00"), "HH12 AM DDth", false),
            "12 AM 01st"
        );
        assert_eq!(format(&t, "TZ", true), "UTC");
    }
}
