//! SyncGroup (v0–5): the leader hands in the assignment, every member
//! (whose SyncGroup may arrive before the leader's) waits for its part.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use tokio::time::Instant;

use super::Coordinator;
use super::group::{Reply, SyncRequest, SyncResult};
use crate::kafka::{RequestContext, str_bytes};

impl Coordinator {
    pub async fn sync_group(&self, r: SyncGroupRequest, ctx: &RequestContext) -> SyncGroupResponse {
        let result = self.sync(r).await;
        response(result, ctx.api_version)
    }

    async fn sync(&self, r: SyncGroupRequest) -> SyncResult {
        self.ensure_ticker();
        let group_id = r.group_id.0.to_string();
        if group_id.is_empty() {
            return SyncResult::error(ResponseError::InvalidGroupId);
        }
        let req = SyncRequest {
            member_id: r.member_id.to_string(),
            group_instance_id: r.group_instance_id.as_ref().map(|s| s.to_string()),
            generation_id: r.generation_id,
            protocol_type: r.protocol_type.as_ref().map(|s| s.to_string()),
            protocol_name: r.protocol_name.as_ref().map(|s| s.to_string()),
            assignments: r
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), a.assignment))
                .collect(),
        };
        let reply = {
            let mut groups = self.shared.groups();
            match groups.get_mut(&group_id) {
                Some(g) => g.sync(req, Instant::now()),
                None => Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
            }
        };
        match reply {
            Reply::Now(result) => result,
            Reply::Wait { rx, within } => match tokio::time::timeout(within, rx).await {
                Ok(Ok(result)) => result,
                // Only if the group lost track of this member: rejoining
                // sorts it out.
                Ok(Err(_)) | Err(_) => SyncResult::error(ResponseError::RebalanceInProgress),
            },
        }
    }
}

fn response(r: SyncResult, version: i16) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    // v5 clients check these against what they joined with.
    if version >= 5 && r.error == 0 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    }
    resp
}
