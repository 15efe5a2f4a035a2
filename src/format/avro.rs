//! Avro values in Confluent's wire format: a magic byte 0, the writer
//! schema's id in the schema registry (4 bytes, big-endian), then the Avro
//! binary encoding of one datum. apache-avro decodes and encodes the
//! datums; the registry (`crate::registry`, in process: no network under
//! the dataflow lock) gives each id's schema.
//!
//! Decoding resolves the writer's schema to the stream's by name: each
//! datum, read with its writer's schema, becomes a JSON object of its
//! fields (logical types as the text PostgreSQL reads: dates, timestamps,
//! decimals; a null is a field left out, so SQL's NULL) that `json.rs`
//! decodes into the stream's columns, so a field the writer added is
//! ignored, one it dropped is NULL, a value that does not fit its column
//! is a decode error, and an int read into a bigint column is promoted,
//! as for JSON. When the stream's columns were inferred from a registered
//! schema, that schema's field defaults fill the fields a writer lacks, as
//! Avro's resolution would. (apache-avro's own resolution is not used: it
//! refuses decimals whose bytes are shorter than their precision allows,
//! which is every small value.) A value not in the wire format, with an
//! unknown id, or that does not decode is counted and skipped.
//!
//! Encoding (INSERT, sinks, persistent queries) writes with one
//! registered schema: each row's JSON (`json::encode`) converted by that
//! schema's types.
//!
//! (About 1,000 lines, 180 of them tests: decoding, encoding and the schema ⇄
//! columns mappings walk the same Avro types.)

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Decimal, Schema};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::arrow::error::ArrowError;
use serde_json::{Map, Value as Json, json};

use super::DecodeFailure;
use crate::registry::Registry;

/// An Avro stream's codec: the registry and the schema it writes with.
#[derive(Clone)]
pub struct AvroCodec {
    registry: Arc<Registry>,
    /// The registered schema rows are written with.
    id: u32,
    /// Resolve writers' schemas to schema `id` when reading (the stream's
    /// columns came from it).
    resolve: bool,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("id", &self.id)
            .field("resolve", &self.resolve)
            .finish()
    }
}

type Names<'s> = HashMap<Name, &'s Schema>;

fn names(schema: &Schema) -> Names<'_> {
    ResolvedSchema::try_from(schema)
        .map(|r| r.get_names().clone())
        .unwrap_or_default()
}

/// The schema a named reference stands for.
fn deref<'s>(s: &'s Schema, names: &Names<'s>) -> &'s Schema {
    match s {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(s),
        s => s,
    }
}

fn invalid(msg: impl Into<String>) -> ArrowError {
    ArrowError::InvalidArgumentError(msg.into())
}

/// A value's schema id (Confluent's wire format) and its body.
pub fn framed(v: &[u8]) -> Result<(u32, &[u8]), String> {
    match v {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err("value is not in the Confluent Avro wire format (a magic byte 0 and a 4-byte schema id first)".into()),
    }
}

/// The most one length in a datum may claim (a string, bytes, an
/// array's or map's block): apache-avro allocates what a length says
/// before reading, so a hostile 2^40 is refused here rather than
/// attempted. 64 MiB is past any Kafka record eddy accepts by default.
const MAX_ALLOCATION: usize = 64 << 20;

impl AvroCodec {
    pub fn new(registry: Arc<Registry>, id: u32, resolve: bool) -> AvroCodec {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
        AvroCodec {
            registry,
            id,
            resolve,
        }
    }

