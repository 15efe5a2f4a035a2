//! Heartbeat (v0–4): keeps a member's session alive, and is how members
//! learn that the group is rebalancing (REBALANCE_IN_PROGRESS).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use tokio::time::Instant;

use super::Coordinator;
use crate::kafka::RequestContext;

impl Coordinator {
    pub fn heartbeat(&self, r: HeartbeatRequest, _ctx: &RequestContext) -> HeartbeatResponse {
        self.ensure_ticker();
        let error = if r.group_id.0.is_empty() {
            ResponseError::InvalidGroupId.code()
        } else {
            let mut groups = self.shared.groups();
            match groups.get_mut(r.group_id.0.as_str()) {
                Some(g) => g.heartbeat(
                    &r.member_id,
                    r.group_instance_id.as_deref(),
                    r.generation_id,
                    Instant::now(),
                ),
                None => ResponseError::UnknownMemberId.code(),
            }
        };
        HeartbeatResponse::default().with_error_code(error)
    }
}
