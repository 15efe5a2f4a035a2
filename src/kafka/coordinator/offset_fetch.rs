//! OffsetFetch (v1–7): a group's committed offsets, for the partitions
//! asked for or (v2+, null topics) all of them.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::Coordinator;
use crate::kafka::{RequestContext, str_bytes};
use crate::log::{CommittedOffset, LogStore};

/// Per topic: (partition, its committed offset if any).
type Fetched = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

impl Coordinator {
    pub fn offset_fetch(&self, r: OffsetFetchRequest, ctx: &RequestContext) -> OffsetFetchResponse {
        let version = ctx.api_version;
        let group = r.group_id.0.as_str();
        let log = self.log();
        let topics: Fetched = match r.topics {
            Some(topics) => topics
                .into_iter()
                .map(|t| {
                    let name = t.name.0.to_string();
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| (*p, log.committed_offset(group, &name, *p)))
                        .collect();
                    (name, partitions)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                for (topic, p, c) in log.group_offsets(group) {
                    by_topic.entry(topic).or_default().push((p, Some(c)));
                }
                by_topic.into_iter().collect()
            }
        };
        // The top-level error (v2+) stays 0: eddy never has offsets still
        // loading or pending in a transaction.
        OffsetFetchResponse::default().with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(str_bytes(&name).into())
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, c)| partition(p, c, version))
                                .collect(),
                        )
                })
                .collect(),
        )
    }
}

/// Nothing committed is offset -1 with no error: the consumer then applies
/// its auto.offset.reset.
fn partition(index: i32, c: Option<CommittedOffset>, version: i16) -> OffsetFetchResponsePartition {
    let (offset, epoch, metadata) = match c {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    };
    OffsetFetchResponsePartition::default()
        .with_partition_index(index)
        .with_committed_offset(offset)
        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
        .with_metadata(Some(str_bytes(&metadata)))
        .with_error_code(0)
}
