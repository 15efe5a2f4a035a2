//! JSON record values ⇄ Arrow rows, with arrow-json doing the work.
//!
//! Decoding feeds a whole batch of values to one decoder; only when that
//! fails are the values decoded one by one to find and drop the bad ones
//! (the common case pays nothing for the error handling).
//!
//! arrow-json is lenient where a database must not be, so each value is
//! first checked with serde_json (one pass, nothing allocated but escaped
//! keys), and a value that fails is a decode error, never an altered row:
//!
//! - it must be one well-formed JSON object (`{"a":1,,}` is refused, as is
//!   a number out of double precision's range such as `1e400`), nested at
//!   most 128 deep (serde_json's limit; a 30,000-deep array is refused,
//!   not walked);
//! - a number for an integer column must be an integer in the column's
//!   range (`-0.5` or `3e0` into an `int` is refused, as PostgreSQL's
//!   `'-0.5'::int` is);
//! - a number for a timestamp column is milliseconds since the Unix epoch
//!   (as Kafka record timestamps, ksqlDB and Debezium write them); a string
//!   is read as before (RFC 3339 or `YYYY-MM-DD HH:MM:SS[.f]`).
//!
//! Numbers and booleans for a text column are read as their JSON text
//! (ksqlDB's coercion). A jsonb column takes any JSON value (stored as
//! its canonical text; JSON `null` is jsonb's `null`, a missing key SQL
//! NULL) and is written back as that value (SQL NULL: the key left out).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::reader::ReaderBuilder;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use crate::types::jsonb;

pub use super::DecodeFailure;

