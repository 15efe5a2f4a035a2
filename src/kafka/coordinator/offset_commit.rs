//! OffsetCommit (v2–8): validates the committer against the group's
//! generation, then stores the offsets durably in the log.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use tokio::time::Instant;
use tracing::warn;

use super::Coordinator;
use super::group::{ErrorCode, NONE, validate_commit_without_group};
use crate::kafka::RequestContext;
use crate::log::{CommittedOffset, LogStore, now_ms};

impl Coordinator {
    pub fn offset_commit(
        &self,
        r: OffsetCommitRequest,
        _ctx: &RequestContext,
    ) -> OffsetCommitResponse {
        let group_id = r.group_id.0.to_string();
        let verdict = self.commit_verdict(
            &group_id,
            &r.member_id,
            r.group_instance_id.as_deref(),
            r.generation_id_or_member_epoch,
        );
        let max_metadata = self.settings().max_metadata_bytes;
        let now = now_ms();

        // (topic, partition, result); results still NONE are to be written.
        let mut results: Vec<(String, Vec<(i32, ErrorCode)>)> = Vec::new();
        let mut batch: Vec<(String, i32, CommittedOffset)> = Vec::new();
        for t in r.topics {
            let topic = t.name.0.to_string();
            let partitions = self.log().topic(&topic).map(|t| t.partition_count()).ok();
            let mut codes = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                // Unknown partitions first, as Kafka checks them before the
                // group.
                let code = if partitions.is_none_or(|n| !(0..n).contains(&p.partition_index)) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else if verdict != NONE {
                    verdict
                } else if metadata.len() > max_metadata {
                    ResponseError::OffsetMetadataTooLarge.code()
                } else {
                    batch.push((
                        topic.clone(),
                        p.partition_index,
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: metadata.to_string(),
                            commit_timestamp: now,
                        },
                    ));
                    NONE
                };
                codes.push((p.partition_index, code));
            }
            results.push((topic, codes));
        }

        // One append for the whole request, as Kafka writes one batch: all
        // of it is committed or none.
        if !batch.is_empty()
            && let Err(e) = self.log().commit_offsets(&group_id, &batch)
        {
            warn!(group = %group_id, error = %e, "offset commit failed");
            let failed = ResponseError::CoordinatorNotAvailable.code();
            for (_, codes) in &mut results {
                for (_, code) in codes.iter_mut().filter(|(_, c)| *c == NONE) {
                    *code = failed;
                }
            }
        }

        OffsetCommitResponse::default().with_topics(
            results
                .into_iter()
                .map(|(topic, codes)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(crate::kafka::str_bytes(&topic).into())
                        .with_partitions(
                            codes
                                .into_iter()
                                .map(|(p, code)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    /// Whether this committer may commit to the group now.
    fn commit_verdict(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        let mut groups = self.shared.groups();
        match groups.get_mut(group_id) {
            Some(g) => g.validate_commit(member_id, instance, generation_id, Instant::now()),
            None => validate_commit_without_group(member_id, instance, generation_id),
        }
    }
}
