//! CreateTopics: with Kafka's names for topic configs. There is one node, so
//! a replication factor above 1 is refused (INVALID_REPLICATION_FACTOR);
//! -1 means the broker defaults.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{Broker, RequestContext, error_code, str_bytes};
use crate::log::topic::validate_name;
use crate::log::{LogError, LogStore, TopicConfig};

pub fn handle(
    broker: &Broker,
    req: CreateTopicsRequest,
    ctx: &RequestContext,
) -> CreateTopicsResponse {
    let v = ctx.api_version;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = if t.num_partitions == -1 {
                broker.config().default_partitions
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let result: Result<(), (i16, String)> = if super::is_internal(&name) {
                Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    super::INTERNAL_REFUSED.to_string(),
                ))
            } else if !broker.may_administer(ctx) {
                Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    super::ADMIN_REFUSED.to_string(),
                ))
            } else if t.replication_factor > 1 {
                Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {} is larger than the 1 available broker",
                        t.replication_factor
                    ),
                ))
            } else if req.validate_only {
                validate_name(&name)
                    .and_then(|_| TopicConfig::from_overrides(&configs).map(|_| ()))
                    .and_then(|_| match broker.log().topic(&name) {
                        Ok(_) => Err(LogError::TopicExists(name.clone())),
                        Err(_) => Ok(()),
                    })
                    .and_then(|_| {
                        if (1..=10_000).contains(&partitions) {
                            Ok(())
                        } else {
                            Err(LogError::InvalidPartitions(partitions))
                        }
                    })
                    .map_err(|e| (error_code(&e), e.to_string()))
            } else {
                broker
                    .log()
                    .create_topic(&name, partitions, configs)
                    .map(|_| ())
                    .map_err(|e| (error_code(&e), e.to_string()))
            };
            let mut r = CreatableTopicResult::default().with_name(t.name);
            match result {
                Ok(()) => {
                    if v >= 5 {
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                    }
                    if v >= 7
                        && let Ok(topic) = broker.log().topic(&name)
                    {
                        r.topic_id = super::metadata::topic_id(&topic);
                    }
                }
                Err((code, msg)) => {
                    r.error_code = code;
                    if v >= 1 {
                        r.error_message = Some(str_bytes(&msg));
                    }
                    if v >= 5 {
                        r.num_partitions = -1;
                        r.replication_factor = -1;
                    }
                }
            }
            r
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