fn decode_all(schema: &SchemaRef, values: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
    let mut other_case = false;
    for v in values {
        other_case |= check(schema, v)?;
    }
    let rewritten: Vec<Vec<u8>>;
    let refs: Vec<&[u8]>;
    let has_jsonb = schema.fields().iter().any(|f| jsonb::is_jsonb(f));
    other_case |= schema.fields().iter().any(|f| nests_structs(f.data_type()));
    let values = if has_jsonb || other_case {
        rewritten = values
            .iter()
            .map(|v| rewrite(schema, v, has_jsonb))
            .collect::<Result<_, _>>()?;
        refs = rewritten.iter().map(Vec::as_slice).collect();
        refs.as_slice()
    } else {
        values
    };
    let read = readable(schema);
    let read_schema = read.as_ref().unwrap_or(schema);
    let mut decoder = ReaderBuilder::new(Arc::clone(read_schema))
        .with_batch_size(values.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()?;
    for v in values {
        super::feed(|b| decoder.decode(b), v)?;
        // Each value must be exactly one complete object.
        decoder.decode(b"\n")?;
        if decoder.has_partial_record() {
            return Err(ArrowError::JsonError(
                "value is not one complete JSON object".into(),
            ));
        }
    }
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(read_schema)));
    if read.is_none() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match f.data_type() {
            DataType::Timestamp(unit, _) => timestamps(c.as_string::<i32>(), *unit, f),
            _ => Ok(Arc::clone(c)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// `schema` with timestamp columns read as text (numbers as their JSON
/// text), to apply the epoch-milliseconds rule; None when it has none.
fn readable(schema: &SchemaRef) -> Option<SchemaRef> {
    let is_ts = |f: &Field| matches!(f.data_type(), DataType::Timestamp(_, _));
    if !schema.fields().iter().any(|f| is_ts(f)) {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_ts(f) {
                f.as_ref().clone().with_data_type(DataType::Utf8)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// A timestamp column from its JSON text: integers are epoch
/// milliseconds, strings RFC 3339 or `YYYY-MM-DD HH:MM:SS[.f]`.
fn timestamps(text: &StringArray, unit: TimeUnit, field: &Field) -> Result<ArrayRef, ArrowError> {
    let per_ms: i64 = match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1_000_000,
    };
    let millis: Vec<Option<i64>> = text
        .iter()
        .map(|v| v.and_then(|s| s.parse::<i64>().ok()))
        .collect();
    // The strings (numbers left out) as arrow-json reads them (RFC 3339
    // and `YYYY-MM-DD HH:MM:SS[.f]`), all at once.
    let strings: StringArray = text
        .iter()
        .zip(&millis)
        .map(|(v, ms)| if ms.is_some() { None } else { v })
        .collect();
    let parsed = datafusion::arrow::compute::cast_with_options(
        &strings,
        field.data_type(),
        &datafusion::arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        },
    )?;
    if millis.iter().all(Option::is_none) {
        return Ok(parsed);
    }
    let parsed = datafusion::arrow::compute::cast(&parsed, &DataType::Int64)?;
    let parsed = parsed.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let values = millis
        .iter()
        .enumerate()
        .map(|(i, ms)| match ms {
            Some(ms) if per_ms == 0 => Ok(Some(ms.div_euclid(1_000))),
            Some(ms) => ms.checked_mul(per_ms).map(Some).ok_or_else(|| {
                ArrowError::JsonError(format!(
                    "timestamp {ms} (epoch milliseconds) is out of range for column {}",
                    field.name()
                ))
            }),
            None => Ok(parsed.is_valid(i).then(|| parsed.value(i))),
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let ints: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(values));
    datafusion::arrow::compute::cast(&ints, field.data_type())
}

/// The column a key names: the one of that exact name, else the one whose
/// name differs only in case (`"ID"` for column `id`, as ksqlDB matches
/// fields; a column named exactly wins).
fn field_for<'s>(schema: &'s Schema, key: &str) -> Option<(&'s Field, bool)> {
    match schema.field_with_name(key) {
        Ok(f) => Some((f, true)),
        Err(_) => schema
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(key))
            .map(|f| (f.as_ref(), false)),
    }
}

/// Rename the keys of object `v` that name a field of `fields` in another
/// case to the field's name (dropping one whose exact name is there too),
/// into nested structs and lists of them.
fn match_case(v: &mut serde_json::Value, fields: &datafusion::arrow::datatypes::Fields) {
    let serde_json::Value::Object(m) = v else {
        return;
    };
    let schema = Schema::new(fields.clone());
    let other_case: Vec<(String, String)> = m
        .keys()
        .filter_map(|k| match field_for(&schema, k) {
            Some((f, false)) => Some((k.clone(), f.name().clone())),
            _ => None,
        })
        .collect();
    for (key, name) in other_case {
        let value = m.remove(&key);
        if let Some(value) = value
            && !m.contains_key(&name)
        {
            m.insert(name, value);
        }
    }
    for f in fields.iter() {
        let Some(x) = m.get_mut(f.name()) else {
            continue;
        };
        match f.data_type() {
            DataType::Struct(inner) => match_case(x, inner),
            DataType::List(item) | DataType::LargeList(item) => {
                if let (DataType::Struct(inner), serde_json::Value::Array(items)) =
                    (item.data_type(), x)
                {
                    for item in items {
                        match_case(item, inner);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a field nests structs (whose keys the check pass does not
/// look into: values of such a schema are always matched by case).
fn nests_structs(t: &DataType) -> bool {
    match t {
        DataType::Struct(_) => true,
        DataType::List(f) | DataType::LargeList(f) => nests_structs(f.data_type()),
        _ => false,
    }
}

/// A value as arrow-json reads it: keys that name a column in another
/// case renamed to the column's name (dropped when the object also has
/// the exact name), and with `jsonb`, the jsonb columns' values replaced
/// by their canonical text, as JSON strings (which arrow-json reads into
/// the text column).
fn rewrite(schema: &Schema, value: &[u8], jsonb: bool) -> Result<Vec<u8>, ArrowError> {
    let bad = |e: serde_json::Error| ArrowError::JsonError(e.to_string());
    let mut v: serde_json::Value = serde_json::from_slice(value).map_err(bad)?;
    match_case(&mut v, schema.fields());
    if !jsonb {
        return serde_json::to_vec(&v).map_err(bad);
    }
    if let serde_json::Value::Object(m) = &mut v {
        for f in schema.fields().iter().filter(|f| jsonb::is_jsonb(f)) {
            // A JSON null here is jsonb's `null`; a missing key is SQL NULL.
            if let Some(x) = m.get_mut(f.name()) {
                *x = serde_json::Value::String(jsonb::print(x));
            }
        }
    }
    serde_json::to_vec(&v).map_err(bad)
}

/// A text written to a jsonb column that is not JSON (22P02, as
/// PostgreSQL's `'…'::jsonb`).
pub(crate) fn invalid_json(message: String) -> ArrowError {
    ArrowError::ExternalError(Box::new(crate::sqlstate::Coded {
        code: "22P02",
        message,
    }))
}

/// Rows encoded by arrow-json with their jsonb columns' text put back as
/// the JSON values it holds.
fn jsonb_as_json(schema: &Schema, rows: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, ArrowError> {
    let bad = |e: serde_json::Error| ArrowError::JsonError(e.to_string());
    rows.into_iter()
        .map(|row| {
            let mut v: serde_json::Value = serde_json::from_slice(&row).map_err(bad)?;
            if let serde_json::Value::Object(m) = &mut v {
                for f in schema.fields().iter().filter(|f| jsonb::is_jsonb(f)) {
                    // SQL NULL is written as a missing key, so that jsonb's
                    // `null` (written as JSON null) stays a value.
                    match m.get(f.name()) {
                        Some(serde_json::Value::Null) => {
                            m.remove(f.name());
                        }
                        Some(serde_json::Value::String(text)) => {
                            let v = jsonb::parse(text).map_err(invalid_json)?;
                            m.insert(f.name().clone(), v);
                        }
                        _ => {}
                    }
                }
            }
            serde_json::to_vec(&v).map_err(bad)
        })
        .collect()
}

/// Check one value as the module documentation says; the error names the
/// problem (and the column). True when a key names a column only in
/// another case (the value is then rewritten for arrow-json).
fn check(schema: &Schema, value: &[u8]) -> Result<bool, ArrowError> {
    let mut de = serde_json::Deserializer::from_slice(value);
    Row(schema)
        .deserialize(&mut de)
        .and_then(|other_case| de.end().map(|()| other_case))
        .map_err(|e| ArrowError::JsonError(e.to_string()))
}

struct Row<'a>(&'a Schema);

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut other_case = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let field = field_for(self.0, &key);
            other_case |= matches!(field, Some((_, false)));
            match field {
                Some((f, _)) if is_integer(f.data_type()) => map.next_value_seed(Integer(f))?,
                _ => map.next_value_seed(Skip)?,
            }
        }
        Ok(other_case)
    }
}

/// Any JSON value, read through (serde_json's `IgnoredAny` skips nested
/// values without its recursion limit, and arrow-json then recursed into
/// them until the stack overflowed).
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

/// A value for an integer column: an integer in the column's range, a
/// string (arrow-json parses it, strictly), or null.
struct Integer<'a>(&'a Field);

impl<'de> DeserializeSeed<'de> for Integer<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Integer<'_> {
    fn fits<E: de::Error>(&self, v: i128) -> Result<(), E> {
        let (lo, hi): (i128, i128) = match self.0.data_type() {
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
            DataType::UInt8 => (0, u8::MAX.into()),
            DataType::UInt16 => (0, u16::MAX.into()),
            DataType::UInt32 => (0, u32::MAX.into()),
            _ => (0, u64::MAX.into()),
        };
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(E::custom(format!(
                "value {v} is out of range for column \"{}\" ({})",
                self.0.name(),
                self.0.data_type()
            )))
        }
    }
}

impl<'de> Visitor<'de> for Integer<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer for column \"{}\"", self.0.name())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.fits(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.fits(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(E::custom(format!(
            "number {v} is not an integer, for integer column \"{}\"",
            self.0.name()
        )))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(format!(
            "a boolean is not an integer, for integer column \"{}\"",
            self.0.name()
        )))
    }
}

/// Decode `values` (one JSON object each) into a batch of `schema`; returns
/// the batch of the good values, which of the inputs made it (indices), and
/// the failures.
pub fn decode(
    schema: &SchemaRef,
    values: &[&[u8]],
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    super::decode_isolating(schema, values, decode_all)
}

/// Encode every row of `batch` as one JSON object (explicit nulls).
pub fn encode(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    let _ = std::marker::PhantomData::<JsonArray>;
    let rows: Vec<Vec<u8>> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    let schema = batch.schema();
    if schema.fields().iter().any(|f| jsonb::is_jsonb(f)) {
        return jsonb_as_json(&schema, rows);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Int32Type, TimestampMicrosecondType};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    fn reasons(values: &[&str]) -> (RecordBatch, Vec<usize>, Vec<String>) {
        let bytes: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let (b, good, failures) = decode(&schema(), &bytes);
        (b, good, failures.into_iter().map(|f| f.reason).collect())
    }

    #[test]
    fn values_that_would_be_altered_are_decode_errors() {
        let nested = format!("{{\"s\": {}1{}}}", "[".repeat(30_000), "]".repeat(30_000));
        let (batch, good, why) = reasons(&[
            r#"{"i": 1}"#,
            r#"{"i": -0.5}"#,
            r#"{"i": 3e0}"#,
            r#"{"i": 3000000000}"#,
            r#"{"f": 1e400}"#,
            r#"{"a":1,,}"#,
            r#"{"i": 2} {"i": 3}"#,
            &nested,
            r#"{"i": "7", "s": 5, "f": 2}"#,
        ]);
        assert_eq!(good, vec![0, 8], "{why:?}");
        assert_eq!(why.len(), 7);
        assert!(why[0].contains("not an integer"), "{}", why[0]);
        assert!(why[2].contains("out of range"), "{}", why[2]);
        assert!(why[5].contains("trailing"), "{}", why[5]);
        assert!(why[6].contains("recursion limit"), "{}", why[6]);
        let i = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!((i.value(0), i.value(1)), (1, 7));
        assert_eq!(batch.column(2).as_string::<i32>().value(1), "5");
    }

    #[test]
    fn keys_match_columns_in_any_case() {
        let (batch, good, _) = reasons(&[
            r#"{"I": 1, "s": "x"}"#,
            r#"{"i": 2, "I": 9, "S": "y"}"#,
            r#"{"I": 1.5}"#,
        ]);
        assert_eq!(good, vec![0, 1], "a fraction for I is still refused");
        let i = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!((i.value(0), i.value(1)), (1, 2), "the exact name wins");
        assert_eq!(batch.column(2).as_string::<i32>().value(1), "y");
    }

    #[test]
    fn numbers_for_timestamps_are_epoch_milliseconds() {
        let (batch, good, why) = reasons(&[
            r#"{"ts": 1700000000123}"#,
            r#"{"ts": "2023-11-14T22:13:20.123456"}"#,
            r#"{"ts": null}"#,
            r#"{"ts": "yesterday-ish"}"#,
        ]);
        assert_eq!(good, vec![0, 1, 2], "{why:?}");
        let ts = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_123_000);
        assert_eq!(ts.value(1), 1_700_000_000_123_456);
        assert!(ts.is_null(2));
    }
}
