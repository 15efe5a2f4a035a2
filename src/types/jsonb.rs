//! `jsonb`, PostgreSQL's (and Materialize's) JSON type: its values and
//! their semantics, without DataFusion (the SQL functions and operators
//! over it are `engine/jsonb.rs`).
//!
//! A jsonb value is held in a UTF-8 column as its canonical text, the text
//! PostgreSQL prints for it: object keys sorted as jsonb sorts them
//! (shorter keys first, then bytewise), a repeated key keeping its last
//! value, `", "` and `": "` between items. So equal values have equal text
//! (GROUP BY, DISTINCT and joins on a jsonb column work on the text), and
//! a value prints as PostgreSQL prints it. The column's Arrow field is
//! tagged ([`tag`]) so clients are told its type is jsonb (OID 3802).
//! `json` is read as jsonb, as Materialize does.
//!
//! Parsing is serde_json's (nesting limited to 128 levels). Numbers keep
//! their value, not their spelling: integers print exactly, other
//! numbers as the shortest decimal that reads back as the same double
//! (`1.50` prints `1.5`, where PostgreSQL's numeric keeps `1.50`).

use std::cmp::Ordering;

use datafusion::arrow::datatypes::Field;
use serde_json::{Map, Number, Value};

pub use super::PG_TYPE_KEY;

/// `field` tagged as holding jsonb text.
pub fn tag(field: Field) -> Field {
    super::tag_pg_type(field, "jsonb")
}

/// Whether `field` holds jsonb text.
pub fn is_jsonb(field: &Field) -> bool {
    super::pg_type_of(field) == Some("jsonb")
}

/// Why a text is not a JSON value, worded as PostgreSQL words it.
pub fn syntax_error(text: &str, e: &serde_json::Error) -> String {
    let shown: String = text.chars().take(64).collect();
    format!("invalid input syntax for type json: \"{shown}\" ({e})")
}

/// Parse JSON text into a value.
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| syntax_error(text, &e))
}

/// The canonical text of a JSON text: what `'…'::jsonb` stores and prints.
pub fn canonical(text: &str) -> Result<String, String> {
    Ok(print(&parse(text)?))
}

/// PostgreSQL's text for a jsonb value.
pub fn print(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, None, 0);
    out
}

/// `jsonb_pretty`: four-space indentation, one item per line.
pub fn pretty(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, Some(4), 0);
    out
}

/// jsonb's key order: shorter first, then bytewise.
fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut items: Vec<_> = m.iter().collect();
    items.sort_by(|a, b| key_order(a.0, b.0));
    items
}

fn write(out: &mut String, v: &Value, indent: Option<usize>, depth: usize) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if indent.is_none() {
                        out.push(' ');
                    }
                }
                newline(out, depth + 1);
                write(out, item, indent, depth + 1);
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if indent.is_none() {
                        out.push(' ');
                    }
                }
                newline(out, depth + 1);
                string(out, k);
                out.push_str(": ");
                write(out, item, indent, depth + 1);
            }
            if !m.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
    }
}

fn number(out: &mut String, n: &Number) {
    use std::fmt::Write as _;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        // Rust prints doubles in plain notation with the fewest digits
        // that read back, as numeric prints a value; -0 is 0.
        let f = if f == 0.0 { 0.0 } else { f };
        let _ = write!(out, "{f}");
    }
}

fn string(out: &mut String, s: &str) {
    // serde_json escapes as PostgreSQL does: \" \\ \b \f \n \r \t, other
    // control characters as \u00XX, everything else as itself.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// One step of a path: an object key or an array index (negative counts
/// from the end).
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Key(&'a str),
    Index(i64),
}

/// `v -> step`; a key reaching an array is an index if it reads as an
/// integer (as a `#>` path's text steps are).
pub fn get<'v>(v: &'v Value, step: Step<'_>) -> Option<&'v Value> {
    match (v, step) {
        (Value::Object(m), Step::Key(k)) => m.get(k),
        (Value::Array(items), Step::Index(i)) => index(items, i),
        // A path's text step reaching an array is an index.
        (Value::Array(items), Step::Key(k)) => {
            k.trim().parse::<i64>().ok().and_then(|i| index(items, i))
        }
        _ => None,
    }
}

fn index(items: &[Value], i: i64) -> Option<&Value> {
    let n = items.len() as i64;
    let i = if i < 0 { n + i } else { i };
    if (0..n).contains(&i) {
        items.get(i as usize)
    } else {
        None
    }
}

/// `v #> path`.
pub fn get_path<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, s| get(v, Step::Key(s)))
}

/// `->>`'s text of a value: a string's contents, SQL NULL for JSON null,
/// other values' jsonb text.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(print(other)),
    }
}

