//! ListGroups (v0–4): the groups in memory plus those known only by their
//! committed offsets (Empty), optionally filtered by state (v4).

use std::collections::BTreeMap;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};

use super::Coordinator;
use super::group::GroupState;
use crate::kafka::{RequestContext, str_bytes};
use crate::log::LogStore;

/// Protocol type of groups whose members eddy has not seen (offsets
/// committed before a restart, or by tools): consumer groups are the only
/// kind that commit offsets, and admin clients list only this type (or "").
const CONSUMER: &str = "consumer";

impl Coordinator {
    pub fn list_groups(&self, r: ListGroupsRequest, ctx: &RequestContext) -> ListGroupsResponse {
        let version = ctx.api_version;
        let wanted: Vec<String> = if version >= 4 {
            r.states_filter.iter().map(|s| s.to_lowercase()).collect()
        } else {
            vec![]
        };
        let mut listed: BTreeMap<String, (String, GroupState)> = self
            .log()
            .groups()
            .into_iter()
            .map(|g| (g, (CONSUMER.to_string(), GroupState::Empty)))
            .collect();
        for (id, g) in self.shared.groups().iter() {
            if g.state() != GroupState::Dead {
                let protocol_type = g.protocol_type().unwrap_or(CONSUMER).to_string();
                listed.insert(id.clone(), (protocol_type, g.state()));
            }
        }
        ListGroupsResponse::default().with_groups(
            listed
                .into_iter()
                .filter(|(_, (_, state))| {
                    wanted.is_empty() || wanted.contains(&state.name().to_lowercase())
                })
                .map(|(id, (protocol_type, state))| {
                    let mut g = ListedGroup::default()
                        .with_group_id(str_bytes(&id).into())
                        .with_protocol_type(str_bytes(&protocol_type));
                    if version >= 4 {
                        g.group_state = str_bytes(state.name());
                    }
                    g
                })
                .collect(),
        )
    }
}
