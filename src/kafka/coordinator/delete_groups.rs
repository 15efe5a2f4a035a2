//! DeleteGroups (v0–2; not yet advertised in `SUPPORTED`): removes groups
//! nobody is in, with their committed offsets, as
//! `kafka-consumer-groups --delete` does.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use tracing::warn;

use super::Coordinator;
use super::group::{ErrorCode, NONE};
use crate::kafka::RequestContext;
use crate::log::LogStore;

impl Coordinator {
    pub fn delete_groups(
        &self,
        r: DeleteGroupsRequest,
        _ctx: &RequestContext,
    ) -> DeleteGroupsResponse {
        DeleteGroupsResponse::default().with_results(
            r.groups_names
                .into_iter()
                .map(|id| {
                    let code = self.delete_group(id.0.as_str());
                    DeletableGroupResult::default()
                        .with_group_id(id)
                        .with_error_code(code)
                })
                .collect(),
        )
    }

    /// NON_EMPTY_GROUP while anyone is in it, GROUP_ID_NOT_FOUND if there is
    /// nothing to delete.
    pub fn delete_group(&self, id: &str) -> ErrorCode {
        if id.is_empty() {
            return ResponseError::InvalidGroupId.code();
        }
        // Held across the (fsynced) tombstone write so nobody joins a group
        // whose offsets are half gone; deletions are rare admin actions.
        let mut groups = self.shared.groups();
        if groups.get(id).is_some_and(|g| !g.is_vacant()) {
            return ResponseError::NonEmptyGroup.code();
        }
        let in_memory = groups.remove(id).is_some();
        let has_offsets = !self.log().group_offsets(id).is_empty();
        if !in_memory && !has_offsets {
            return ResponseError::GroupIdNotFound.code();
        }
        match self.log().offset_store().delete_group(id) {
            Ok(_) => NONE,
            Err(e) => {
                warn!(group = %id, error = %e, "deleting group offsets failed");
                ResponseError::CoordinatorNotAvailable.code()
            }
        }
    }
}
