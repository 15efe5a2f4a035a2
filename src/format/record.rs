//! Whole records ⇄ rows: the value decoded by the relation's format, plus
//! the record's metadata as the pseudo-columns a stream may declare:
//!
//! | column       | holds                          | declared as               |
//! |--------------|--------------------------------|---------------------------|
//! | `_key`       | the record key                 | text or bytea             |
//! | `_partition` | the partition                  | int or bigint             |
//! | `_offset`    | the offset in its partition    | bigint (or int)           |
//! | `_timestamp` | the record timestamp           | timestamp[tz] or bigint ms|
//!
//! (Materialize's `INCLUDE KEY, PARTITION, OFFSET, TIMESTAMP`; ksqlDB's
//! `ROWKEY`, `ROWPARTITION`, `ROWOFFSET`, `ROWTIME`.) Written rows go the
//! other way: `_key` becomes the record key (so it picks the partition as a
//! Kafka producer's key would), `_timestamp` the record timestamp and
//! `_partition`, when not NULL, the partition; `_offset` is assigned by the
//! log and ignored on write. A relation without them is its values alone.
//!
//! (About 820 lines, 140 of them tests: one mapping, each way.)

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::error::ArrowError;

use super::key::KeyCodec;
use super::{DecodeFailure, Format, csv, json};

/// A record's metadata pseudo-column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Key,
    Partition,
    Offset,
    Timestamp,
}

/// Field metadata marking a column read from the record key whatever its
/// name (a `KEY` column).
const META: &str = "eddy.record";

/// `field` as a column held in the record key (ksqlDB's `id INT KEY`).
pub fn key_field(field: Field) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(META.into(), "key".into());
    field.with_metadata(metadata)
}

/// Field metadata: the record-time column `rowtime` reads its value from
/// the named value column (ksqlDB's `TIMESTAMP = 'col'`).
pub const TIME_FROM: &str = "eddy.time_from";

/// `field` (a record-time column) read from value column `from`.
pub fn time_from_field(field: Field, from: &str) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(TIME_FROM.into(), from.into());
    field.with_metadata(metadata)
}

impl Meta {
    /// Whether `f` is a record-key column (a `KEY` column or `_key`).
    pub fn of_name_or_key(f: &Field) -> bool {
        Meta::of_field(f) == Some(Meta::Key)
    }

    fn of_field(f: &Field) -> Option<Meta> {
        match f.metadata().get(META).map(String::as_str) {
            Some("key") => Some(Meta::Key),
            _ => Meta::of(f.name()),
        }
    }

    fn of(name: &str) -> Option<Meta> {
        match name {
            "_key" => Some(Meta::Key),
            "_partition" | "rowpartition" => Some(Meta::Partition),
            "_offset" | "rowoffset" => Some(Meta::Offset),
            "_timestamp" | "rowtime" => Some(Meta::Timestamp),
            _ => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Meta::Key => "key",
            Meta::Partition => "partition",
            Meta::Offset => "offset",
            Meta::Timestamp => "timestamp",
        }
    }

