//! DescribeGroups (v0–5): state, protocol and members of groups, as
//! `kafka-consumer-groups --describe` shows them.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::Coordinator;
use super::group::{GroupState, GroupSummary};
use crate::kafka::{RequestContext, str_bytes};
use crate::log::LogStore;

/// READ, DELETE and DESCRIBE (Kafka's AclOperation codes 3, 6, 8): what a
/// group allows, and eddy has no ACLs to deny any of it.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

impl Coordinator {
    pub fn describe_groups(
        &self,
        r: DescribeGroupsRequest,
        ctx: &RequestContext,
    ) -> DescribeGroupsResponse {
        let version = ctx.api_version;
        let groups = r
            .groups
            .iter()
            .map(|id| {
                let summary = self.group_summary(id.0.as_str());
                let mut g = described(id.0.as_str(), summary, version);
                if version >= 3 && r.include_authorized_operations {
                    g.authorized_operations = GROUP_OPERATIONS;
                }
                g
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// A group in memory, or one known only by committed offsets (Empty);
    /// anything else is Dead, which is how Kafka (before DescribeGroups v6)
    /// describes a group that does not exist.
    fn group_summary(&self, id: &str) -> GroupSummary {
        if let Some(g) = self.shared.groups().get(id) {
            return g.summary();
        }
        let state = if self.log().group_offsets(id).is_empty() {
            GroupState::Dead
        } else {
            GroupState::Empty
        };
        GroupSummary {
            state,
            protocol_type: if state == GroupState::Empty {
                "consumer".into()
            } else {
                String::new()
            },
            protocol_data: String::new(),
            members: vec![],
        }
    }
}

fn described(id: &str, s: GroupSummary, version: i16) -> DescribedGroup {
    DescribedGroup::default()
        .with_error_code(0)
        .with_group_id(str_bytes(id).into())
        .with_group_state(str_bytes(s.state.name()))
        .with_protocol_type(str_bytes(&s.protocol_type))
        .with_protocol_data(str_bytes(&s.protocol_data))
        .with_members(
            s.members
                .into_iter()
                .map(|m| {
                    let mut member = DescribedGroupMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        member.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                    }
                    member
                })
                .collect::<Vec<_>>(),
        )
}
