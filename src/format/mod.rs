//! Record formats: record bytes ⇄ Arrow batches. Decoding is vectorised
//! (arrow-json, arrow-csv); a record that does not decode is isolated,
//! counted and skipped, never stopping the reader.

pub mod avro;
pub mod csv;
pub mod json;
pub mod json_sr;
pub mod key;
pub mod record;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use serde::{Deserialize, Serialize};

/// A value that failed to decode: its index in the input and why.
#[derive(Debug, Clone)]
pub struct DecodeFailure {
    pub index: usize,
    pub reason: String,
}

/// Feed all of `bytes` to a push decoder (arrow-json's or arrow-csv's),
/// which may take them in pieces; stops if it takes none (a full batch).
pub(crate) fn feed(
    mut decode: impl FnMut(&[u8]) -> Result<usize, ArrowError>,
    bytes: &[u8],
) -> Result<(), ArrowError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = decode(rest)?;
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    Ok(())
}

/// Decode `values` with `decode_all` (all at once, one row per value);
/// only when that fails, value by value to find and drop the bad ones (the
/// common case pays nothing for the error handling). Returns the batch of
/// the good values, which inputs made it (indices), and the failures.
pub(crate) fn decode_isolating(
    schema: &SchemaRef,
    values: &[&[u8]],
    decode_all: impl Fn(&SchemaRef, &[&[u8]]) -> Result<RecordBatch, ArrowError>,
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    // Columns the readers cannot parse themselves are read as text and
    // converted with PostgreSQL's input rules.
    let read_schema = readable(schema);
    let decode_all = |schema: &SchemaRef, values: &[&[u8]]| match &read_schema {
        None => decode_all(schema, values),
        Some(read) => {
            let batch = decode_all(read, values)?;
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| crate::types::input::cast(c, f.data_type(), false))
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(Arc::clone(schema), columns)
        }
    };
    if let Ok(batch) = decode_all(schema, values)
        && batch.num_rows() == values.len()
    {
        return (batch, (0..values.len()).collect(), vec![]);
    }
    let mut good = Vec::new();
    let mut failures = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match decode_all(schema, &[v]) {
            Ok(b) if b.num_rows() == 1 => good.push(i),
            Ok(b) => failures.push(DecodeFailure {
                index: i,
                reason: format!("value holds {} rows, not one", b.num_rows()),
            }),
            Err(e) => failures.push(DecodeFailure {
                index: i,
                reason: e.to_string(),
            }),
        }
    }
    let kept: Vec<&[u8]> = good.iter().map(|i| values[*i]).collect();
    let batch =
        decode_all(schema, &kept).unwrap_or_else(|_| RecordBatch::new_empty(Arc::clone(schema)));
    (batch, good, failures)
}

/// The JSON objects `bodies` decoded into a batch of `schema` by
/// `json.rs`, where `bodies[i]` came from input `from[i]` and `failures`
/// are the inputs that failed before: the batch, the good inputs and every
/// failure, in input order (Avro and JSON_SR values end here).
pub(crate) fn decode_json_of(
    schema: &SchemaRef,
    bodies: &[&[u8]],
    from: &[usize],
    mut failures: Vec<DecodeFailure>,
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    let (batch, good, more) = json::decode(schema, bodies);
    let good = good.into_iter().map(|g| from[g]).collect();
    failures.extend(more.into_iter().map(|f| DecodeFailure {
        index: from[f.index],
        reason: f.reason,
    }));
    failures.sort_by_key(|f| f.index);
    (batch, good, failures)
}

/// `schema` with the columns arrow-json and arrow-csv cannot read
/// (intervals) as text; None when it has none.
fn readable(schema: &SchemaRef) -> Option<SchemaRef> {
    let unreadable = |t: &DataType| matches!(t, DataType::Interval(_));
    if !schema.fields().iter().any(|f| unreadable(f.data_type())) {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = if unreadable(f.data_type()) {
                DataType::Utf8
            } else {
                f.data_type().clone()
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

/// How a record's value holds a row's (non-metadata) columns.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object; columns by name.
    #[default]
    Json,
    /// One CSV line; columns in declared order.
    Csv,
    /// The value as UTF-8 text, in the one value column.
    Text,
    /// The value's bytes, in the one value column.
    Bytes,
    /// Avro in Confluent's wire format (a schema id, then the datum);
    /// columns by name (`avro.rs`).
    Avro,
    /// JSON framed with a JSON Schema's id in the registry (ksqlDB's
    /// `JSON_SR`; `json_sr.rs`).
    #[serde(rename = "json_sr")]
    JsonSr,
}

impl Format {
    /// A format by the names eddy, Materialize and ksqlDB use.
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "csv" | "delimited" => Some(Format::Csv),
            "text" | "string" => Some(Format::Text),
            "bytes" => Some(Format::Bytes),
            "avro" => Some(Format::Avro),
            "json_sr" => Some(Format::JsonSr),
            _ => None,
        }
    }
}