    /// The Arrow type the metadata is read as, before the cast to the
    /// declared type.
    fn native(self, declared: &DataType) -> DataType {
        match self {
            Meta::Key if matches!(declared, DataType::Binary | DataType::LargeBinary) => {
                DataType::Binary
            }
            Meta::Key => DataType::Utf8,
            Meta::Partition => DataType::Int32,
            Meta::Offset => DataType::Int64,
            Meta::Timestamp if declared.is_integer() => DataType::Int64,
            Meta::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

/// One record, borrowed from a read.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
}

/// A row to write: the parts of a record the row determines.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOut {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub partition: Option<i32>,
}

/// Every one of `n` values failed with `e`.
fn fail_all(
    schema: &SchemaRef,
    n: usize,
    e: &ArrowError,
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    let failures = (0..n)
        .map(|index| DecodeFailure {
            index,
            reason: e.to_string(),
        })
        .collect();
    (RecordBatch::new_empty(Arc::clone(schema)), vec![], failures)
}

/// How a relation's columns map onto its records.
#[derive(Debug, Clone)]
pub struct Layout {
    schema: SchemaRef,
    /// The columns held in the value, in order.
    values: SchemaRef,
    /// How the value holds them.
    format: Format,
    /// Metadata columns: (position in `schema`, what).
    meta: Vec<(usize, Meta)>,
    /// A keyed (upsert) table's primary-key columns: a record's key is
    /// their value (see [`Layout::keys`]).
    key: Vec<usize>,
    /// The record-time column's value comes from this column of the
    /// values (ksqlDB's `TIMESTAMP = 'col'`).
    time_from: Option<usize>,
    /// An Avro stream's codec (the registry and its writer schema).
    avro: Option<super::avro::AvroCodec>,
    /// How the key column is held in the record key (`KEY_FORMAT`;
    /// `key.rs`).
    key_codec: KeyCodec,
    /// A JSON_SR stream's codec.
    json_sr: Option<super::json_sr::JsonSrCodec>,
}

impl Layout {
    /// Every column is in the value (tables' changelogs).
    pub fn values_only(schema: SchemaRef) -> Layout {
        Layout {
            values: Arc::clone(&schema),
            schema,
            format: Format::Json,
            meta: vec![],
            key: vec![],
            time_from: None,
            avro: None,
            key_codec: KeyCodec::Text,
            json_sr: None,
        }
    }

    /// A table with a primary key (the columns at `key`): JSON values, and
    /// each record keyed by its primary key, so the table's topic is an
    /// upsert changelog a Kafka producer can write too (a null value
    /// deletes the key).
    pub fn keyed(schema: SchemaRef, key: Vec<usize>) -> Layout {
        Layout {
            key,
            ..Layout::values_only(schema)
        }
    }

    /// Whether records are upserts by key.
    /// The primary-key column names (empty unless keyed).
    pub fn key_names(&self) -> Vec<&str> {
        self.key
            .iter()
            .map(|&k| self.schema.field(k).name().as_str())
            .collect()
    }

    pub fn is_keyed(&self) -> bool {
        !self.key.is_empty()
    }

    /// The primary-key columns' positions (empty unless keyed).
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// The record key of each row of `batch` (the relation's schema): a
    /// one-column key as its text (`42`, `user-1`), a composite one as a
    /// JSON object of its columns. A NULL key column is an error.
    pub fn keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
        for &k in &self.key {
            if batch.column(k).null_count() > 0 {
                // Typed with its SQLSTATE, through Arrow and DataFusion.
                return Err(ArrowError::ExternalError(Box::new(
                    crate::sqlstate::Coded {
                        code: "23502",
                        message: format!(
                            "null value in column \"{}\" violates not-null constraint (it is part of the primary key)",
                            self.schema.field(k).name()
                        ),
                    },
                )));
            }
        }
        Ok(self.row_keys(batch)?.into_iter().flatten().collect())
    }