/// jsonb equality: numbers by value (`1` = `1.0`), objects regardless of
/// key order.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// `a @> b`, PostgreSQL's containment: an object contains an object whose
/// every key it has with a contained value; an array contains an array
/// whose every element is contained in one of its elements; at the top
/// level an array also contains a scalar it has as an element; scalars
/// contain what they equal.
pub fn contains(a: &Value, b: &Value) -> bool {
    fn inner(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                y.iter().all(|(k, w)| x.get(k).is_some_and(|v| inner(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => y.iter().all(|w| x.iter().any(|v| inner(v, w))),
            (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
                false
            }
            _ => equal(a, b),
        }
    }
    match (a, b) {
        (Value::Array(x), scalar) if !matches!(scalar, Value::Array(_) | Value::Object(_)) => {
            x.iter().any(|v| equal(v, scalar))
        }
        _ => inner(a, b),
    }
}

/// `v ? key`: a top-level object key, or a string element of an array.
pub fn exists(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(key),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(key)),
        Value::String(s) => s == key,
        _ => false,
    }
}

/// `jsonb_typeof`.
pub fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `jsonb_strip_nulls`: object fields whose value is null removed, at
/// every level.
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// `a || b`: two objects merged (b's keys win), two arrays (or an array
/// and a scalar) concatenated.
pub fn concat(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut m = x.clone();
            m.extend(y.iter().map(|(k, v)| (k.clone(), v.clone())));
            Value::Object(m)
        }
        _ => {
            let items = |v: &Value| match v {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            let mut out = items(a);
            out.extend(items(b));
            Value::Array(out)
        }
    }
}

/// `v - key`: an object without that key, an array without its string
/// elements equal to it.
pub fn remove_key(v: &Value, key: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.as_str() != Some(key))
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        canonical(s).expect("valid JSON")
    }

    fn v(s: &str) -> Value {
        parse(s).expect("valid JSON")
    }

    #[test]
    fn prints_as_postgresql() {
        // Checked against PostgreSQL 15's `SELECT '…'::jsonb`.
        assert_eq!(
            c(r#"{"b":1,"a":[1,2,{"x":null}],"aa":true}"#),
            r#"{"a": [1, 2, {"x": null}], "b": 1, "aa": true}"#
        );
        assert_eq!(c(r#"{"a":1,"a":2}"#), r#"{"a": 2}"#);
        assert_eq!(c("[]"), "[]");
        assert_eq!(c("{}"), "{}");
        assert_eq!(c(r#""a\"b\n\u0001""#), r#""a\"b\n\u0001""#);
        assert_eq!(c("1e2"), "100");
        assert_eq!(c("-0.0"), "0");
        assert_eq!(c("0.001"), "0.001");
        assert_eq!(c("12345678901234567890"), "12345678901234567890");
        assert_eq!(c(" \"ü\" "), "\"ü\"");
        assert!(canonical(r#"{"a":1,,}"#).is_err());
        assert!(canonical("").is_err());
        assert_eq!(
            pretty(&v(r#"{"a":[1,{}],"b":{}}"#)),
            "{\n    \"a\": [\n        1,\n        {}\n    ],\n    \"b\": {}\n}"
        );
    }

    #[test]
    fn operators_follow_postgresql() {
        let doc = v(r#"{"a":{"b":[10,20,"x"]},"n":null,"s":"str"}"#);
        assert_eq!(
            get(&doc, Step::Key("a")).map(print).as_deref(),
            Some(r#"{"b": [10, 20, "x"]}"#)
        );
        assert_eq!(
            get_path(&doc, &["a", "b", "-1"])
                .and_then(as_text)
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            get_path(&doc, &["a", "b", "1"]).map(print).as_deref(),
            Some("20")
        );
        assert!(get_path(&doc, &["a", "b", "5"]).is_none());
        assert_eq!(get(&doc, Step::Key("n")).and_then(as_text), None);
        assert_eq!(
            get(&doc, Step::Key("s")).and_then(as_text).as_deref(),
            Some("str")
        );
        assert!(get(&v("[1,2]"), Step::Key("0")).is_some());
        assert!(get(&v(r#"{"0":1}"#), Step::Index(0)).is_none());

        assert!(contains(&v(r#"{"a":1,"b":[1,2,3]}"#), &v(r#"{"b":[3,1]}"#)));
        assert!(contains(&v("[1,2,[1,3]]"), &v("[[1,3]]")));
        assert!(!contains(&v("[1,2,[1,3]]"), &v("[1,3,4]")));
        assert!(contains(&v(r#"["foo","bar"]"#), &v(r#""foo""#)));
        assert!(!contains(&v(r#"{"a":{"b":1}}"#), &v(r#"{"b":1}"#)));
        assert!(contains(&v("[1.0]"), &v("[1]")));
        assert!(exists(&v(r#"{"a":1}"#), "a"));
        assert!(exists(&v(r#"["a","b"]"#), "b"));
        assert!(!exists(&v(r#"{"x":{"a":1}}"#), "a"));
        assert_eq!(
            print(&concat(&v(r#"{"a":1}"#), &v(r#"{"a":2,"b":3}"#))),
            r#"{"a": 2, "b": 3}"#
        );
        assert_eq!(print(&concat(&v("[1]"), &v("2"))), "[1, 2]");
        assert_eq!(
            print(&remove_key(&v(r#"{"a":1,"b":2}"#), "a")),
            r#"{"b": 2}"#
        );
        assert_eq!(
            print(&strip_nulls(&v(r#"{"a":null,"b":[null]}"#))),
            "{\"b\": [null]}"
        );
    }
}
