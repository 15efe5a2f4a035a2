//! JSON with a schema in the registry (ksqlDB's `JSON_SR`, what
//! confluent-kafka's `JSONSerializer` writes): Confluent's wire format, a
//! magic byte 0 and the JSON Schema's id, then the JSON text. Values
//! decode as JSON (`json.rs`: columns by name); the id must be one the
//! registry holds. Writing frames each row's JSON with the stream's
//! registered schema.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use serde_json::{Map, Value as Json, json};

use super::DecodeFailure;
use super::avro::framed;
use crate::registry::{Registry, SchemaType};

/// A JSON_SR stream's codec: the registry and the schema it writes with.
#[derive(Clone)]
pub struct JsonSrCodec {
    registry: Arc<Registry>,
    id: u32,
}

impl std::fmt::Debug for JsonSrCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSrCodec").field("id", &self.id).finish()
    }
}

impl JsonSrCodec {
    pub fn new(registry: Arc<Registry>, id: u32) -> JsonSrCodec {
        JsonSrCodec { registry, id }
    }

    /// Decode framed JSON values into a batch of `schema`.
    pub fn decode(
        &self,
        schema: &SchemaRef,
        values: &[&[u8]],
    ) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
        let mut bodies: Vec<&[u8]> = Vec::with_capacity(values.len());
        let mut from = Vec::with_capacity(values.len());
        let mut failures = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let body = framed(v).and_then(|(id, body)| match self.registry.schema(id) {
                Some(_) => Ok(body),
                None => Err(format!("schema id {id} is not in the schema registry")),
            });
            match body {
                Ok(b) => {
                    bodies.push(b);
                    from.push(i);
                }
                Err(reason) => failures.push(DecodeFailure { index: i, reason }),
            }
        }
        super::decode_json_of(schema, &bodies, &from, failures)
    }

    /// Each row of `values` as JSON framed with this codec's schema id.
    pub fn encode(&self, values: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        Ok(super::json::encode(values)?
            .into_iter()
            .map(|row| {
                let mut v = Vec::with_capacity(row.len() + 5);
                v.push(0);
                v.extend_from_slice(&self.id.to_be_bytes());
                v.extend(row);
                v
            })
            .collect())
    }
}

/// The SQL type of a JSON Schema property (jsonb for objects, arrays and
/// what it cannot tell).
fn sql_type(p: &Json) -> &'static str {
    let types: Vec<&str> = match p.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => match p
            .get("oneOf")
            .or_else(|| p.get("anyOf"))
            .and_then(Json::as_array)
        {
            Some(alts) => alts
                .iter()
                .filter_map(|a| a.get("type").and_then(Json::as_str))
                .collect(),
            None => vec![],
        },
    };
    let types: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    match types.as_slice() {
        ["integer"] => "BIGINT",
        ["number"] => "DOUBLE PRECISION",
        ["boolean"] => "BOOLEAN",
        ["string"] => match p.get("format").and_then(Json::as_str) {
            Some("date-time") => "TIMESTAMPTZ",
            Some("date") => "DATE",
            _ => "TEXT",
        },
        _ => "JSONB",
    }
}

/// The columns (name, SQL type) of an object JSON Schema's properties,
/// names lower-cased unless two would then clash.
pub fn columns(schema_text: &str) -> Result<Vec<(String, String)>, String> {
    let schema: Json = serde_json::from_str(schema_text).map_err(|e| e.to_string())?;
    let props: &Map<String, Json> = schema
        .get("properties")
        .and_then(Json::as_object)
        .ok_or("the value schema is not a JSON Schema of an object with properties")?;
    let lower: std::collections::HashSet<String> = props.keys().map(|k| k.to_lowercase()).collect();
    let fold = lower.len() == props.len();
    Ok(props
        .iter()
        .map(|(k, p)| {
            let name = if fold { k.to_lowercase() } else { k.clone() };
            (name, sql_type(p).to_string())
        })
        .collect())
}

fn type_of(t: &DataType) -> Json {
    match t {
        DataType::Boolean => json!({"type": ["boolean", "null"]}),
        t if t.is_integer() => json!({"type": ["integer", "null"]}),
        t if t.is_floating() => json!({"type": ["number", "null"]}),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => json!({"type": ["number", "null"]}),
        DataType::Timestamp(TimeUnit::Second, _) | DataType::Timestamp(..) => {
            json!({"type": ["string", "null"], "format": "date-time"})
        }
        DataType::Date32 | DataType::Date64 => {
            json!({"type": ["string", "null"], "format": "date"})
        }
        DataType::List(_) | DataType::LargeList(_) => json!({"type": ["array", "null"]}),
        DataType::Struct(_) | DataType::Map(..) => json!({"type": ["object", "null"]}),
        _ => json!({"type": ["string", "null"]}),
    }
}

/// A JSON Schema (draft-07) of an object with these fields as properties,
/// each nullable: what eddy registers for a JSON_SR stream that names its
/// columns.
pub fn schema_of(title: &str, fields: &[Field]) -> Json {
    let mut props = Map::new();
    for f in fields {
        props.insert(f.name().clone(), type_of(f.data_type()));
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "type": "object",
        "properties": props,
    })
}

/// Whether the registry's schema `id` is a JSON Schema.
pub fn is_json_schema(registry: &Registry, id: u32) -> bool {
    registry
        .schema(id)
        .is_some_and(|s| s.kind == SchemaType::Json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn columns_come_from_properties() {
        let cols = columns(
            r#"{"type":"object","properties":{
                "Id":{"type":"integer"},"name":{"type":["string","null"]},
                "at":{"type":"string","format":"date-time"},"score":{"type":"number"},
                "tags":{"type":"array","items":{"type":"string"}},
                "ok":{"oneOf":[{"type":"null"},{"type":"boolean"}]}}}"#,
        )
        .unwrap();
        let mut cols = cols;
        cols.sort();
        assert_eq!(
            cols,
            [
                ("at", "TIMESTAMPTZ"),
                ("id", "BIGINT"),
                ("name", "TEXT"),
                ("ok", "BOOLEAN"),
                ("score", "DOUBLE PRECISION"),
                ("tags", "JSONB"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(columns(r#"{"type":"string"}"#).is_err());
    }
}
