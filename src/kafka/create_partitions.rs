//! CreatePartitions: grow a topic's partition count (never shrink).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use kafka_protocol::ResponseError;

use super::{Broker, RequestContext, error_code, str_bytes};
use crate::log::{LogError, LogStore};

pub fn handle(
    broker: &Broker,
    req: CreatePartitionsRequest,
    ctx: &RequestContext,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            if super::is_internal(&t.name.0) || !broker.may_administer(ctx) {
                let why = if super::is_internal(&t.name.0) {
                    super::INTERNAL_REFUSED
                } else {
                    super::ADMIN_REFUSED
                };
                return CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(why)));
            }
            let result = if req.validate_only {
                broker.log().topic(&t.name.0).and_then(|topic| {
                    if t.count > topic.partition_count() && t.count <= 10_000 {
                        Ok(())
                    } else {
                        Err(LogError::InvalidPartitions(t.count))
                    }
                })
            } else {
                broker.log().create_partitions(&t.name.0, t.count)
            };
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
            if let Err(e) = result {
                r.error_code = error_code(&e);
                r.error_message = Some(str_bytes(&e.to_string()));
            }
            r
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