    /// Decode `values` into a batch of `schema` (see the module's docs).
    pub fn decode(
        &self,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        values: &[&[u8]],
    ) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
        // The schema the stream's columns came from: its fields' defaults
        // fill what a writer's schema lacks (Avro's resolution by name;
        // promotions such as int → long are the columns' own).
        let reader = match self.resolve {
            true => self.registry.avro(self.id),
            false => None,
        };
        let defaults: Vec<(String, Json)> = match reader.as_deref() {
            Some(Schema::Record(r)) => r
                .fields
                .iter()
                .filter_map(|f| f.default.clone().map(|d| (f.name.clone(), d)))
                .collect(),
            _ => vec![],
        };
        // Each writer schema once per call.
        let mut writers: HashMap<u32, Option<Arc<Schema>>> = HashMap::new();
        for v in values {
            if let Ok((id, _)) = framed(v) {
                writers.entry(id).or_insert_with(|| self.registry.avro(id));
            }
        }
        let readers: HashMap<u32, Result<GenericDatumReader<'_>, String>> = writers
            .iter()
            .filter_map(|(id, w)| w.as_ref().map(|w| (*id, w)))
            .map(|(id, w)| {
                let r = GenericDatumReader::builder(w)
                    .build()
                    .map_err(|e| format!("schema {id}: {e}"));
                (id, r)
            })
            .collect();
        let writer_names: HashMap<u32, Names<'_>> = writers
            .iter()
            .filter_map(|(id, w)| w.as_deref().map(|w| (*id, names(w))))
            .collect();
        let mut jsons: Vec<Vec<u8>> = Vec::with_capacity(values.len());
        let mut from: Vec<usize> = Vec::with_capacity(values.len());
        let mut failures = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let one = || -> Result<Vec<u8>, String> {
                let (id, mut body) = framed(v)?;
                let datum = readers
                    .get(&id)
                    .ok_or_else(|| format!("schema id {id} is not in the schema registry"))?
                    .as_ref()
                    .map_err(Clone::clone)?
                    .read_value(&mut body)
                    .map_err(|e| format!("value does not decode with schema {id}: {e}"))?;
                if !body.is_empty() {
                    return Err(format!(
                        "value has {} bytes past its datum (not written with schema {id}?)",
                        body.len()
                    ));
                }
                let schema = writers
                    .get(&id)
                    .and_then(|w| w.as_deref())
                    .ok_or("no writer schema")?;
                let names = writer_names.get(&id).ok_or("no writer schema")?;
                let mut json = to_json(&datum, schema, names)?;
                let Json::Object(fields) = &mut json else {
                    return Err("value is not an Avro record".into());
                };
                for (name, default) in &defaults {
                    if !fields.contains_key(name) {
                        fields.insert(name.clone(), default.clone());
                    }
                }
                // A null is SQL's NULL (not jsonb's `null` in a jsonb
                // column): the field left out.
                fields.retain(|_, v| !v.is_null());
                serde_json::to_vec(&json).map_err(|e| e.to_string())
            };
            match one() {
                Ok(j) => {
                    jsons.push(j);
                    from.push(i);
                }
                Err(reason) => failures.push(DecodeFailure { index: i, reason }),
            }
        }
        let refs: Vec<&[u8]> = jsons.iter().map(Vec::as_slice).collect();
        super::decode_json_of(schema, &refs, &from, failures)
    }

    /// Encode each row of `values` with this codec's schema, framed.
    pub fn encode(&self, values: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        let rows = super::json::encode(values)?
            .iter()
            .map(|row| serde_json::from_slice(row).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<Json>, _>>()?;
        self.encode_json(&rows)
    }

    /// A framed value as JSON, decoded with its writer's schema (a sink
    /// reading back what its topic holds).
    pub fn json_of(&self, v: &[u8]) -> Result<Json, String> {
        let (id, mut body) = framed(v)?;
        let writer = self
            .registry
            .avro(id)
            .ok_or_else(|| format!("schema id {id} is not in the schema registry"))?;
        let datum = GenericDatumReader::builder(&writer)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .map_err(|e| format!("value does not decode with schema {id}: {e}"))?;
        to_json(&datum, &writer, &names(&writer))
    }

    /// A record key in Avro as the text of its one column: a record's one
    /// field (the seed's `AvroProducer` keys, `{"vendor_id": 1}`) or a
    /// primitive (ksqlDB's unwrapped keys); None when it does not decode.
    pub fn key_text(&self, k: &[u8]) -> Option<String> {
        let json = match self.json_of(k).ok()? {
            Json::Object(m) if m.len() == 1 => m.into_iter().next()?.1,
            other => other,
        };
        match json {
            Json::Null => None,
            Json::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    /// A key column's text as an Avro key of this codec's schema (a
    /// record of one field, or a primitive), framed.
    pub fn encode_key(&self, text: &str) -> Result<Vec<u8>, ArrowError> {
        let schema = self.registry.avro(self.id).ok_or_else(|| {
            invalid(format!(
                "schema id {} is not in the schema registry",
                self.id
            ))
        })?;
        let value = match schema.as_ref() {
            Schema::Record(r) if r.fields.len() == 1 => {
                json!({ r.fields[0].name.clone(): text })
            }
            _ => Json::String(text.to_string()),
        };
        Ok(self.encode_json(&[value])?.pop().unwrap_or_default())
    }

    /// Encode JSON values (objects by field name) with this codec's
    /// schema, framed.
    pub fn encode_json(&self, rows: &[Json]) -> Result<Vec<Vec<u8>>, ArrowError> {
        let schema = self.registry.avro(self.id).ok_or_else(|| {
            invalid(format!(
                "schema id {} is not in the schema registry",
                self.id
            ))
        })?;
        let names = names(&schema);
        let writer = GenericDatumWriter::builder(&schema)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(rows.len());
        for json in rows {
            let datum = from_json(json, &schema, &names).map_err(invalid)?;
            let mut framed = vec![0u8];
            framed.extend_from_slice(&self.id.to_be_bytes());
            framed.extend(
                writer
                    .write_value_to_vec(datum)
                    .map_err(|e| invalid(e.to_string()))?,
            );
            out.push(framed);
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("\\x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(f.to_string()))
}

/// An unscaled big-endian two's-complement integer with `scale` digits
/// after the point, as decimal text.
fn decimal_text(bytes: &[u8], scale: usize) -> Result<String, String> {
    if bytes.len() > 16 {
        return Err("decimal wider than 128 bits".into());
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let n = i128::from_be_bytes(buf);
    let digits = n.unsigned_abs().to_string();
    let sign = if n < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    Ok(format!("{sign}{int}.{frac}"))
}

/// Decimal text as the unscaled big-endian bytes of `scale` digits.
fn decimal_bytes(text: &str, scale: usize) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if frac.len() > scale && frac[scale..].chars().any(|c| c != '0') {
        return Err(format!(
            "{text} has more than {scale} digits after the point"
        ));
    }
    let frac: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(scale)
        .collect();
    let n: i128 = format!("{int}{frac}")
        .parse()
        .map_err(|_| format!("{text} is not a decimal"))?;
    let n = if neg { -n } else { n };
    let bytes = n.to_be_bytes();
    // Minimal two's complement.
    let mut start = 0;
    while start < 15
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    Ok(bytes[start..].to_vec())
}

fn timestamp_text(micros: i64) -> Result<String, String> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .ok_or_else(|| format!("timestamp {micros}µs out of range"))
}

/// A datum as JSON, by its schema.
fn to_json(v: &Avro, schema: &Schema, names: &Names<'_>) -> Result<Json, String> {
    let schema = deref(schema, names);
    Ok(match v {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) => json!(i),
        Avro::Long(i) => json!(i),
        Avro::Float(f) => float(f64::from(*f)),
        Avro::Double(f) => float(*f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Json::String(hex(b)),
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s.clone()),
        Avro::Uuid(u) => Json::String(u.to_string()),
        Avro::Union(i, inner) => {
            let branch = match schema {
                Schema::Union(u) => u.variants().get(*i as usize).unwrap_or(schema),
                s => s,
            };
            to_json(inner, branch, names)?
        }
        Avro::Array(items) => {
            let item = match schema {
                Schema::Array(a) => a.items.as_ref(),
                s => s,
            };
            Json::Array(
                items
                    .iter()
                    .map(|x| to_json(x, item, names))
                    .collect::<Result<_, _>>()?,
            )
        }
        Avro::Map(m) => {
            let item = match schema {
                Schema::Map(a) => a.types.as_ref(),
                s => s,
            };
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), to_json(x, item, names)?);
            }
            Json::Object(out)
        }
        Avro::Record(fields) => {
            let mut out = Map::new();
            for (k, x) in fields {
                let field = match schema {
                    Schema::Record(r) => r
                        .lookup
                        .get(k)
                        .and_then(|i| r.fields.get(*i))
                        .map(|f| &f.schema),
                    _ => None,
                };
                out.insert(
                    k.clone(),
                    to_json(x, field.unwrap_or(&Schema::Null), names)?,
                );
            }
            Json::Object(out)
        }
        Avro::Date(d) => {
            let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(*d))))
                .ok_or_else(|| format!("date {d} out of range"))?;
            Json::String(date.to_string())
        }
        Avro::Decimal(d) => {
            let scale = match schema {
                Schema::Decimal(s) => s.scale,
                _ => 0,
            };
            let bytes: Vec<u8> = Vec::try_from(d).map_err(|e| e.to_string())?;
            Json::String(decimal_text(&bytes, scale)?)
        }
        Avro::BigDecimal(d) => Json::String(d.to_string()),
        Avro::TimeMillis(ms) => Json::String(time_text(i64::from(*ms) * 1000)?),
        Avro::TimeMicros(us) => Json::String(time_text(*us)?),
        Avro::TimestampMillis(ms) | Avro::LocalTimestampMillis(ms) => {
            Json::String(timestamp_text(ms.saturating_mul(1000))?)
        }
        Avro::TimestampMicros(us) | Avro::LocalTimestampMicros(us) => {
            Json::String(timestamp_text(*us)?)
        }
        Avro::TimestampNanos(ns) | Avro::LocalTimestampNanos(ns) => {
            Json::String(timestamp_text(ns.div_euclid(1000))?)
        }
        Avro::Duration(d) => Json::String(format!(
            "{} months {} days {} milliseconds",
            u32::from(d.months()),
            u32::from(d.days()),
            u32::from(d.millis())
        )),
    })
}

