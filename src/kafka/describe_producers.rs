//! DescribeProducers (version 0): the idempotent producers a partition
//! keeps state for (their ids, epochs, last sequences and timestamps), as
//! `kafka-transactions.sh describe-producers` and kafka-python's
//! `KafkaAdminClient.describe_producers` ask, with the first offset of a
//! producer's open transaction there (`current_txn_start_offset`, −1
//! without one). Needs the SELECT privilege on the topic.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{Broker, RequestContext, error_code};
use crate::auth::Privilege;

pub fn handle(
    broker: &Broker,
    req: DescribeProducersRequest,
    ctx: &RequestContext,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let allowed = broker.may(ctx, Privilege::Select, &t.name.0);
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|index| {
                    let mut r = PartitionResponse::default().with_partition_index(index);
                    if !allowed {
                        r.error_code = ResponseError::TopicAuthorizationFailed.code();
                        return r;
                    }
                    match broker
                        .log()
                        .partition(&t.name.0, index)
                        .and_then(|part| Ok((part.producers()?, part.open_transactions()?)))
                    {
                        Ok((states, open)) => {
                            r.active_producers = states
                                .into_iter()
                                .map(|(id, epoch, last_sequence, last_timestamp)| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(id))
                                        .with_producer_epoch(i32::from(epoch))
                                        .with_last_sequence(last_sequence)
                                        .with_last_timestamp(last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(
                                            open.iter()
                                                .find(|(p, _)| *p == id)
                                                .map_or(-1, |(_, first)| *first),
                                        )
                                })
                                .collect();
                        }
                        Err(e) => r.error_code = error_code(&e),
                    }
                    r
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
