//! TxnOffsetCommit (v0–3): offsets a transaction commits for a group when
//! it commits (and drops when it aborts). They are kept, durably, with the
//! transaction's state until then; the group's committed offsets do not
//! change before the transaction commits.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{PendingOffset, Status};
use crate::kafka::{Broker, RequestContext};

pub fn handle(
    broker: &Broker,
    req: TxnOffsetCommitRequest,
    _ctx: &RequestContext,
) -> TxnOffsetCommitResponse {
    let txns = broker.transactions();
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let max_metadata = broker.groups().settings().max_metadata_bytes;
    let shared = txns.shared();
    let mut state = shared.lock();
    let checked = shared
        .checked(&state, &id, req.producer_id.0, req.producer_epoch)
        .and_then(|t| match t.status {
            _ if t.is_ending() => Err(ResponseError::ConcurrentTransactions),
            // AddOffsetsToTxn must come first: it is what opened the
            // transaction for this group.
            Status::Ongoing if t.groups.contains_key(&group) => Ok(t),
            _ => Err(ResponseError::InvalidTxnState),
        });
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
    let mut txn = checked.clone().ok();
    for t in &req.topics {
        let partitions = broker
            .log()
            .topic(&t.name.0)
            .map(|t| t.partition_count())
            .ok();
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or("");
            let code = match (&checked, &mut txn) {
                (Err(e), _) => e.code(),
                _ if partitions.is_none_or(|n| !(0..n).contains(&p.partition_index)) => {
                    ResponseError::UnknownTopicOrPartition.code()
                }
                _ if metadata.len() > max_metadata => ResponseError::OffsetMetadataTooLarge.code(),
                (Ok(_), Some(txn)) => {
                    let pending = txn.groups.entry(group.clone()).or_default();
                    pending.retain(|o| {
                        !(o.topic == t.name.0.as_str() && o.partition == p.partition_index)
                    });
                    pending.push(PendingOffset {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_string(),
                    });
                    0
                }
                (Ok(_), None) => ResponseError::UnknownServerError.code(),
            };
            row.push(code);
        }
        codes.push(row);
    }
    if let Some(txn) = txn
        && codes.iter().flatten().any(|c| *c == 0)
        && let Err(code) = shared.put(&mut state, &id, txn)
    {
        for row in codes.iter_mut() {
            for c in row.iter_mut().filter(|c| **c == 0) {
                *c = code;
            }
        }
    }
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(row)
                        .map(|(p, code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
