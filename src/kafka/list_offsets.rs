//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the
//! earliest offset whose record timestamp is ≥ a given time.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Broker, RequestContext, error_code};
use crate::log::Result;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

fn lookup(
    broker: &Broker,
    topic: &str,
    partition: i32,
    ts: i64,
    committed: bool,
) -> Result<(i64, i64)> {
    let p = broker.log().partition(topic, partition)?;
    Ok(match ts {
        // READ_COMMITTED's latest is the last stable offset.
        LATEST if committed => (-1, p.stable_end()),
        LATEST => (-1, p.log_end()),
        EARLIEST => (-1, p.log_start()),
        MAX_TIMESTAMP => {
            let max = p
                .segments()
                .iter()
                .map(|s| s.max_timestamp())
                .max()
                .unwrap_or(-1);
            match p.offset_for_timestamp(max)? {
                Some((o, t)) if max >= 0 => (t, o),
                _ => (-1, -1),
            }
        }
        t => match p.offset_for_timestamp(t)? {
            Some((o, found)) => (found, o),
            None => (-1, -1),
        },
    })
}

pub fn handle(
    broker: &Broker,
    req: ListOffsetsRequest,
    ctx: &RequestContext,
) -> ListOffsetsResponse {
    let v = ctx.api_version;
    let committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match lookup(broker, &t.name.0, p.partition_index, p.timestamp, committed) {
                        Ok((ts, off)) => {
                            r.timestamp = ts;
                            r.offset = off;
                            if v >= 4 {
                                r.leader_epoch = 0;
                            }
                        }
                        Err(e) => {
                            r.error_code = error_code(&e);
                            r.timestamp = -1;
                            r.offset = -1;
                        }
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
