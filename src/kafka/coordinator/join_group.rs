//! JoinGroup (v0–7): request validation, group creation, waiting for the
//! rebalance to complete, and the versioned response.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::group::{Group, JoinRequest, JoinResult, Reply};
use super::{Coordinator, new_member_id};
use crate::kafka::{RequestContext, str_bytes};

impl Coordinator {
    pub async fn join_group(&self, r: JoinGroupRequest, ctx: &RequestContext) -> JoinGroupResponse {
        let result = self.join(r, ctx).await;
        response(result, ctx.api_version)
    }

    async fn join(&self, r: JoinGroupRequest, ctx: &RequestContext) -> JoinResult {
        self.ensure_ticker();
        let version = ctx.api_version;
        let group_id = r.group_id.0.to_string();
        let member_id = r.member_id.to_string();
        let fail = |e| JoinResult::error(&member_id, e);
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let settings = self.settings();
        let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
        if r.session_timeout_ms <= 0
            || session < settings.min_session_timeout
            || session > settings.max_session_timeout
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance = if version == 0 || r.rebalance_timeout_ms <= 0 {
            session
        } else {
            Duration::from_millis(r.rebalance_timeout_ms as u64)
        };
        if r.protocol_type.is_empty() || r.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let instance = r.group_instance_id.as_ref().map(|s| s.to_string());
        let fresh_id = new_member_id(instance.as_deref().unwrap_or(&ctx.client_id));
        let req = JoinRequest {
            member_id: member_id.clone(),
            group_instance_id: instance,
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        };

        let reply = {
            let mut groups = self.shared.groups();
            let now = Instant::now();
            let group = match groups.entry(group_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // A member id for a group we do not know: it belonged to
                    // a group forgotten since (restart): start over.
                    if !member_id.is_empty() {
                        return fail(ResponseError::UnknownMemberId);
                    }
                    e.insert(Group::new(settings.initial_rebalance_delay, now))
                }
            };
            group.join(req, fresh_id, now)
        };
        match reply {
            Reply::Now(result) => result,
            Reply::Wait { rx, within } => match tokio::time::timeout(within, rx).await {
                Ok(Ok(result)) => result,
                // Superseded by a newer JoinGroup of the same member, or the
                // safety net: the client retries its join.
                Ok(Err(_)) | Err(_) => fail(ResponseError::RebalanceInProgress),
            },
        }
    }
}

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation_id)
        .with_leader(str_bytes(&r.leader_id))
        .with_member_id(str_bytes(&r.member_id));
    // protocol_name is nullable only from v7; before, Kafka sends "".
    resp.protocol_name = match r.protocol_name.as_deref() {
        Some(p) => Some(str_bytes(p)),
        None if version >= 7 => None,
        None => Some(StrBytes::default()),
    };
    if version >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    }
    resp.members = r
        .members
        .into_iter()
        .map(|m| {
            let mut member = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                member.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
            }
            member
        })
        .collect();
    resp
}
