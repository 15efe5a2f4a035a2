//! Sinks: `CREATE SINK s FROM v INTO TOPIC 't'` writes every change of a
//! table or materialized view into a topic, for Kafka consumers, as JSON
//! records in the Debezium envelope Materialize's Kafka sinks use:
//! `{"before": null, "after": {row}}` inserts a row, `{"before": {row},
//! "after": null}` retracts one. A ksqlDB persistent query's sink writes
//! as ksqlDB does instead (`catalog::Envelope`): a stream's rows appended
//! (key columns in the record key, the rest the JSON value), a table's as
//! an upsert changelog (a tombstone for a key whose row went away).
//! With `FORMAT AVRO` the same records are written in Avro (Confluent's
//! wire format, the schemas `Engine::sink_schema` registered): values,
//! and a keyed sink's keys when made by CREATE SINK; a Debezium envelope
//! is the Avro record `{before, after}`.
//!
//! The topic is its own progress record: when a sink starts (created, or
//! the server restarting) it reads back what the topic already holds,
//! takes the relation's contents and the changes that follow (as
//! SUBSCRIBE does), writes the difference between the two, then each
//! change as it happens, fsynced. So the rows the topic adds up to equal
//! the relation after a restart, a crash or a checkpoint restore: nothing
//! written twice, nothing missed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::catalog;
use crate::dataflow::rows::{Codec, RowBytes};
use crate::dataflow::runtime::{Dataflows, Subscription};
use crate::dataflow::{DataflowError, with_schema};
use crate::format::avro::AvroCodec;
use crate::format::key::KeyCodec;
use crate::format::record::Layout;
use crate::log::batch::{NewRecord, encode};
use crate::log::{Durability, LogStore};

/// An Avro sink's codecs: its values', and its keys' when keys are Avro
/// too (Materialize's `FORMAT AVRO` sinks; ksqlDB's keys stay text).
pub struct Avro {
    pub value: AvroCodec,
    pub key: Option<AvroCodec>,
}

/// Records per append.
const BATCH: usize = 1000;

/// A sink's envelope, resolved against its relation's columns.
pub enum Envelope {
    Debezium,
    Keyed {
        upsert: bool,
        /// The relation keyed by the key columns (their record keys).
        keys: Box<Layout>,
        /// Positions of the key columns, and of the columns in the value.
        key: Vec<usize>,
        value: Vec<usize>,
        /// A `rowtime` column (ksqlDB's ROWTIME): the record's timestamp,
        /// not in the value.
        time: Option<usize>,
    },
}