fn time_text(micros: i64) -> Result<String, String> {
    let secs = micros.div_euclid(1_000_000);
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nanos)
        .map(|t| t.format("%H:%M:%S%.6f").to_string())
        .ok_or_else(|| format!("time {micros}µs out of range"))
}

/// Microseconds since the epoch from a timestamp's JSON (text as
/// `json::encode` writes it, with or without an offset; a number is
/// taken in `unit_us` microseconds).
fn micros_of(v: &Json, unit_us: i64) -> Result<i64, String> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .map(|n| n.saturating_mul(unit_us))
            .ok_or_else(|| format!("{n} is not a timestamp")),
        Json::String(s) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Ok(t.timestamp_micros());
            }
            let s = s.replace(' ', "T");
            chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_micros())
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").map(|d| {
                        d.and_time(chrono::NaiveTime::MIN)
                            .and_utc()
                            .timestamp_micros()
                    })
                })
                .map_err(|_| format!("{s} is not a timestamp"))
        }
        other => Err(format!("{other} is not a timestamp")),
    }
}

/// A row's JSON value as a datum of `schema`.
fn from_json(v: &Json, schema: &Schema, names: &Names<'_>) -> Result<Avro, String> {
    let schema = deref(schema, names);
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let int = |v: &Json| -> Result<i64, String> {
        match v {
            Json::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not an integer")),
            Json::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s} is not an integer")),
            Json::Bool(b) => Ok(i64::from(*b)),
            other => Err(format!("{other} is not an integer")),
        }
    };
    let double = |v: &Json| -> Result<f64, String> {
        match v {
            Json::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            Json::String(s) => s.trim().parse().map_err(|_| format!("{s} is not a number")),
            other => Err(format!("{other} is not a number")),
        }
    };
    Ok(match schema {
        Schema::Union(u) => {
            let variants = u.variants();
            let null = variants.iter().position(|s| matches!(s, Schema::Null));
            if v.is_null() {
                let i = null.ok_or("NULL for a field whose union has no null")?;
                return Ok(Avro::Union(i as u32, Box::new(Avro::Null)));
            }
            let mut last = String::from("an empty union");
            for (i, s) in variants.iter().enumerate() {
                if matches!(s, Schema::Null) {
                    continue;
                }
                match from_json(v, s, names) {
                    Ok(x) => return Ok(Avro::Union(i as u32, Box::new(x))),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        _ if v.is_null() => {
            if matches!(schema, Schema::Null) {
                Avro::Null
            } else {
                return Err("NULL for a field that is not nullable".into());
            }
        }
        Schema::Null => return Err(format!("{v} for a null field")),
        Schema::Boolean => match v {
            Json::Bool(b) => Avro::Boolean(*b),
            Json::String(s) => Avro::Boolean(matches!(s.as_str(), "true" | "t")),
            other => return Err(format!("{other} is not a boolean")),
        },
        Schema::Int => {
            Avro::Int(i32::try_from(int(v)?).map_err(|_| format!("{v} does not fit an Avro int"))?)
        }
        Schema::Long => Avro::Long(int(v)?),
        Schema::Float => Avro::Float(double(v)? as f32),
        Schema::Double => Avro::Double(double(v)?),
        Schema::String => Avro::String(text(v)),
        Schema::Bytes => Avro::Bytes(match v {
            Json::String(s) => unhex(s).unwrap_or_else(|| s.clone().into_bytes()),
            other => other.to_string().into_bytes(),
        }),
        Schema::Fixed(f) => {
            let b = match v {
                Json::String(s) => unhex(s).unwrap_or_else(|| s.clone().into_bytes()),
                other => other.to_string().into_bytes(),
            };
            if b.len() != f.size {
                return Err(format!("{} bytes for a fixed({})", b.len(), f.size));
            }
            Avro::Fixed(f.size, b)
        }
        Schema::Enum(e) => {
            let s = text(v);
            let i = e
                .symbols
                .iter()
                .position(|x| *x == s)
                .ok_or_else(|| format!("{s} is not a symbol of enum {}", e.name.name()))?;
            Avro::Enum(i as u32, s)
        }
        Schema::Uuid(_) => Avro::Uuid(text(v).parse().map_err(|_| format!("{v} is not a uuid"))?),
        Schema::Date => {
            let d = chrono::NaiveDate::parse_from_str(text(v).get(..10).unwrap_or(""), "%Y-%m-%d")
                .map_err(|_| format!("{v} is not a date"))?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("epoch")?;
            Avro::Date(i32::try_from((d - epoch).num_days()).map_err(|_| "date out of range")?)
        }
        Schema::TimeMillis | Schema::TimeMicros => {
            let t = chrono::NaiveTime::parse_from_str(&text(v), "%H:%M:%S%.f")
                .map_err(|_| format!("{v} is not a time"))?;
            let us = (t - chrono::NaiveTime::MIN)
                .num_microseconds()
                .ok_or("time out of range")?;
            match schema {
                Schema::TimeMillis => Avro::TimeMillis((us / 1000) as i32),
                _ => Avro::TimeMicros(us),
            }
        }
        Schema::TimestampMillis => Avro::TimestampMillis(micros_of(v, 1000)?.div_euclid(1000)),
        Schema::LocalTimestampMillis => {
            Avro::LocalTimestampMillis(micros_of(v, 1000)?.div_euclid(1000))
        }
        Schema::TimestampMicros => Avro::TimestampMicros(micros_of(v, 1)?),
        Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(micros_of(v, 1)?),
        Schema::TimestampNanos => Avro::TimestampNanos(micros_of(v, 1)?.saturating_mul(1000)),
        Schema::LocalTimestampNanos => {
            Avro::LocalTimestampNanos(micros_of(v, 1)?.saturating_mul(1000))
        }
        Schema::Decimal(d) => Avro::Decimal(Decimal::from(decimal_bytes(&text(v), d.scale)?)),
        Schema::BigDecimal => Avro::BigDecimal(
            text(v)
                .parse()
                .map_err(|_| format!("{v} is not a decimal"))?,
        ),
        Schema::Array(a) => match v {
            Json::Array(items) => Avro::Array(
                items
                    .iter()
                    .map(|x| from_json(x, &a.items, names))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(format!("{other} is not an array")),
        },
        Schema::Map(m) => match v {
            Json::Object(o) => Avro::Map(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), from_json(x, &m.types, names)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => return Err(format!("{other} is not an object")),
        },
        Schema::Record(r) => match v {
            Json::Object(o) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let x = o
                        .get(&f.name)
                        .or_else(|| {
                            o.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                                .map(|(_, x)| x)
                        })
                        .or(f.default.as_ref())
                        .unwrap_or(&Json::Null);
                    let datum = from_json(x, &f.schema, names)
                        .map_err(|e| format!("field {}: {e}", f.name))?;
                    fields.push((f.name.clone(), datum));
                }
                Avro::Record(fields)
            }
            other => return Err(format!("{other} is not an object")),
        },
        Schema::Duration(_) | Schema::Ref { .. } => {
            return Err(format!("cannot write {v} as {schema:?}"));
        }
    })
}

/// The SQL type a field of this Avro type reads as (`None`: jsonb, for
/// records, maps and unions of several types).
fn sql_type(s: &Schema, names: &Names<'_>) -> Option<String> {
    Some(
        match deref(s, names) {
            Schema::Boolean => "BOOLEAN",
            Schema::Int => "INTEGER",
            Schema::Long => "BIGINT",
            Schema::Float => "REAL",
            Schema::Double => "DOUBLE PRECISION",
            Schema::String | Schema::Enum(_) | Schema::Uuid(_) => "TEXT",
            Schema::Bytes | Schema::Fixed(_) => "BYTEA",
            Schema::Date => "DATE",
            Schema::TimeMillis | Schema::TimeMicros => "TIME",
            Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => "TIMESTAMP",
            Schema::Decimal(d) if d.precision <= 38 => {
                return Some(format!("NUMERIC({}, {})", d.precision, d.scale));
            }
            Schema::Decimal(_) | Schema::BigDecimal => "NUMERIC",
            Schema::Duration(_) => "INTERVAL",
            Schema::Union(u) => {
                let mut rest = u.variants().iter().filter(|v| !matches!(v, Schema::Null));
                return match (rest.next(), rest.next()) {
                    (Some(one), None) => sql_type(one, names),
                    _ => None,
                };
            }
            Schema::Array(a) => {
                let item = sql_type(&a.items, names)?;
                return Some(format!("{item}[]"));
            }
            Schema::Null | Schema::Map(_) | Schema::Record(_) | Schema::Ref { .. } => return None,
        }
        .to_string(),
    )
}

/// The columns (name, SQL type) a stream over records of this Avro
/// record schema has: one per field, names lower-cased (as unquoted SQL
/// names fold) unless two would then clash; nested records and maps as
/// jsonb.
pub fn columns(schema: &Schema) -> Result<Vec<(String, String)>, String> {
    let names = names(schema);
    let Schema::Record(r) = deref(schema, &names) else {
        return Err("the value schema is not an Avro record".into());
    };
    let lower: std::collections::HashSet<String> =
        r.fields.iter().map(|f| f.name.to_lowercase()).collect();
    let fold = lower.len() == r.fields.len();
    Ok(r.fields
        .iter()
        .map(|f| {
            let name = if fold {
                f.name.to_lowercase()
            } else {
                f.name.clone()
            };
            let t = sql_type(&f.schema, &names).unwrap_or_else(|| "JSONB".into());
            (name, t)
        })
        .collect())
}

/// An Avro schema (JSON) for rows of these fields, each nullable with
/// default null: what eddy registers for a stream or sink that names its
/// columns.
pub fn schema_of(record: &str, fields: &[Field]) -> Json {
    let fields: Vec<Json> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "name": avro_name(f.name(), i),
                "type": ["null", type_of(f.data_type(), &format!("{record}_{i}"))],
                "default": null,
            })
        })
        .collect();
    json!({"type": "record", "name": record, "fields": fields})
}

