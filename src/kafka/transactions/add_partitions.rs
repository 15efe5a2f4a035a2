//! AddPartitionsToTxn (v0–3): the partitions a transactional producer is
//! about to write join its open transaction (opening it). Every partition
//! must exist and be writable by the principal; if any is refused, the
//! others answer OPERATION_NOT_ATTEMPTED and nothing is added, as in Kafka.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::Status;
use crate::auth::Privilege;
use crate::kafka::{Broker, RequestContext, is_internal};
use crate::log::now_ms;

pub fn handle(
    broker: &Broker,
    req: AddPartitionsToTxnRequest,
    ctx: &RequestContext,
) -> AddPartitionsToTxnResponse {
    let txns = broker.transactions();
    txns.ensure_reaper();
    let id = req.v3_and_below_transactional_id.0.to_string();
    let wanted: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = req
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.clone()))
        .collect();
    let answer = |code: &dyn Fn(&str, i32) -> i16| {
        let results = wanted
            .iter()
            .map(|(name, parts)| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name.clone())
                    .with_results_by_partition(
                        parts
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code(&name.0, *p))
                            })
                            .collect(),
                    )
            })
            .collect();
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
    };

    // Per-partition refusals first (unknown, internal, not permitted).
    let refusal = |topic: &str, p: i32| -> Option<i16> {
        if is_internal(topic) || !broker.may(ctx, Privilege::Insert, topic) {
            return Some(ResponseError::TopicAuthorizationFailed.code());
        }
        match broker.log().topic(topic) {
            Ok(t) if (0..t.partition_count()).contains(&p) => None,
            _ => Some(ResponseError::UnknownTopicOrPartition.code()),
        }
    };
    if wanted
        .iter()
        .any(|(n, ps)| ps.iter().any(|p| refusal(&n.0, *p).is_some()))
    {
        return answer(&|t, p| {
            refusal(t, p).unwrap_or(ResponseError::OperationNotAttempted.code())
        });
    }

    let shared = txns.shared();
    let mut state = shared.lock();
    let mut txn = match shared.checked(
        &state,
        &id,
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
    ) {
        Ok(t) => t,
        Err(e) => return answer(&|_, _| e.code()),
    };
    if txn.is_ending() {
        return answer(&|_, _| ResponseError::ConcurrentTransactions.code());
    }
    let before = txn.clone();
    if txn.status != Status::Ongoing {
        txn.status = Status::Ongoing;
        txn.started_ms = now_ms();
    }
    for (name, parts) in &wanted {
        for p in parts {
            txn.partitions.insert((name.0.to_string(), *p));
        }
    }
    if txn != before
        && let Err(code) = shared.put(&mut state, &id, txn)
    {
        return answer(&|_, _| code);
    }
    answer(&|_, _| 0)
}
