//! DeleteRecords (versions 0–2): move a partition's log start offset, as
//! `kafka-delete-records.sh` and AdminClient.delete_records do; records
//! below it are gone for every reader (`Partition::delete_records`: the
//! new start is fsynced before the answer, whole segments below it are
//! removed). Needs the DELETE privilege on the topic; eddy's internal
//! topics are refused.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{Broker, RequestContext, error_code};
use crate::auth::Privilege;

pub fn handle(
    broker: &Broker,
    req: DeleteRecordsRequest,
    ctx: &RequestContext,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let allowed =
                broker.may(ctx, Privilege::Delete, &t.name.0) && !super::is_internal(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if !allowed {
                        r.error_code = ResponseError::TopicAuthorizationFailed.code();
                        return r;
                    }
                    match broker
                        .log()
                        .partition(&t.name.0, p.partition_index)
                        .and_then(|part| part.delete_records(p.offset))
                    {
                        Ok(start) => r.low_watermark = start,
                        Err(e) => r.error_code = error_code(&e),
                    }
                    r
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
