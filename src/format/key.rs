//! Record keys: how a stream's `KEY` column (or a sink's key column) is
//! held in the Kafka record key — ksqlDB's `KEY_FORMAT`.
//!
//! | KEY_FORMAT            | bytes of the key                                  |
//! |-----------------------|---------------------------------------------------|
//! | (none), `DELIMITED`   | the column's text (`42`, `user-1`), as kcat types it |
//! | `KAFKA`               | Kafka's serializers: INT 4 bytes and BIGINT 8 bytes big-endian, DOUBLE 8 bytes IEEE 754, STRING UTF-8, BYTES as is |
//! | `JSON`                | the column's JSON (`42`, `"user-1"`)              |
//! | `AVRO`                | Confluent-framed Avro (`avro.rs`)                 |
//!
//! eddy's default is the text, where ksqlDB's is `KAFKA`: a kcat or
//! kafka-python user keys records with text, and for a VARCHAR key (the
//! common case) the two are the same bytes. A key that does not decode
//! (a 3-byte key of an INT column in `KAFKA`) fails its record, counted
//! and skipped as a value that does not decode is.

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use serde::{Deserialize, Serialize};

use super::avro::AvroCodec;

/// A key format besides the default text, as the catalog records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    Kafka,
    Json,
}

impl KeyFormat {
    /// `KEY_FORMAT` as written: Ok(None) for the default text
    /// (`DELIMITED`, `NONE`), Err for one eddy does not know. `AVRO` is
    /// not one of these (it carries a schema: the caller's).
    pub fn parse(name: &str) -> Result<Option<KeyFormat>, String> {
        match name.to_ascii_lowercase().as_str() {
            "kafka" => Ok(Some(KeyFormat::Kafka)),
            "json" => Ok(Some(KeyFormat::Json)),
            "delimited" | "none" | "text" => Ok(None),
            _ => Err(format!(
                "KEY_FORMAT '{name}' (KAFKA, JSON, DELIMITED or AVRO)"
            )),
        }
    }

    /// Whether a key column of type `t` can be held in this format; the
    /// error names what can.
    pub fn check(self, column: &str, t: &DataType) -> Result<(), String> {
        match self {
            KeyFormat::Json => Ok(()),
            KeyFormat::Kafka => match t {
                DataType::Int32
                | DataType::Int64
                | DataType::Float64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary => Ok(()),
                other => Err(format!(
                    "key column {column} of type {} in KEY_FORMAT 'KAFKA' (which holds INT, BIGINT, DOUBLE, STRING or BYTES)",
                    crate::types::pg_name(other)
                )),
            },
        }
    }
}

/// How a layout reads and writes its key column.
#[derive(Debug, Clone, Default)]
pub enum KeyCodec {
    /// The column's text (bytes as is for a bytea column).
    #[default]
    Text,
    /// Kafka's primitive serializers for the column's type.
    Kafka(DataType),
    /// The column's JSON (of a column of this type).
    Json(DataType),
    /// Confluent-framed Avro of the registry schema.
    Avro(AvroCodec),
}

impl KeyCodec {
    /// The codec of `format` for a key column of type `t`.
    pub fn of(format: Option<KeyFormat>, t: &DataType) -> KeyCodec {
        match format {
            None => KeyCodec::Text,
            Some(KeyFormat::Kafka) => KeyCodec::Kafka(t.clone()),
            Some(KeyFormat::Json) => KeyCodec::Json(t.clone()),
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self, KeyCodec::Text)
    }

    /// A record key as the text of its column (None: a NULL key), or why
    /// it does not decode. Not for [`KeyCodec::Text`] (read as is).
    pub fn text(&self, key: &[u8]) -> Result<Option<String>, String> {
        match self {
            KeyCodec::Text => Ok(Some(String::from_utf8_lossy(key).into_owned())),
            KeyCodec::Avro(codec) => match codec.json_of(key) {
                Ok(_) => Ok(codec.key_text(key)),
                Err(e) => Err(match e.strip_prefix("value ") {
                    Some(rest) => format!("key {rest}"),
                    None => format!("key: {e}"),
                }),
            },
            KeyCodec::Json(_) => match serde_json::from_slice::<serde_json::Value>(key) {
                Ok(serde_json::Value::Null) => Ok(None),
                Ok(serde_json::Value::String(s)) => Ok(Some(s)),
                Ok(other) => Ok(Some(other.to_string())),
                Err(e) => Err(format!("key is not JSON (KEY_FORMAT 'JSON'): {e}")),
            },
            KeyCodec::Kafka(t) => kafka_text(t, key).map(Some),
        }
    }

