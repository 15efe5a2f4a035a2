//! Fetch: serve stored record batches, byte for byte, from each requested
//! partition's fetch offset, bounded by the partition and request byte
//! limits (at least one batch, per KIP-74). When less than `min_bytes` is
//! available the request waits (long poll) until enough is appended or
//! `max_wait_ms` passes. A READ_COMMITTED fetch stops at the last stable
//! offset and lists the aborted transactions of what it returns. Fetch sessions (KIP-227) are not kept: every
//! response is a full one with session id 0, which clients accept.

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use tokio::time::Instant;

use kafka_protocol::ResponseError;

use super::{Broker, RequestContext, error_code};
use crate::log::{LogError, Partition};

/// Longest long poll honoured (a client asking for more waits this long).
const MAX_WAIT: Duration = Duration::from_secs(30);

pub async fn handle(broker: &Broker, req: FetchRequest, ctx: &RequestContext) -> FetchResponse {
    let v = ctx.api_version;
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    // READ_COMMITTED (1): never past the last stable offset, with the
    // aborted transactions of the range for the client to drop.
    let committed = req.isolation_level == 1;
    let max_bytes = if v >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    // Resolve partitions once; unknown ones answer with an error each time.
    let targets: Vec<(usize, Vec<Target>)> =
        req.topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let topic = broker.log().topic(&t.topic.0);
                let allowed = broker.may(ctx, crate::auth::Privilege::Select, &t.topic.0);
                let parts =
                    t.partitions
                        .iter()
                        .map(|p| {
                            let part = if allowed {
                                topic.as_ref().map_err(error_code).and_then(|t| {
                                    t.partition(p.partition).map_err(|e| error_code(&e))
                                })
                            } else {
                                Err(ResponseError::TopicAuthorizationFailed.code())
                            };
                            (
                                part,
                                p.fetch_offset,
                                p.partition_max_bytes.max(0) as usize,
                                p.partition,
                            )
                        })
                        .collect();
                (i, parts)
            })
            .collect();

    loop {
        // Register for wake-ups before reading, so an append between the
        // read and the wait is not missed.
        let mut waits: Vec<_> = targets
            .iter()
            .flat_map(|(_, ps)| ps.iter())
            .filter_map(|(p, _, _, _)| p.as_ref().ok())
            .map(|p| {
                let mut n = Box::pin(p.appended().notified());
                n.as_mut().enable();
                n
            })
            .collect();
        let (resp, bytes, had_error) = read_once(&req, &targets, max_bytes, v, committed);
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || had_error || now >= deadline || waits.is_empty() {
            fetched(bytes);
            return resp;
        }
        let any = select_all(waits.iter_mut().map(|w| w.as_mut()));
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            // Deadline: answer with whatever is there (usually nothing).
            let (resp, bytes, _) = read_once(&req, &targets, max_bytes, v, committed);
            fetched(bytes);
            return resp;
        }
    }
}

fn fetched(bytes: usize) {
    if let Some(m) = crate::metrics::metrics() {
        m.fetched_bytes.inc_by(bytes as u64);
    }
}

/// One requested partition: the partition (or the error code saying why
/// it cannot be read), fetch offset, partition byte limit, partition index.
type Target = (Result<Arc<Partition>, i16>, i64, usize, i32);
type Targets = [(usize, Vec<Target>)];

fn read_once(
    req: &FetchRequest,
    targets: &Targets,
    max_bytes: usize,
    v: i16,
    committed: bool,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut had_error = false;
    let mut topics = Vec::with_capacity(targets.len());
    for (ti, parts) in targets {
        let mut out = Vec::with_capacity(parts.len());
        for (part, offset, pmax, index) in parts {
            let mut d = PartitionData::default()
                .with_partition_index(*index)
                .with_high_watermark(-1);
            if v >= 4 {
                d.last_stable_offset = -1;
                d.aborted_transactions = Some(vec![]);
            }
            if v >= 5 {
                d.log_start_offset = -1;
            }
            if v >= 11 {
                d.preferred_read_replica = BrokerId(-1);
            }
            match part {
                Err(code) => {
                    d.error_code = *code;
                    had_error = true;
                }
                Ok(p) => {
                    // The request-wide budget still allows one batch for the
                    // first partition with data, however large (KIP-74).
                    let budget = if total == 0 {
                        *pmax
                    } else {
                        (*pmax).min(max_bytes.saturating_sub(total))
                    };
                    let read = |max| {
                        if committed {
                            p.read_committed(*offset, max)
                        } else {
                            p.read(*offset, max)
                        }
                    };
                    let result = if budget == 0 {
                        // Request budget spent: report positions, no data.
                        read(1).map(|mut r| {
                            r.records = bytes::Bytes::new();
                            r.aborted.clear();
                            r
                        })
                    } else {
                        read(budget)
                    };
                    match result {
                        Ok(r) => {
                            d.high_watermark = r.high_watermark;
                            if v >= 4 {
                                d.last_stable_offset = r.last_stable;
                                d.aborted_transactions = Some(
                                    r.aborted
                                        .iter()
                                        .map(|a| {
                                            AbortedTransaction::default()
                                                .with_producer_id(ProducerId(a.producer_id))
                                                .with_first_offset(a.first_offset)
                                        })
                                        .collect(),
                                );
                            }
                            if v >= 5 {
                                d.log_start_offset = r.log_start;
                            }
                            total += r.records.len();
                            d.records = Some(r.records);
                        }
                        Err(e) => {
                            d.error_code = error_code(&e);
                            if let LogError::OffsetOutOfRange {
                                log_start, log_end, ..
                            } = e
                            {
                                d.high_watermark = log_end;
                                if v >= 4 {
                                    d.last_stable_offset = log_end;
                                }
                                if v >= 5 {
                                    d.log_start_offset = log_start;
                                }
                            }
                            d.records = Some(bytes::Bytes::new());
                            had_error = true;
                        }
                    }
                }
            }
            out.push(d);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(req.topics[*ti].topic.clone())
                .with_partitions(out),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        had_error,
    )
}
