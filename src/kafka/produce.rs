//! Produce: append each partition's record batches to the log exactly as
//! the client encoded them (only the base offset is rewritten), then answer
//! per acks: 0 → no response at all, 1 → after the write reached the OS,
//! all → after fsync. The fsyncs of all partitions in a request run in
//! parallel on blocking threads, and concurrent producers share them (the
//! log's group commit).

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::warn;

use super::{Broker, RequestContext, error_code, is_internal};
use crate::auth::Privilege;
use crate::log::batch::BatchHeader;
use crate::log::{Durability, LogError, Partition};

/// A transactional batch may only be written inside an open transaction
/// that added this partition; transaction markers only by the coordinator.
fn transactional(broker: &Broker, bytes: &[u8], topic: &str, partition: i32) -> Result<(), i16> {
    let Ok(h) = BatchHeader::parse(bytes) else {
        return Ok(()); // the log's validation answers for it
    };
    if h.is_control() {
        return Err(ResponseError::InvalidRecord.code());
    }
    if !h.is_transactional() {
        return Ok(());
    }
    broker
        .transactions()
        .admits(h.producer_id, h.producer_epoch, topic, partition)
}

pub async fn handle(
    broker: &Broker,
    req: ProduceRequest,
    ctx: &RequestContext,
) -> Option<ProduceResponse> {
    let v = ctx.api_version;
    let durability = Durability::from_acks(req.acks);
    // Written to the OS first; fsynced below, all partitions at once.
    let write_level = if durability == Durability::Fsync {
        Durability::Os
    } else {
        durability
    };
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut to_sync: Vec<(usize, usize, Arc<Partition>, i64)> = Vec::new();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        let name = t.name.0.to_string();
        let topic = broker.log().topic(&name);
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            let mut r = PartitionProduceResponse::default().with_index(p.index);
            if v >= 2 {
                r.log_append_time_ms = -1;
            }
            let appended_bytes = p.records.as_ref().map_or(0, |b| b.len());
            let outcome = match (&topic, p.records) {
                _ if is_internal(&name) || !broker.may(ctx, Privilege::Insert, &name) => {
                    Err(ResponseError::TopicAuthorizationFailed.code())
                }
                (Err(e), _) => Err(error_code(e)),
                (Ok(_), None) => Err(ResponseError::InvalidRecord.code()),
                (Ok(_), Some(bytes))
                    if let Err(code) = transactional(broker, &bytes, &name, p.index) =>
                {
                    Err(code)
                }
                (Ok(topic), Some(bytes)) => topic
                    .partition(p.index)
                    .and_then(|part| {
                        let info = part.append(BytesMut::from(&bytes[..]), write_level)?;
                        Ok((part, info))
                    })
                    .map_err(|e| {
                        if !matches!(
                            e,
                            LogError::UnknownPartition { .. } | LogError::OutOfOrderSequence { .. }
                        ) {
                            warn!(topic = %name, partition = p.index, error = %e, "produce failed");
                        }
                        error_code(&e)
                    }),
            };
            match outcome {
                Ok((part, info)) => {
                    if !info.duplicate {
                        broker.arrived();
                        if let Some(m) = crate::metrics::metrics() {
                            m.produced_records
                                .inc_by((info.last_offset - info.base_offset + 1).max(0) as u64);
                            m.produced_bytes.inc_by(appended_bytes as u64);
                        }
                    }
                    r.base_offset = info.base_offset;
                    if v >= 2 {
                        r.log_append_time_ms = info.log_append_time;
                    }
                    if v >= 5 {
                        r.log_start_offset = info.log_start;
                    }
                    if durability == Durability::Fsync && !info.duplicate {
                        to_sync.push((ti, pi, part, info.last_offset + 1));
                    }
                }
                Err(code) => {
                    r.error_code = code;
                    r.base_offset = -1;
                    if v >= 5 {
                        r.log_start_offset = -1;
                    }
                }
            }
            parts.push(r);
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(parts),
        );
    }
    if !to_sync.is_empty() {
        let waits: Vec<_> = to_sync
            .into_iter()
            .map(|(ti, pi, part, upto)| {
                tokio::task::spawn_blocking(move || (ti, pi, part.sync_to(upto)))
            })
            .collect();
        for w in waits {
            match w.await {
                Ok((_, _, Ok(()))) => {}
                Ok((ti, pi, Err(e))) => {
                    warn!(error = %e, "fsync for acks=all failed");
                    topics[ti].partition_responses[pi].error_code = error_code(&e);
                }
                Err(e) => warn!(error = %e, "fsync task failed"),
            }
        }
    }
    if req.acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(topics))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::kafka::{BrokerConfig, Sasl};
    use crate::log::batch::{self, Marker, NewRecord};
    use crate::log::{Log, LogOptions, LogStore};

    /// A client may write neither a transaction marker nor a transactional
    /// batch outside an open transaction that added the partition; plain
    /// batches pass.
    #[test]
    fn markers_and_stray_transactional_batches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                cleaner_interval: None,
            },
        )
        .unwrap();
        log.create_topic("t", 1, Default::default()).unwrap();
        let broker = Broker::new(Arc::clone(&log), BrokerConfig::default(), Sasl::none());
        let marker = batch::encode_marker(5, 0, Marker::Commit, 0).unwrap();
        assert_eq!(
            transactional(&broker, &marker, "t", 0),
            Err(ResponseError::InvalidRecord.code())
        );
        let one = NewRecord {
            value: Some(bytes::Bytes::from_static(b"v")),
            ..Default::default()
        };
        let stray = batch::encode_transactional(5, 0, 0, std::slice::from_ref(&one)).unwrap();
        assert_eq!(
            transactional(&broker, &stray, "t", 0),
            Err(ResponseError::InvalidTxnState.code())
        );
        let plain = batch::encode(&[one]).unwrap();
        assert_eq!(transactional(&broker, &plain, "t", 0), Ok(()));
    }
}