impl Envelope {
    /// `key_format`: how a one-column key is held (`KEY_FORMAT`; else
    /// its text).
    pub fn new(
        e: catalog::Envelope,
        schema: &SchemaRef,
        key_format: Option<crate::format::key::KeyFormat>,
    ) -> Result<Envelope, DataflowError> {
        let (upsert, names) = match e {
            catalog::Envelope::Debezium => return Ok(Envelope::Debezium),
            catalog::Envelope::Append { key } => (false, key),
            catalog::Envelope::Upsert { key } => (true, key),
        };
        let key = names
            .iter()
            .map(|n| {
                schema.index_of(n).map_err(|_| {
                    DataflowError::Other(format!(
                        "the sink's key column {n} is not in its relation"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let time = schema
            .index_of("rowtime")
            .ok()
            .filter(|&i| matches!(schema.field(i).data_type(), DataType::Timestamp(..)));
        let value = (0..schema.fields().len())
            .filter(|i| !key.contains(i) && Some(*i) != time)
            .collect();
        Ok(Envelope::Keyed {
            upsert,
            keys: Box::new(
                Layout::keyed(Arc::clone(schema), key.clone()).with_key_codec(
                    match key.as_slice() {
                        [k] => KeyCodec::of(key_format, schema.field(*k).data_type()),
                        _ => KeyCodec::Text,
                    },
                ),
            ),
            key,
            value,
            time,
        })
    }
}

/// Make `topic` hold what the relation held at `start` (its snapshot):
/// read back what the topic holds and write the difference. Returns the
/// rows written. `CREATE SINK` (and a persistent query) runs it before it
/// answers, so the topic holds the relation's rows when it returns.
pub fn catch_up(
    topic: &str,
    schema: &SchemaRef,
    envelope: &Envelope,
    avro: Option<&Avro>,
    log: &dyn LogStore,
    start: &Subscription,
) -> Result<usize, DataflowError> {
    let codec = Codec::for_schema(schema)?;
    let mut diff = read_back(log, topic, schema, envelope, avro, &codec)?;
    for v in diff.values_mut() {
        *v = -*v;
    }
    let snapshot = with_schema(&start.snapshot, schema)?;
    let rows = codec.encode(snapshot.columns())?;
    for i in 0..snapshot.num_rows() {
        *diff.entry(rows.row(i).into()).or_insert(0) += 1;
    }
    let catch_up: Vec<(RowBytes, i64)> = diff.into_iter().filter(|(_, d)| *d != 0).collect();
    let n = catch_up.len();
    write(log, topic, schema, envelope, avro, &codec, catch_up)?;
    Ok(n)
}

/// Run sink `name` (relation `from` into `topic`) until aborted, the
/// relation goes away or the engine stops; `start` already caught up
/// ([`catch_up`]).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    name: String,
    from: String,
    topic: String,
    schema: SchemaRef,
    envelope: Envelope,
    avro: Option<Avro>,
    dataflows: Arc<Dataflows>,
    log: Arc<dyn LogStore>,
    start: Subscription,
) {
    let mut start = Some(start);
    let mut caught_up = true;
    loop {
        match feed(
            &name,
            &from,
            &topic,
            &schema,
            &envelope,
            avro.as_ref(),
            &dataflows,
            &*log,
            start.take(),
            std::mem::replace(&mut caught_up, false),
        )
        .await
        {
            // Fell behind the tick broadcast: catch up again from the topic.
            Ok(true) => warn!(sink = %name, "sink fell behind; catching up"),
            Ok(false) => return,
            Err(e) => {
                warn!(sink = %name, error = %e, "sink stopped");
                return;
            }
        }
    }
}

/// Catch the topic up with the relation (unless `caught_up`), then follow
/// its changes. True when it fell too far behind the tick broadcast and
/// must catch up again; false when the engine stopped.
#[allow(clippy::too_many_arguments)]
async fn feed(
    name: &str,
    from: &str,
    topic: &str,
    schema: &SchemaRef,
    envelope: &Envelope,
    avro: Option<&Avro>,
    dataflows: &Dataflows,
    log: &dyn LogStore,
    start: Option<Subscription>,
    caught_up: bool,
) -> Result<bool, DataflowError> {
    let codec = Codec::for_schema(schema)?;
    let start = match start {
        Some(s) => s,
        None => dataflows.subscribe(from)?,
    };
    if !caught_up {
        let n = catch_up(topic, schema, envelope, avro, log, &start)?;
        info!(sink = name, rows = n, "sink caught up");
    }
    let mut changes = start.changes;
    loop {
        match changes.recv().await {
            Ok(tick) if tick.removed.iter().any(|r| r == from) => {
                return Err(DataflowError::Other(format!("\"{from}\" was dropped")));
            }
            Ok(tick) if tick.epoch > start.epoch => {
                if let Some(d) = tick.changes.get(from) {
                    let batch = with_schema(&d.batch, schema)?;
                    let rows = codec.encode(batch.columns())?;
                    let out = (0..batch.num_rows())
                        .map(|i| (rows.row(i).into(), d.diffs[i]))
                        .collect();
                    write(log, topic, schema, envelope, avro, &codec, out)?;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return Ok(true),
            Err(RecvError::Closed) => return Ok(false),
        }
    }
}

/// What the topic holds: each row's count, inserts minus retractions.
fn read_back(
    log: &dyn LogStore,
    topic: &str,
    schema: &SchemaRef,
    envelope: &Envelope,
    avro: Option<&Avro>,
    codec: &Codec,
) -> Result<HashMap<RowBytes, i64>, DataflowError> {
    // An Avro value as the JSON the rest reads (None: it does not decode).
    let json_of = |v: &[u8]| -> Option<Vec<u8>> {
        match avro {
            Some(c) => c.value.json_of(v).ok().map(|j| j.to_string().into_bytes()),
            None => Some(v.to_vec()),
        }
    };
    // An Avro key as the JSON object of its columns, as a composite key's;
    // a KAFKA or JSON one as its column's text.
    let key_codec = match envelope {
        Envelope::Keyed { keys, .. } => keys.key_codec(),
        Envelope::Debezium => &KeyCodec::Text,
    };
    let key_of = |k: &[u8]| -> Option<Vec<u8>> {
        match avro.and_then(|a| a.key.as_ref()) {
            Some(c) => c.json_of(k).ok().map(|j| j.to_string().into_bytes()),
            None if key_codec.is_text() => Some(k.to_vec()),
            None => key_codec.text(k).ok().flatten().map(String::into_bytes),
        }
    };
    let object_keys = avro.is_some_and(|a| a.key.is_some());
    let mut values: Vec<(Vec<u8>, i64)> = Vec::new();
    // An upsert topic holds each key's last value.
    type Latest = Option<(Vec<u8>, Option<(String, i64)>)>;
    let mut latest: HashMap<Option<Vec<u8>>, Latest> = HashMap::new();
    for p in 0..log.topic_info(topic)?.partitions {
        let (start, end) = log.exact_offsets(topic, p)?;
        for records in crate::log::records(log, topic, p, start, end, 1 << 20) {
            for r in records? {
                if let Envelope::Keyed {
                    upsert, key, time, ..
                } = envelope
                {
                    let k = r.key.as_deref().and_then(key_of);
                    let v = r.value.as_deref().and_then(json_of);
                    let t = time.map(|t| (schema.field(t).name().clone(), r.timestamp));
                    if *upsert {
                        latest.insert(k, v.map(|v| (v, t)));
                    } else if let Some(row) =
                        v.and_then(|v| whole_row(schema, key, object_keys, k, &v, t))
                    {
                        values.push((row, 1));
                    }
                    continue;
                }
                let Some(v) = r.value.as_deref().and_then(json_of) else {
                    continue;
                };
                let Ok(env) = serde_json::from_slice::<serde_json::Value>(&v) else {
                    continue;
                };
                for (field, d) in [("before", -1), ("after", 1)] {
                    if let Some(row) = env.get(field).filter(|x| x.is_object()) {
                        values.push((row.to_string().into_bytes(), d));
                    }
                }
            }
        }
    }
    if let Envelope::Keyed { key, .. } = envelope {
        for (k, v) in latest {
            if let Some(row) = v.and_then(|(v, t)| whole_row(schema, key, object_keys, k, &v, t)) {
                values.push((row, 1));
            }
        }
    }
    let mut held: HashMap<RowBytes, i64> = HashMap::new();
    for chunk in values.chunks(16_384) {
        let refs: Vec<&[u8]> = chunk.iter().map(|(v, _)| v.as_slice()).collect();
        let (batch, good, _) = crate::format::json::decode(schema, &refs);
        let rows = codec.encode(batch.columns())?;
        for (i, g) in good.iter().enumerate() {
            *held.entry(rows.row(i).into()).or_insert(0) += chunk[*g].1;
        }
    }
    Ok(held)
}

/// The JSON row a keyed record stands for: its value's fields and its key
/// columns (one column's key is its text, read as JSON where it is JSON:
/// `42` a number; several columns' key a JSON object of them).
fn whole_row(
    schema: &SchemaRef,
    key: &[usize],
    object_key: bool,
    record_key: Option<Vec<u8>>,
    value: &[u8],
    time: Option<(String, i64)>,
) -> Option<Vec<u8>> {
    let serde_json::Value::Object(mut row) = serde_json::from_slice(value).ok()? else {
        return None;
    };
    // The record timestamp is the row's time column (epoch milliseconds,
    // as json.rs reads numbers for timestamps).
    if let Some((column, ms)) = time {
        row.insert(column, serde_json::Value::from(ms));
    }
    match (key, record_key) {
        ([k], Some(rk)) if !object_key => {
            let v = serde_json::from_slice(&rk)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&rk).into()));
            row.insert(schema.field(*k).name().clone(), v);
        }
        ([_, ..], Some(rk)) => {
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&rk) {
                row.extend(m);
            }
        }
        _ => {}
    }
    serde_json::to_vec(&row).ok()
}

/// Append the changes (rows with diffs) as the envelope's records,
/// fsynced.
fn write(
    log: &dyn LogStore,
    topic: &str,
    schema: &SchemaRef,
    envelope: &Envelope,
    avro: Option<&Avro>,
    codec: &Codec,
    changes: Vec<(RowBytes, i64)>,
) -> Result<(), DataflowError> {
    if changes.is_empty() {
        return Ok(());
    }
    let columns = codec.decode(changes.iter().map(|(r, _)| r.as_ref()))?;
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
    if let Envelope::Keyed {
        upsert,
        keys,
        key,
        value,
        time,
    } = envelope
    {
        let times: Vec<i64> = match time {
            Some(t) => {
                let ms = datafusion::arrow::compute::cast(
                    batch.column(*t),
                    &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
                )?;
                let ms = datafusion::arrow::compute::cast(&ms, &DataType::Int64)?;
                let ms = ms.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                (0..ms.len())
                    .map(|i| {
                        if ms.is_valid(i) {
                            ms.value(i)
                        } else {
                            crate::log::now_ms()
                        }
                    })
                    .collect()
            }
            None => vec![crate::log::now_ms(); batch.num_rows()],
        };
        let record_keys = match (key.is_empty(), avro.and_then(|a| a.key.as_ref())) {
            (true, _) => vec![None; batch.num_rows()],
            (false, None) => keys.row_keys(&batch)?,
            (false, Some(c)) => c
                .encode(&batch.project(key)?)?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let values = match (value.is_empty(), avro.map(|a| &a.value)) {
            (true, None) => vec![b"{}".to_vec(); batch.num_rows()],
            (true, Some(c)) => c.encode_json(&vec![serde_json::json!({}); batch.num_rows()])?,
            (false, None) => crate::format::json::encode(&batch.project(value)?)?,
            (false, Some(c)) => c.encode(&batch.project(value)?)?,
        };
        let record = |key: Option<Vec<u8>>, value: Option<Vec<u8>>, timestamp: i64| NewRecord {
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            timestamp,
            headers: vec![],
        };
        let mut records = Vec::new();
        if *upsert {
            // A key's new row wins over its retraction, in any order.
            /// (record key, value or tombstone, timestamp) per key.
            type Last = (Option<Vec<u8>>, Option<Vec<u8>>, i64);
            let mut last: Vec<Last> = Vec::new();
            let mut at: HashMap<Option<Vec<u8>>, usize> = HashMap::new();
            for (i, (_, d)) in changes.iter().enumerate() {
                let k = record_keys[i].clone();
                let slot = *at.entry(k.clone()).or_insert_with(|| {
                    last.push((k, None, times[i]));
                    last.len() - 1
                });
                if *d > 0 {
                    last[slot].1 = Some(values[i].clone());
                    last[slot].2 = times[i];
                }
            }
            records.extend(last.into_iter().map(|(k, v, t)| record(k, v, t)));
        } else {
            for (i, (_, d)) in changes.iter().enumerate() {
                for _ in 0..d.max(&0).unsigned_abs() {
                    records.push(record(
                        record_keys[i].clone(),
                        Some(values[i].clone()),
                        times[i],
                    ));
                }
            }
        }
        return append(log, topic, records);
    }
    let json = crate::format::json::encode(&batch)?;
    let now = crate::log::now_ms();
    let mut records = Vec::new();
    for (row, (_, d)) in json.iter().zip(&changes) {
        let row = String::from_utf8_lossy(row);
        let value = if *d > 0 {
            format!(r#"{{"before":null,"after":{row}}}"#)
        } else {
            format!(r#"{{"before":{row},"after":null}}"#)
        };
        let value = match avro {
            None => value.into_bytes(),
            Some(c) => {
                let env: serde_json::Value = serde_json::from_str(&value)
                    .map_err(|e| DataflowError::Other(e.to_string()))?;
                c.value.encode_json(&[env])?.pop().unwrap_or_default()
            }
        };
        for _ in 0..d.unsigned_abs() {
            records.push(NewRecord {
                key: None,
                value: Some(Bytes::from(value.clone())),
                timestamp: now,
                headers: vec![],
            });
        }
    }
    append(log, topic, records)
}

/// Append `records`, fsynced: each to the partition its key picks (as a
/// Kafka producer's default partitioner picks it), keyless ones to 0.
fn append(log: &dyn LogStore, topic: &str, records: Vec<NewRecord>) -> Result<(), DataflowError> {
    let partitions = log.topic_info(topic)?.partitions;
    let mut by_partition: std::collections::BTreeMap<i32, Vec<NewRecord>> = Default::default();
    for r in records {
        let p = match (&r.key, partitions) {
            (Some(k), n) if n > 1 => crate::log::partitioner::partition_for_key(k, n),
            _ => 0,
        };
        by_partition.entry(p).or_default().push(r);
    }
    for (p, records) in by_partition {
        for chunk in records.chunks(BATCH) {
            let batch = encode(chunk).map_err(crate::log::LogError::from)?;
            log.append(topic, p, batch, Durability::Fsync)?;
        }
    }
    Ok(())
}