    /// [`Layout::keys`], with `None` for a row with a NULL key column (it
    /// has no key) instead of an error.
    pub fn row_keys(&self, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>, ArrowError> {
        let null = |r: usize| self.key.iter().any(|&k| batch.column(k).is_null(r));
        if let [k] = self.key.as_slice() {
            let text = cast(batch.column(*k), &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            return (0..text.len())
                .map(|r| match text.is_null(r) {
                    true => Ok(None),
                    false => self.key_codec.encode(text.value(r)).map(Some),
                })
                .collect();
        }
        let projected = batch.project(&self.key)?;
        Ok(json::encode(&projected)?
            .into_iter()
            .enumerate()
            .map(|(r, k)| (!null(r)).then_some(k))
            .collect())
    }

    /// A stream: columns named `_key`, `_partition`, `_offset`,
    /// `_timestamp` come from the record; the rest from its value, in
    /// `format` (`text` and `bytes` hold exactly one column, of type text
    /// or bytea).
    pub fn stream(schema: SchemaRef, format: Format) -> Result<Layout, String> {
        let mut meta = Vec::new();
        let mut values = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            match Meta::of_field(f) {
                Some(m) => {
                    let native = m.native(f.data_type());
                    if !can_cast_types(&native, f.data_type())
                        || (m == Meta::Timestamp
                            && !matches!(f.data_type(), DataType::Timestamp(..))
                            && !f.data_type().is_integer())
                    {
                        return Err(format!(
                            "column {} holds the record's {}; it cannot have type {}",
                            f.name(),
                            m.noun(),
                            crate::types::pg_name(f.data_type())
                        ));
                    }
                    meta.push((i, m));
                }
                None => values.push(f.as_ref().clone()),
            }
        }
        let one = |want: &[DataType], what: &str| match values.as_slice() {
            [f] if want.contains(f.data_type()) => Ok(()),
            _ => Err(format!(
                "format {what} holds one column of type {} besides the pseudo-columns",
                crate::types::pg_name(&want[0])
            )),
        };
        match format {
            Format::Text => one(&[DataType::Utf8, DataType::LargeUtf8], "text")?,
            Format::Bytes => one(&[DataType::Binary, DataType::LargeBinary], "bytes")?,
            Format::Json | Format::Csv | Format::Avro | Format::JsonSr => {}
        }
        let time_from = match schema
            .fields()
            .iter()
            .find_map(|f| f.metadata().get(TIME_FROM))
        {
            None => None,
            Some(from) => Some(
                values
                    .iter()
                    .position(|v| v.name() == from)
                    .ok_or_else(|| format!("TIMESTAMP column {from} is not a value column"))?,
            ),
        };
        Ok(Layout {
            values: Arc::new(Schema::new(values)),
            schema,
            format,
            meta,
            key: vec![],
            time_from,
            avro: None,
            key_codec: KeyCodec::Text,
            json_sr: None,
        })
    }

    /// This JSON_SR stream's codec.
    pub fn with_json_sr(mut self, codec: super::json_sr::JsonSrCodec) -> Layout {
        self.json_sr = Some(codec);
        self
    }

    /// How the key column is held in the record key.
    pub fn key_codec(&self) -> &KeyCodec {
        &self.key_codec
    }

    /// Record keys held by this codec (`KEY_FORMAT`).
    pub fn with_key_codec(mut self, codec: KeyCodec) -> Layout {
        self.key_codec = codec;
        self
    }

    /// This Avro stream's codec (its values are undecodable without one).
    pub fn with_avro(mut self, codec: super::avro::AvroCodec) -> Layout {
        self.avro = Some(codec);
        self
    }

    /// The value columns (those held in the record's value).
    pub fn value_fields(&self) -> &SchemaRef {
        &self.values
    }

    /// Decode record values in this layout's format.
    fn decode_values(&self, values: &[&[u8]]) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
        match self.format {
            Format::Json => json::decode(&self.values, values),
            Format::Csv => csv::decode(&self.values, values),
            Format::JsonSr => match &self.json_sr {
                Some(codec) => codec.decode(&self.values, values),
                None => fail_all(
                    &self.values,
                    values.len(),
                    &ArrowError::InvalidArgumentError("a JSON_SR stream without its schema".into()),
                ),
            },
            Format::Avro => match &self.avro {
                Some(codec) => codec.decode(&self.values, values),
                None => fail_all(
                    &self.values,
                    values.len(),
                    &ArrowError::InvalidArgumentError("an Avro stream without its schema".into()),
                ),
            },
            Format::Text => {
                let mut good = Vec::new();
                let mut failures = Vec::new();
                let mut texts = Vec::new();
                // A jsonb value column holds each value's canonical text
                // (Materialize's FORMAT JSON); a value that is not JSON
                // does not decode.
                let is_jsonb = crate::types::jsonb::is_jsonb(self.values.field(0));
                for (i, v) in values.iter().enumerate() {
                    let text = std::str::from_utf8(v)
                        .map_err(|e| format!("value is not UTF-8 text: {e}"))
                        .and_then(|t| {
                            if is_jsonb {
                                crate::types::jsonb::canonical(t).map(Cow::Owned)
                            } else {
                                Ok(Cow::Borrowed(t))
                            }
                        });
                    match text {
                        Ok(t) => {
                            good.push(i);
                            texts.push(t);
                        }
                        Err(reason) => failures.push(DecodeFailure { index: i, reason }),
                    }
                }
                let column: ArrayRef = Arc::new(StringArray::from_iter_values(
                    texts.iter().map(|t| t.as_ref()),
                ));
                let column = cast(&column, self.values.field(0).data_type());
                match column.and_then(|c| RecordBatch::try_new(Arc::clone(&self.values), vec![c])) {
                    Ok(b) => (b, good, failures),
                    Err(e) => fail_all(&self.values, values.len(), &e),
                }
            }
            Format::Bytes => {
                let column: ArrayRef =
                    Arc::new(BinaryArray::from_iter_values(values.iter().copied()));
                let column = cast(&column, self.values.field(0).data_type());
                match column.and_then(|c| RecordBatch::try_new(Arc::clone(&self.values), vec![c])) {
                    Ok(b) => (b, (0..values.len()).collect(), vec![]),
                    Err(e) => fail_all(&self.values, values.len(), &e),
                }
            }
        }
    }

