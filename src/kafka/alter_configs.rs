//! IncrementalAlterConfigs (SET / DELETE per key; APPEND and SUBTRACT
//! only for list-valued keys, which eddy's topic configs have none of) and
//! the older AlterConfigs (the given set replaces the topic's overrides),
//! on topics, through `Topic::alter_config` as SQL's `ALTER TOPIC` does.
//! `validate_only` checks without applying. Broker resources are refused:
//! eddy's broker settings are command-line flags. Internal topics are
//! refused as everywhere else.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};

use super::{Broker, INTERNAL_REFUSED, RequestContext, error_code, is_internal};
use crate::log::LogError;
use crate::log::config::TopicConfig;

const TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;

/// Apply (or, with `validate_only`, check) `changes` to topic `name`
/// (`replace`: keys not named return to their defaults).
fn alter(
    broker: &Broker,
    ctx: &RequestContext,
    resource_type: i8,
    name: &str,
    mut changes: BTreeMap<String, Option<String>>,
    replace: bool,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != TOPIC {
        return Err((
            ResponseError::InvalidRequest.code(),
            "only topic configs can be altered (eddy's broker settings are command-line flags)"
                .into(),
        ));
    }
    if is_internal(name) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            INTERNAL_REFUSED.into(),
        ));
    }
    if !broker.may_administer(ctx) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            super::ADMIN_REFUSED.into(),
        ));
    }
    let log_err = |e: LogError| (error_code(&e), e.to_string());
    let topic = broker.log().topic(name).map_err(log_err)?;
    let current = topic.overrides();
    if replace {
        for k in current.keys() {
            changes.entry(k.clone()).or_insert(None);
        }
    }
    let mut next = current;
    for (k, v) in &changes {
        match v {
            Some(v) => next.insert(k.clone(), v.clone()),
            None => next.remove(k),
        };
    }
    TopicConfig::from_overrides(&next).map_err(log_err)?;
    if !validate_only {
        topic.alter_config(&changes).map_err(log_err)?;
    }
    Ok(())
}

pub fn incremental(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
    ctx: &RequestContext,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let mut changes = BTreeMap::new();
            let mut refused = None;
            for c in &res.configs {
                match c.config_operation {
                    SET => {
                        changes.insert(
                            c.name.to_string(),
                            Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()),
                        );
                    }
                    DELETE => {
                        changes.insert(c.name.to_string(), None);
                    }
                    _ => {
                        refused = Some((
                            ResponseError::InvalidConfig.code(),
                            format!(
                                "{} is not a list config: APPEND and SUBTRACT do not apply",
                                c.name.as_str()
                            ),
                        ))
                    }
                }
            }
            let result = match refused {
                Some(e) => Err(e),
                None => alter(
                    broker,
                    ctx,
                    res.resource_type,
                    &res.resource_name,
                    changes,
                    false,
                    req.validate_only,
                ),
            };
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((code, message)) = result {
                r.error_code = code;
                r.error_message = Some(super::str_bytes(&message));
            }
            r
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub fn replace(
    broker: &Broker,
    req: AlterConfigsRequest,
    ctx: &RequestContext,
) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let changes = res
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let result = alter(
                broker,
                ctx,
                res.resource_type,
                &res.resource_name,
                changes,
                true,
                req.validate_only,
            );
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((code, message)) = result {
                r.error_code = code;
                r.error_message = Some(super::str_bytes(&message));
            }
            r
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
