//! LeaveGroup (v0–4): members leaving (one per request before v3, a batch
//! with per-member results from v3), which starts a rebalance for the rest.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use tokio::time::Instant;

use super::Coordinator;
use super::group::{ErrorCode, GroupState, NONE};
use crate::kafka::{RequestContext, str_bytes};

impl Coordinator {
    pub fn leave_group(&self, r: LeaveGroupRequest, ctx: &RequestContext) -> LeaveGroupResponse {
        self.ensure_ticker();
        let version = ctx.api_version;
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            r.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let (top, results) = self.leave(r.group_id.0.as_str(), &leaving);
        let mut resp = LeaveGroupResponse::default();
        if version >= 3 {
            resp.error_code = top;
            resp.members = leaving
                .iter()
                .zip(&results)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(*code)
                })
                .collect();
        } else {
            // One member, no per-member results: its error is the answer.
            resp.error_code = if top != NONE {
                top
            } else {
                results.first().copied().unwrap_or(NONE)
            };
        }
        resp
    }

    /// (top-level error, one error per leaving member).
    fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (ErrorCode, Vec<ErrorCode>) {
        if group_id.is_empty() {
            return (ResponseError::InvalidGroupId.code(), vec![]);
        }
        let mut groups = self.shared.groups();
        let Some(g) = groups.get_mut(group_id) else {
            let unknown = ResponseError::UnknownMemberId.code();
            return (NONE, vec![unknown; leaving.len()]);
        };
        if g.state() == GroupState::Dead {
            return (ResponseError::CoordinatorNotAvailable.code(), vec![]);
        }
        let now = Instant::now();
        let results = leaving
            .iter()
            .map(|(id, instance)| g.leave(id, instance.as_deref(), now))
            .collect();
        (NONE, results)
    }
}