    /// Encode the value columns of `values` in this layout's format; a
    /// NULL text or bytes value is a record without a value.
    fn encode_values(&self, values: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>, ArrowError> {
        match self.format {
            Format::Json => Ok(json::encode(values)?.into_iter().map(Some).collect()),
            Format::Csv => Ok(csv::encode(values)?.into_iter().map(Some).collect()),
            Format::JsonSr => match &self.json_sr {
                Some(codec) => Ok(codec.encode(values)?.into_iter().map(Some).collect()),
                None => Err(ArrowError::InvalidArgumentError(
                    "a JSON_SR stream without its schema".into(),
                )),
            },
            Format::Avro => match &self.avro {
                Some(codec) => Ok(codec.encode(values)?.into_iter().map(Some).collect()),
                None => Err(ArrowError::InvalidArgumentError(
                    "an Avro stream without its schema".into(),
                )),
            },
            Format::Text if crate::types::jsonb::is_jsonb(self.values.field(0)) => {
                let t = cast(values.column(0), &DataType::Utf8)?;
                let t = t.as_string::<i32>();
                (0..t.len())
                    .map(|i| {
                        t.is_valid(i)
                            .then(|| crate::types::jsonb::canonical(t.value(i)))
                            .transpose()
                            .map(|v| v.map(String::into_bytes))
                            .map_err(json::invalid_json)
                    })
                    .collect()
            }
            Format::Text | Format::Bytes => {
                let b = cast(values.column(0), &DataType::Binary)?;
                let b = b.as_binary::<i32>();
                Ok((0..b.len())
                    .map(|i| b.is_valid(i).then(|| b.value(i).to_vec()))
                    .collect())
            }
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decode records into a batch of the relation's schema: the batch of
    /// the good records, which inputs made it (indices), and the failures.
    pub fn decode(
        &self,
        records: &[RecordRef<'_>],
    ) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
        // A key that does not decode (Avro, JSON, a KAFKA INT of 3
        // bytes) fails its record, as a value that does not decode does
        // (counted, skipped), rather than reading as a NULL key.
        // Each key is decoded once: its text goes on to the key column.
        if !self.key_codec.is_text() && self.meta.iter().any(|(_, m)| *m == Meta::Key) {
            let mut bad = Vec::new();
            let mut keep = Vec::with_capacity(records.len());
            let mut texts = Vec::with_capacity(records.len());
            for (index, r) in records.iter().enumerate() {
                match r.key.map(|k| self.key_codec.text(k)) {
                    Some(Err(reason)) => bad.push(DecodeFailure { index, reason }),
                    Some(Ok(text)) => {
                        keep.push(index);
                        texts.push(text);
                    }
                    None => {
                        keep.push(index);
                        texts.push(None);
                    }
                }
            }
            if bad.is_empty() {
                return self.decode_keyed(records, Some(&texts));
            }
            let kept: Vec<RecordRef<'_>> = keep.iter().map(|&i| records[i]).collect();
            let (batch, good, failures) = self.decode_keyed(&kept, Some(&texts));
            let good = good.into_iter().map(|g| keep[g]).collect();
            let mut failures: Vec<DecodeFailure> = failures
                .into_iter()
                .map(|f| DecodeFailure {
                    index: keep[f.index],
                    reason: f.reason,
                })
                .chain(bad)
                .collect();
            failures.sort_by_key(|f| f.index);
            return (batch, good, failures);
        }
        self.decode_keyed(records, None)
    }

    /// `decode`, keys taken as they decode; `keys`: the records' keys
    /// already decoded as text (a key format's), by record.
    fn decode_keyed(
        &self,
        records: &[RecordRef<'_>],
        keys: Option<&[Option<String>]>,
    ) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
        let values: Vec<&[u8]> = records.iter().map(|r| r.value).collect();
        let (batch, good, failures) = self.decode_values(&values);
        if let [k] = self.key.as_slice()
            && batch.column(*k).null_count() > 0
        {
            // ksqlDB's tables keep the key in the record key only: a value
            // without the key column takes it from there.
            return match self.key_from_records(&batch, *k, records, &good, keys) {
                Ok(b) => (b, good, failures),
                Err(e) => fail_all(&self.schema, records.len(), &e),
            };
        }
        if self.meta.is_empty() {
            return (batch, good, failures);
        }
        match self.with_meta(&batch, records, &good, keys) {
            Ok(b) => (b, good, failures),
            Err(e) => {
                // Not expected (types are checked at CREATE): fail them all.
                let failures = (0..records.len())
                    .map(|index| DecodeFailure {
                        index,
                        reason: e.to_string(),
                    })
                    .collect();
                (
                    RecordBatch::new_empty(Arc::clone(&self.schema)),
                    vec![],
                    failures,
                )
            }
        }
    }

    /// `batch` with the NULLs of its key column `k` filled from the keys
    /// of the records that made its rows, where the value has no such
    /// field.
    fn key_from_records(
        &self,
        batch: &RecordBatch,
        k: usize,
        records: &[RecordRef<'_>],
        good: &[usize],
        keys: Option<&[Option<String>]>,
    ) -> Result<RecordBatch, ArrowError> {
        // Only a value without the key column takes the record key: an
        // explicit `"id": null` is a NULL key, refused as before.
        let name = batch.schema().field(k).name().clone();
        let lacks_key = |value: &[u8]| match serde_json::from_slice::<serde_json::Value>(value) {
            Ok(serde_json::Value::Object(m)) => !m.keys().any(|f| f.eq_ignore_ascii_case(&name)),
            _ => false,
        };
        let column = batch.column(k);
        let keys: StringArray = good
            .iter()
            .enumerate()
            .map(|(row, &g)| {
                let r = &records[g];
                if !(column.is_null(row) && lacks_key(r.value)) {
                    return None;
                }
                // A key format's key as its text (decoded in `decode`).
                match keys {
                    Some(keys) => keys[g].clone(),
                    None => r.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                }
            })
            .collect();
        let keys = cast(&keys, batch.schema().field(k).data_type())?;
        let filled = datafusion::arrow::compute::kernels::zip::zip(
            &datafusion::arrow::compute::is_not_null(batch.column(k))?,
            batch.column(k),
            &keys,
        )?;
        let mut columns = batch.columns().to_vec();
        columns[k] = filled;
        RecordBatch::try_new(batch.schema(), columns)
    }

    fn with_meta(
        &self,
        values: &RecordBatch,
        records: &[RecordRef<'_>],
        good: &[usize],
        keys: Option<&[Option<String>]>,
    ) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let mut value_columns = values.columns().iter();
        for (i, f) in self.schema.fields().iter().enumerate() {
            let Some((_, m)) = self.meta.iter().find(|(at, _)| *at == i) else {
                let c = value_columns.next().ok_or_else(|| {
                    ArrowError::SchemaError("fewer value columns than the layout".into())
                })?;
                columns.push(Arc::clone(c));
                continue;
            };
            let rows = good.iter().map(|&g| &records[g]);
            let native: ArrayRef = match (m, m.native(f.data_type())) {
                // A key in a format as its column's text (a key that does
                // not decode failed its record in `decode`).
                (Meta::Key, DataType::Utf8) if !self.key_codec.is_text() => match keys {
                    Some(keys) => Arc::new(
                        good.iter()
                            .map(|&g| keys[g].as_deref())
                            .collect::<StringArray>(),
                    ),
                    None => Arc::new(
                        rows.map(|r| r.key.and_then(|k| self.key_codec.text(k).ok().flatten()))
                            .collect::<StringArray>(),
                    ),
                },
                (Meta::Key, DataType::Binary) => {
                    Arc::new(rows.map(|r| r.key).collect::<BinaryArray>())
                }
                (Meta::Key, _) => Arc::new(
                    rows.map(|r| r.key.map(|k| String::from_utf8_lossy(k).into_owned()))
                        .collect::<StringArray>(),
                ),
                (Meta::Partition, _) => Arc::new(rows.map(|r| r.partition).collect::<Int32Array>()),
                (Meta::Offset, _) => Arc::new(rows.map(|r| r.offset).collect::<Int64Array>()),
                (Meta::Timestamp, native) if self.time_from.is_some() => {
                    // Epoch milliseconds, a timestamp, or its text.
                    let from = values.column(self.time_from.unwrap_or_default());
                    let ms = match from.data_type() {
                        t if t.is_integer() => cast(
                            &cast(from, &DataType::Int64)?,
                            &DataType::Timestamp(TimeUnit::Millisecond, None),
                        )?,
                        _ => cast(from, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
                    };
                    match native {
                        DataType::Int64 => cast(&ms, &DataType::Int64)?,
                        _ => ms,
                    }
                }
                (Meta::Timestamp, DataType::Int64) => {
                    Arc::new(rows.map(|r| r.timestamp).collect::<Int64Array>())
                }
                (Meta::Timestamp, _) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.map(|r| r.timestamp),
                )),
            };
            columns.push(cast(&native, f.data_type())?);
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
    }

    /// Encode the rows of `batch` (the relation's schema) as records.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<RecordOut>, ArrowError> {
        let value_columns: Vec<ArrayRef> = (0..batch.num_columns())
            .filter(|i| !self.meta.iter().any(|(at, _)| at == i))
            .map(|i| Arc::clone(batch.column(i)))
            .collect();
        let values = RecordBatch::try_new(Arc::clone(&self.values), value_columns)?;
        let encoded = self.encode_values(&values)?;
        let mut out: Vec<RecordOut> = encoded
            .into_iter()
            .map(|value| RecordOut {
                key: None,
                value,
                timestamp: None,
                partition: None,
            })
            .collect();
        if self.is_keyed() {
            for (o, k) in out.iter_mut().zip(self.keys(batch)?) {
                o.key = Some(k);
            }
        }
        for (at, m) in &self.meta {
            let col = batch.column(*at);
            match m {
                Meta::Key if !self.key_codec.is_text() => {
                    let text = cast(col, &DataType::Utf8)?;
                    let text = text.as_string::<i32>();
                    for (r, o) in out.iter_mut().enumerate() {
                        o.key = match text.is_valid(r) {
                            true => Some(self.key_codec.encode(text.value(r))?),
                            false => None,
                        };
                    }
                }
                Meta::Key => {
                    let keys = match col.data_type() {
                        DataType::Binary => Arc::clone(col),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::LargeBinary => {
                            cast(col, &DataType::Binary)?
                        }
                        // An int KEY column: its text, as a kcat user types it.
                        _ => cast(&cast(col, &DataType::Utf8)?, &DataType::Binary)?,
                    };
                    let keys = keys.as_binary::<i32>();
                    for (r, o) in out.iter_mut().enumerate() {
                        o.key = keys.is_valid(r).then(|| keys.value(r).to_vec());
                    }
                }
                Meta::Partition => {
                    let p = cast(col, &DataType::Int32)?;
                    let p = p.as_primitive::<Int32Type>();
                    for (r, o) in out.iter_mut().enumerate() {
                        o.partition = p.is_valid(r).then(|| p.value(r));
                    }
                }
                Meta::Timestamp => {
                    let ms = match col.data_type() {
                        DataType::Timestamp(..) => {
                            let t = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                            cast(&t, &DataType::Int64)?
                        }
                        _ => cast(col, &DataType::Int64)?,
                    };
                    let ms = ms.as_primitive::<Int64Type>();
                    for (r, o) in out.iter_mut().enumerate() {
                        o.timestamp = ms.is_valid(r).then(|| ms.value(r));
                    }
                }
                Meta::Offset => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn a_keyed_value_without_its_key_takes_the_record_key() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let layout = Layout::keyed(schema, vec![0]);
        let record = |key: &'static [u8], value: &'static [u8]| RecordRef {
            key: Some(key),
            value,
            partition: 0,
            offset: 0,
            timestamp: 0,
        };
        let (batch, good, _) = layout.decode(&[
            record(b"7", br#"{"name":"a"}"#),
            record(b"8", br#"{"id":null,"name":"b"}"#),
            record(b"9", br#"{"ID":3,"name":"c"}"#),
        ]);
        assert_eq!(good, vec![0, 1, 2]);
        let ids = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!(
            ids.value(0),
            7,
            "ksqlDB's layout: the key only in the record key"
        );
        assert!(ids.is_null(1), "an explicit null stays a NULL key");
        assert_eq!(ids.value(2), 3, "the value's own key wins");
    }

    #[test]
    fn metadata_columns_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("_key", DataType::Utf8, true),
            Field::new("v", DataType::Int32, true),
            Field::new("_offset", DataType::Int64, true),
            Field::new(
                "_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new("_partition", DataType::Int32, true),
        ]));
        let layout = Layout::stream(Arc::clone(&schema), Format::Json).expect("valid");
        let records = [
            RecordRef {
                key: Some(b"k1"),
                value: br#"{"v": 1, "_key": "ignored"}"#,
                partition: 2,
                offset: 7,
                timestamp: 1_700_000_000_123,
            },
            RecordRef {
                key: None,
                value: b"not json",
                partition: 2,
                offset: 8,
                timestamp: 0,
            },
            RecordRef {
                key: None,
                value: br#"{"v": 3}"#,
                partition: 0,
                offset: 9,
                timestamp: 5,
            },
        ];
        let (batch, good, failures) = layout.decode(&records);
        assert_eq!(good, vec![0, 2]);
        assert_eq!(failures.len(), 1);
        assert_eq!(batch.schema(), schema);
        let keys = batch.column(0).as_string::<i32>();
        assert_eq!(keys.value(0), "k1");
        assert!(keys.is_null(1));
        let offsets = batch.column(2).as_primitive::<Int64Type>();
        assert_eq!((offsets.value(0), offsets.value(1)), (7, 9));
        let out = layout.encode(&batch).expect("encodes");
        assert_eq!(
            out[0],
            RecordOut {
                key: Some(b"k1".to_vec()),
                value: Some(br#"{"v":1}"#.to_vec()),
                timestamp: Some(1_700_000_000_123),
                partition: Some(2),
            }
        );
        assert_eq!(out[1].key, None);
        let bad = Arc::new(Schema::new(vec![Field::new(
            "_offset",
            DataType::Utf8,
            true,
        )]));
        assert!(
            Layout::stream(bad, Format::Json).is_ok(),
            "text offsets are castable"
        );
        let bad = Arc::new(Schema::new(vec![Field::new(
            "_timestamp",
            DataType::Utf8,
            true,
        )]));
        assert!(Layout::stream(bad, Format::Json).is_err());
    }

    #[test]
    fn text_and_bytes_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("_key", DataType::Utf8, true),
            Field::new("line", DataType::Utf8, true),
        ]));
        let layout = Layout::stream(Arc::clone(&schema), Format::Text).expect("valid");
        let rec = |value: &'static [u8]| RecordRef {
            key: None,
            value,
            partition: 0,
            offset: 0,
            timestamp: 0,
        };
        let (b, good, failures) = layout.decode(&[rec(b"hello"), rec(b"\xff\xfe"), rec(b"")]);
        assert_eq!((good, failures.len()), (vec![0, 2], 1));
        assert_eq!(b.column(1).as_string::<i32>().value(0), "hello");
        let out = layout.encode(&b).expect("encodes");
        assert_eq!(out[0].value.as_deref(), Some(&b"hello"[..]));
        let two = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        assert!(Layout::stream(two, Format::Text).is_err());
        let bytes = Arc::new(Schema::new(vec![Field::new("raw", DataType::Binary, true)]));
        let layout = Layout::stream(bytes, Format::Bytes).expect("valid");
        let (b, good, _) = layout.decode(&[rec(b"\x00\x01")]);
        assert_eq!(good, vec![0]);
        assert_eq!(b.column(0).as_binary::<i32>().value(0), b"\x00\x01");
    }
}