/// The Avro schema of a Debezium envelope of rows of `row` (a record
/// schema): `{"before": row or null, "after": row or null}`, as
/// Materialize's Avro sinks write.
pub fn debezium_of(record: &str, row: Json) -> Json {
    json!({
        "type": "record",
        "name": "envelope",
        "fields": [
            {"name": "before", "type": ["null", row], "default": null},
            {"name": "after", "type": ["null", record], "default": null},
        ],
    })
}

/// The Avro schema of a key column of this type (unwrapped, as ksqlDB
/// writes single-column keys).
pub fn key_schema_of(t: &DataType) -> Json {
    type_of(t, "key")
}

/// A record name Avro accepts for a relation's rows.
pub fn record_name(relation: &str) -> String {
    avro_name(relation, 0)
}

/// A field name Avro accepts (`[A-Za-z_][A-Za-z0-9_]*`).
fn avro_name(name: &str, i: usize) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out = format!("_{out}");
    }
    if out.is_empty() {
        out = format!("f{i}");
    }
    out
}

fn type_of(t: &DataType, name: &str) -> Json {
    match t {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            json!("int")
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => json!("long"),
        DataType::Float16 | DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            json!("bytes")
        }
        DataType::Date32 | DataType::Date64 => json!({"type": "int", "logicalType": "date"}),
        DataType::Time32(_) | DataType::Time64(_) => {
            json!({"type": "long", "logicalType": "time-micros"})
        }
        DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, _) => {
            json!({"type": "long", "logicalType": "timestamp-millis"})
        }
        DataType::Timestamp(..) => json!({"type": "long", "logicalType": "timestamp-micros"}),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": (*s).max(0)})
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => json!({
            "type": "array",
            "items": ["null", type_of(f.data_type(), &format!("{name}_item"))],
        }),
        DataType::Struct(fields) => {
            let fields: Vec<Field> = fields.iter().map(|f| f.as_ref().clone()).collect();
            schema_of(name, &fields)
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => json!({
                "type": "map",
                "values": ["null", type_of(kv[1].data_type(), &format!("{name}_value"))],
            }),
            _ => json!("string"),
        },
        _ => json!("string"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn registry() -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log::Log::open(
            dir.path(),
            crate::log::LogOptions {
                cleaner_interval: None,
            },
        )
        .unwrap();
        let log: Arc<dyn crate::log::LogStore> = log;
        (dir, Arc::new(Registry::open(log).unwrap()))
    }

    const RIDE: &str = r#"{"type":"record","name":"ride","namespace":"t","fields":[
        {"name":"id","type":"int"},
        {"name":"fare","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    #[test]
    fn values_decode_through_the_registry_and_bad_ones_are_isolated() {
        let (_dir, registry) = registry();
        let id = registry
            .register(
                "rides-value",
                &crate::registry::NewSchema {
                    text: RIDE.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let schema = registry.avro(id).unwrap();
        let cols = columns(&schema).unwrap();
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, t)| {
                let t = crate::engine::statement::parse_type(t).unwrap();
                crate::types::field(n, &t).unwrap()
            })
            .collect();
        let arrow = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        let codec = AvroCodec::new(Arc::clone(&registry), id, true);
        let rows = vec![
            json!({"id": 1, "fare": "12.50", "at": "2024-01-01T00:00:00", "note": "a"}),
            json!({"id": 2, "fare": "-0.05", "at": "2024-01-01T00:00:01.5", "note": null}),
        ];
        let mut values = codec.encode_json(&rows).unwrap();
        values.insert(1, b"junk".to_vec());
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let (batch, good, failures) = codec.decode(&arrow, &refs);
        assert_eq!(good, vec![0, 2], "{failures:?}");
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].index, 1);
        let text: Vec<String> = (0..batch.num_columns())
            .map(|c| {
                datafusion::arrow::util::display::array_value_to_string(batch.column(c), 1).unwrap()
            })
            .collect();
        assert_eq!(text, ["2", "-0.05", "2024-01-01T00:00:01.500", ""]);
    }

    #[test]
    fn truncated_and_hostile_values_are_decode_errors() {
        let (_dir, registry) = registry();
        let text = r#"{"type":"record","name":"r","fields":[{"name":"id","type":"int"},{"name":"s","type":"string"},{"name":"xs","type":{"type":"array","items":"long"}}]}"#;
        let id = registry
            .register(
                "r-value",
                &crate::registry::NewSchema {
                    text: text.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let arrow = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let codec = AvroCodec::new(Arc::clone(&registry), id, true);
        let good = codec
            .encode_json(&[json!({"id": 5, "s": "hello", "xs": [1, 2, 3]})])
            .unwrap()
            .pop()
            .unwrap();
        // Zig-zag varint of n.
        let varint = |n: i64| {
            let mut z = ((n << 1) ^ (n >> 63)) as u64;
            let mut out = vec![];
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    return out;
                }
                out.push(b | 0x80);
            }
        };
        let framed = |body: Vec<u8>| {
            let mut v = vec![0u8];
            v.extend_from_slice(&id.to_be_bytes());
            v.extend(body);
            v
        };
        let values: Vec<Vec<u8>> = vec![
            good.clone(),
            // Cut short.
            good[..good.len() - 3].to_vec(),
            // A string claiming 2^40 bytes.
            framed([varint(5), varint(1 << 40)].concat()),
            // A string claiming a negative length.
            framed([varint(5), varint(-7)].concat()),
            // An array claiming 2^40 items.
            framed([varint(5), varint(1), b"a".to_vec(), varint(1 << 40)].concat()),
            // Bytes past the datum.
            [good.clone(), vec![1, 2]].concat(),
            // The wrong magic byte; a schema id the registry lacks.
            [vec![1u8], good[1..].to_vec()].concat(),
            [vec![0u8, 0, 0, 0, 99], good[5..].to_vec()].concat(),
            vec![0u8, 0],
            good,
        ];
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let (batch, good, failures) = codec.decode(&arrow, &refs);
        assert_eq!(good, vec![0, 9], "{failures:?}");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            failures.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn decimals_round_trip_as_text() {
        for (text, scale) in [
            ("123.45", 2),
            ("-0.01", 2),
            ("0", 0),
            ("-128", 0),
            ("99999.9", 3),
        ] {
            let b = decimal_bytes(text, scale).unwrap();
            let back = decimal_text(&b, scale).unwrap();
            let want: f64 = text.parse().unwrap();
            assert_eq!(back.parse::<f64>().unwrap(), want, "{text} → {back}");
        }
        assert_eq!(decimal_text(&[0x30, 0x39], 2).unwrap(), "123.45");
        assert_eq!(decimal_text(&[0xff], 1).unwrap(), "-0.1");
        assert!(decimal_bytes("1.234", 2).is_err());
    }

    #[test]
    fn columns_come_from_a_record_schema() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"ride","fields":[
                {"name":"VendorID","type":"int"},
                {"name":"fare","type":["null",{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}]},
                {"name":"pickup","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"extra","type":{"type":"map","values":"long"}}]}"#,
        )
        .unwrap();
        let cols = columns(&s).unwrap();
        assert_eq!(
            cols,
            vec![
                ("vendorid".to_string(), "INTEGER".to_string()),
                ("fare".into(), "NUMERIC(10, 2)".into()),
                ("pickup".into(), "TIMESTAMP".into()),
                ("tags".into(), "TEXT[]".into()),
                ("extra".into(), "JSONB".into()),
            ]
        );
    }
}
