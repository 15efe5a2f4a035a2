//! DeleteTopics (by name; topic ids arrive only in v6, which is not served).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{Broker, RequestContext, error_code, str_bytes};
use crate::log::LogStore;

pub fn handle(
    broker: &Broker,
    req: DeleteTopicsRequest,
    ctx: &RequestContext,
) -> DeleteTopicsResponse {
    let v = ctx.api_version;
    let responses = req
        .topic_names
        .into_iter()
        .map(|name| {
            let mut r = DeletableTopicResult::default().with_name(Some(name.clone()));
            if !broker.may_administer(ctx) || super::is_internal(&name.0) {
                r.error_code = kafka_protocol::ResponseError::TopicAuthorizationFailed.code();
                if v >= 5 {
                    r.error_message = Some(str_bytes(if super::is_internal(&name.0) {
                        super::INTERNAL_REFUSED
                    } else {
                        super::ADMIN_REFUSED
                    }));
                }
            } else if let Err(e) = broker.log().delete_topic(&name.0) {
                r.error_code = error_code(&e);
                if v >= 5 {
                    r.error_message = Some(str_bytes(&e.to_string()));
                }
            }
            r
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
