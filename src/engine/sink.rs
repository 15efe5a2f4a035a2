//! Sinks: `CREATE SINK s FROM v INTO TOPIC 't'` writes every change of a
//! table or materialized view into a topic, for Kafka consumers, as JSON
//! records in the Debezium envelope Materialize's Kafka sinks use:
//! `{"before": null, "after": {row}}` inserts a row, `{"before": {row},
//! "after": null}` retracts one.
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
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::dataflow::rows::{Codec, RowBytes};
use crate::dataflow::runtime::{Dataflows, Subscription};
use crate::dataflow::{DataflowError, with_schema};
use crate::log::batch::{NewRecord, encode};
use crate::log::{Durability, LogStore};

/// Records per append.
const BATCH: usize = 1000;

/// Run sink `name` (relation `from` into `topic`) until aborted, the
/// relation goes away or the engine stops.
pub async fn run(
    name: String,
    from: String,
    topic: String,
    schema: SchemaRef,
    dataflows: Arc<Dataflows>,
    log: Arc<dyn LogStore>,
    start: Subscription,
) {
    let mut start = Some(start);
    loop {
        match feed(
            &name,
            &from,
            &topic,
            &schema,
            &dataflows,
            &*log,
            start.take(),
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

/// Catch the topic up with the relation, then follow its changes. True
/// when it fell too far behind the tick broadcast and must catch up again;
/// false when the engine stopped.
async fn feed(
    name: &str,
    from: &str,
    topic: &str,
    schema: &SchemaRef,
    dataflows: &Dataflows,
    log: &dyn LogStore,
    start: Option<Subscription>,
) -> Result<bool, DataflowError> {
    let codec = Codec::for_schema(schema)?;
    let mut diff = read_back(log, topic, schema, &codec)?;
    for v in diff.values_mut() {
        *v = -*v;
    }
    let start = match start {
        Some(s) => s,
        None => dataflows.subscribe(from)?,
    };
    let snapshot = with_schema(&start.snapshot, schema)?;
    let rows = codec.encode(snapshot.columns())?;
    for i in 0..snapshot.num_rows() {
        *diff.entry(rows.row(i).into()).or_insert(0) += 1;
    }
    let catch_up: Vec<(RowBytes, i64)> = diff.into_iter().filter(|(_, d)| *d != 0).collect();
    let n = catch_up.len();
    write(log, topic, schema, &codec, catch_up)?;
    info!(sink = name, rows = n, "sink caught up");
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
                    write(log, topic, schema, &codec, out)?;
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
    codec: &Codec,
) -> Result<HashMap<RowBytes, i64>, DataflowError> {
    let mut values: Vec<(Vec<u8>, i64)> = Vec::new();
    for p in 0..log.topic_info(topic)?.partitions {
        let (start, end) = log.offsets(topic, p)?;
        for records in crate::log::records(log, topic, p, start, end, 1 << 20) {
            for r in records? {
                let Some(v) = r.value else { continue };
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

/// Append the changes (rows with diffs) as envelope records, fsynced.
fn write(
    log: &dyn LogStore,
    topic: &str,
    schema: &SchemaRef,
    codec: &Codec,
    changes: Vec<(RowBytes, i64)>,
) -> Result<(), DataflowError> {
    if changes.is_empty() {
        return Ok(());
    }
    let columns = codec.decode(changes.iter().map(|(r, _)| r.as_ref()))?;
    let batch = RecordBatch::try_new(Arc::clone(schema), columns)?;
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
        for _ in 0..d.unsigned_abs() {
            records.push(NewRecord {
                key: None,
                value: Some(Bytes::from(value.clone())),
                timestamp: now,
                headers: vec![],
            });
        }
    }
    for chunk in records.chunks(BATCH) {
        let batch = encode(chunk).map_err(crate::log::LogError::from)?;
        log.append(topic, 0, batch, Durability::Fsync)?;
    }
    Ok(())
}
