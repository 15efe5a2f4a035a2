//! DescribeConfigs: topic configs with Kafka's names, sources (explicitly set
//! on the topic, or default) and values. Broker resources answer with an
//! empty list: eddy's broker settings are command-line flags.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{Broker, RequestContext, error_code, str_bytes};
use crate::log::config;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(
    broker: &Broker,
    req: DescribeConfigsRequest,
    _ctx: &RequestContext,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let mut r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match res.resource_type {
                TOPIC => match broker.log().topic(&res.resource_name) {
                    Ok(t) => {
                        r.configs = config::describe(&t.overrides())
                            .into_iter()
                            .filter(|(k, _, _)| {
                                res.configuration_keys
                                    .as_ref()
                                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
                            })
                            .map(|(k, v, is_default)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(&k))
                                    .with_value(Some(str_bytes(&v)))
                                    .with_config_source(if is_default {
                                        SOURCE_DEFAULT
                                    } else {
                                        SOURCE_TOPIC
                                    })
                            })
                            .collect();
                    }
                    Err(e) => {
                        r.error_code = error_code(&e);
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                },
                BROKER => {}
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    r.error_message =
                        Some(str_bytes(&format!("unsupported resource type {other}")));
                }
            }
            r
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