    /// The record key holding a key column whose text is `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, ArrowError> {
        let bad = |what: &str| {
            ArrowError::CastError(format!("key {text:?} is not {what} (KEY_FORMAT 'KAFKA')"))
        };
        match self {
            KeyCodec::Text => Ok(text.as_bytes().to_vec()),
            KeyCodec::Avro(codec) => codec.encode_key(text),
            KeyCodec::Json(t) if t.is_numeric() || *t == DataType::Boolean => {
                Ok(text.as_bytes().to_vec())
            }
            KeyCodec::Json(_) => Ok(serde_json::Value::String(text.to_string())
                .to_string()
                .into_bytes()),
            KeyCodec::Kafka(t) => match t {
                DataType::Int32 => Ok(text
                    .parse::<i32>()
                    .map_err(|_| bad("an INT"))?
                    .to_be_bytes()
                    .to_vec()),
                DataType::Int64 => Ok(text
                    .parse::<i64>()
                    .map_err(|_| bad("a BIGINT"))?
                    .to_be_bytes()
                    .to_vec()),
                DataType::Float64 => Ok(text
                    .parse::<f64>()
                    .map_err(|_| bad("a DOUBLE"))?
                    .to_be_bytes()
                    .to_vec()),
                _ => Ok(text.as_bytes().to_vec()),
            },
        }
    }
}

/// A `KAFKA`-format key of a column of type `t`, as its text.
fn kafka_text(t: &DataType, key: &[u8]) -> Result<String, String> {
    let sized = |n: usize, what: &str| {
        format!(
            "key of {} bytes is not a {what} (KEY_FORMAT 'KAFKA' holds it in {n} bytes)",
            key.len()
        )
    };
    match t {
        DataType::Int32 => <[u8; 4]>::try_from(key)
            .map(|b| i32::from_be_bytes(b).to_string())
            .map_err(|_| sized(4, "INT")),
        DataType::Int64 => <[u8; 8]>::try_from(key)
            .map(|b| i64::from_be_bytes(b).to_string())
            .map_err(|_| sized(8, "BIGINT")),
        DataType::Float64 => <[u8; 8]>::try_from(key)
            .map(|b| f64::from_be_bytes(b).to_string())
            .map_err(|_| sized(8, "DOUBLE")),
        _ => Ok(String::from_utf8_lossy(key).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kafka_keys_are_kafkas_serializers() {
        let int = KeyCodec::of(Some(KeyFormat::Kafka), &DataType::Int32);
        assert_eq!(int.encode("1").unwrap(), vec![0, 0, 0, 1]);
        assert_eq!(int.encode("-2").unwrap(), vec![0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(int.text(&[0, 0, 1, 0]).unwrap().as_deref(), Some("256"));
        assert!(int.text(&[0, 1, 0]).unwrap_err().contains("3 bytes"));
        assert!(int.encode("x").is_err());
        let big = KeyCodec::of(Some(KeyFormat::Kafka), &DataType::Int64);
        assert_eq!(big.encode("7").unwrap(), 7i64.to_be_bytes().to_vec());
        assert_eq!(
            big.text(&(-9i64).to_be_bytes()).unwrap().as_deref(),
            Some("-9")
        );
        let dbl = KeyCodec::of(Some(KeyFormat::Kafka), &DataType::Float64);
        assert_eq!(dbl.encode("1.5").unwrap(), 1.5f64.to_be_bytes().to_vec());
        assert_eq!(
            dbl.text(&2.25f64.to_be_bytes()).unwrap().as_deref(),
            Some("2.25")
        );
        let s = KeyCodec::of(Some(KeyFormat::Kafka), &DataType::Utf8);
        assert_eq!(s.encode("ab").unwrap(), b"ab".to_vec());
        assert_eq!(s.text(b"ab").unwrap().as_deref(), Some("ab"));
    }

    #[test]
    fn json_keys_round_trip() {
        let j = KeyCodec::of(Some(KeyFormat::Json), &DataType::Utf8);
        assert_eq!(j.encode("ab").unwrap(), br#""ab""#.to_vec());
        assert_eq!(j.encode("12").unwrap(), br#""12""#.to_vec());
        let n = KeyCodec::of(Some(KeyFormat::Json), &DataType::Int64);
        assert_eq!(n.encode("12").unwrap(), b"12".to_vec());
        assert_eq!(j.text(br#""ab""#).unwrap().as_deref(), Some("ab"));
        assert_eq!(j.text(b"12").unwrap().as_deref(), Some("12"));
        assert_eq!(j.text(b"null").unwrap(), None);
        assert!(j.text(b"{").is_err());
    }

    #[test]
    fn formats_parse_and_check() {
        assert_eq!(KeyFormat::parse("Kafka").unwrap(), Some(KeyFormat::Kafka));
        assert_eq!(KeyFormat::parse("DELIMITED").unwrap(), None);
        assert!(KeyFormat::parse("protobuf").is_err());
        assert!(
            KeyFormat::Kafka
                .check("id", &DataType::Boolean)
                .unwrap_err()
                .contains("id of type boolean")
        );
        assert!(KeyFormat::Kafka.check("id", &DataType::Int64).is_ok());
    }
}
