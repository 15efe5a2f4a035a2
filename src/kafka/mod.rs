//! The Kafka wire protocol over the log: what kcat, librdkafka
//! (confluent-kafka), kafka-python, quixstreams and the Java client speak.
//!
//! This module does no socket I/O: `server::kafka` reads length-prefixed
//! frames and hands each to [`Broker::handle_frame`], which decodes the
//! request header and body with the `kafka-protocol` crate, dispatches to one
//! file per API, and returns the encoded response frame (or nothing, for
//! produce with acks=0). Kafka-level failures are error codes inside the
//! responses; only a frame that cannot be understood at all is a
//! [`FrameError`], on which the server closes that one connection.
//!
//! Requests of one connection are handled one at a time, in order, as the
//! Kafka broker does (it mutes a connection until its response is sent).

mod alter_configs;
mod api_versions;
pub mod coordinator;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_configs;
mod describe_producers;
mod fetch;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
mod sasl;
pub mod transactions;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::log::{Log, LogError};

pub use coordinator::Coordinator;
pub use sasl::{Sasl, Session};
pub use transactions::Transactions;

/// Settings of the Kafka listener that responses reveal to clients.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's node id (there is one node).
    pub node_id: i32,
    /// Host and port clients are told to connect to (Metadata,
    /// FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
    /// Create unknown topics on Metadata/Produce when the client allows it
    /// (Kafka's `auto.create.topics.enable`, default true).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics (Kafka's `num.partitions`).
    pub default_partitions: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            cluster_id: "eddy".into(),
            auto_create_topics: true,
            default_partitions: 1,
        }
    }
}

/// Who sent a request (for group membership and logs).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub client_id: String,
    pub client_host: String,
    pub api_version: i16,
    /// The role the connection authenticated as (None without SASL).
    pub principal: Option<crate::auth::Role>,
}

/// A frame that cannot be answered: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short for a request header ({0} bytes)")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} before SASL authentication")]
    Unauthenticated { api: ApiKey },
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("could not decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("could not encode the {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// The versions eddy serves: the ranges the current clients negotiate,
/// capped where a newer version changes semantics eddy does not implement
/// (topic ids in Fetch v13+/Produce v13, the KIP-848 group protocol).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    // Transactions (KIP-98). AddPartitionsToTxn v4+ batches transactions
    // for brokers and EndTxn v5 bumps the epoch per transaction (KIP-890);
    // clients fall back to these.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    // Clients pick v1 (then SaslAuthenticate); librdkafka 2.0 requires v0
    // in the range. A v0 handshake (tokens without Kafka framing next) is
    // refused in `sasl.rs`.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

fn supported(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, lo, hi)| *k == api && (*lo..=*hi).contains(&version))
}

/// The Kafka protocol front of the log.
pub struct Broker {
    log: Arc<Log>,
    config: BrokerConfig,
    groups: Coordinator,
    transactions: Transactions,
    next_producer_id: AtomicI64,
    sasl: Sasl,
    /// Told of every successful produce (the engine ticks on it).
    arrivals: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker(node {})", self.config.node_id)
    }
}

/// Map a log error to the Kafka error code a client understands.
pub fn error_code(e: &LogError) -> i16 {
    let err = match e {
        LogError::UnknownTopic(_) | LogError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        LogError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        LogError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        LogError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        LogError::InvalidConfig { .. } | LogError::UnknownConfig(_) => ResponseError::InvalidConfig,
        LogError::InvalidBatch(_) => ResponseError::CorruptMessage,
        LogError::MissingKey { .. } => ResponseError::InvalidRecord,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::Poisoned { .. } | LogError::Damaged { .. } | LogError::Closed => {
            ResponseError::KafkaStorageError
        }
        LogError::Io { .. } | LogError::Corrupt { .. } | LogError::CorruptMetadata { .. } => {
            ResponseError::KafkaStorageError
        }
        LogError::Locked { .. } | LogError::Upstream(_) => ResponseError::UnknownServerError,
    };
    err.code()
}

/// eddy's own topics (`__eddy_catalog`, `__consumer_offsets`, tables'
/// changelogs `__table_…`): readable by Kafka clients, written only by the
/// server itself, as Kafka protects its own. Produce, CreatePartitions and
/// CreateTopics naming one get TOPIC_AUTHORIZATION_FAILED.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

pub(crate) const INTERNAL_REFUSED: &str = "topics whose names start with __ are eddy's internal topics: Kafka clients may read them, only the server writes them";

pub(crate) const ADMIN_REFUSED: &str =
    "only a superuser role may create, delete or reconfigure topics";

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Broker {
    pub fn new(log: Arc<Log>, config: BrokerConfig, sasl: Sasl) -> Arc<Broker> {
        // Producer ids must never repeat across restarts: start above any id
        // the log has seen, and above the clock so ids from a wiped log do
        // not collide with ones clients still hold.
        let max_seen = log
            .topic_names()
            .iter()
            .filter_map(|t| log.topic(t).ok())
            .flat_map(|t| t.partitions())
            .flat_map(|p| p.producer_epochs().into_keys())
            .max()
            .unwrap_or(0);
        let transactions = Transactions::open(Arc::clone(&log));
        let start = max_seen
            .max(transactions.max_producer_id())
            .max(crate::log::now_ms())
            + 1;
        Arc::new(Broker {
            groups: Coordinator::new(Arc::clone(&log)),
            transactions,
            log,
            config,
            next_producer_id: AtomicI64::new(start),
            sasl,
            arrivals: std::sync::OnceLock::new(),
        })
    }

    /// Signal `n` after every produce that appended records (the engine's
    /// dataflows tick on it rather than waiting for their timer).
    pub fn notify_arrivals(&self, n: Arc<tokio::sync::Notify>) {
        let _ = self.arrivals.set(n);
    }

    /// Records were appended by a produce.
    pub(crate) fn arrived(&self) {
        if let Some(n) = self.arrivals.get() {
            n.notify_one();
        }
    }

    /// Whether the request's principal may use `topic` for `privilege`.
    pub(crate) fn may(
        &self,
        ctx: &RequestContext,
        privilege: crate::auth::Privilege,
        topic: &str,
    ) -> bool {
        self.sasl.may(ctx.principal.as_ref(), privilege, topic)
    }

    /// Whether the request's principal may create, delete or reconfigure
    /// topics.
    pub(crate) fn may_administer(&self, ctx: &RequestContext) -> bool {
        self.sasl.may_administer(ctx.principal.as_ref())
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn groups(&self) -> &Coordinator {
        &self.groups
    }

    pub fn transactions(&self) -> &Transactions {
        &self.transactions
    }

    fn allocate_producer_id(&self) -> i64 {
        self.next_producer_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Handle one request frame (without its 4-byte length prefix). Returns
    /// the response frame including its length prefix, or `None` when the
    /// request gets no response (produce with acks=0).
    pub async fn handle_frame(
        &self,
        mut frame: Bytes,
        client_host: &str,
        session: &mut Session,
    ) -> Result<Option<BytesMut>, FrameError> {
        if frame.len() < 8 {
            return Err(FrameError::Short(frame.len()));
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApi(key))?;
        let started = std::time::Instant::now();

        if api == ApiKey::ApiVersions && !supported(api, version) {
            // A client newer than us: Kafka answers with a v0 response
            // carrying UNSUPPORTED_VERSION and the versions it does support,
            // so the client can retry with one of them.
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let body = api_versions::unsupported();
            return encode_response(api, 0, correlation_id, ResponseKind::ApiVersions(body))
                .map(Some);
        }
        if !supported(api, version) {
            return Err(FrameError::UnsupportedVersion { api, version });
        }
        if !self.sasl.admits(session, api) {
            return Err(FrameError::Unauthenticated { api });
        }
        let header_version = api.request_header_version(version);
        let header =
            RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::Decode {
                api,
                version,
                reason: e.to_string(),
            })?;
        let request =
            RequestKind::decode(api, &mut frame, version).map_err(|e| FrameError::Decode {
                api,
                version,
                reason: e.to_string(),
            })?;
        let ctx = RequestContext {
            client_id: header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            client_host: client_host.to_string(),
            api_version: version,
            principal: session.principal().cloned(),
        };
        let response = match request {
            RequestKind::ApiVersions(r) => {
                Some(ResponseKind::ApiVersions(api_versions::handle(r, &ctx)))
            }
            RequestKind::SaslHandshake(r) => Some(ResponseKind::SaslHandshake(
                self.sasl.handshake(session, r, version),
            )),
            RequestKind::SaslAuthenticate(r) => Some(ResponseKind::SaslAuthenticate(
                self.sasl.authenticate(session, r),
            )),
            RequestKind::Metadata(r) => {
                Some(ResponseKind::Metadata(metadata::handle(self, r, &ctx)))
            }
            RequestKind::Produce(r) => produce::handle(self, r, &ctx)
                .await
                .map(ResponseKind::Produce),
            RequestKind::Fetch(r) => Some(ResponseKind::Fetch(fetch::handle(self, r, &ctx).await)),
            RequestKind::ListOffsets(r) => Some(ResponseKind::ListOffsets(list_offsets::handle(
                self, r, &ctx,
            ))),
            RequestKind::CreateTopics(r) => Some(ResponseKind::CreateTopics(
                create_topics::handle(self, r, &ctx),
            )),
            RequestKind::DescribeCluster(r) => Some(ResponseKind::DescribeCluster(
                metadata::describe_cluster(self, r),
            )),
            RequestKind::DescribeProducers(r) => Some(ResponseKind::DescribeProducers(
                describe_producers::handle(self, r, &ctx),
            )),
            RequestKind::DeleteRecords(r) => Some(ResponseKind::DeleteRecords(
                delete_records::handle(self, r, &ctx),
            )),
            RequestKind::DeleteTopics(r) => Some(ResponseKind::DeleteTopics(
                delete_topics::handle(self, r, &ctx),
            )),
            RequestKind::CreatePartitions(r) => Some(ResponseKind::CreatePartitions(
                create_partitions::handle(self, r, &ctx),
            )),
            RequestKind::DescribeConfigs(r) => Some(ResponseKind::DescribeConfigs(
                describe_configs::handle(self, r, &ctx),
            )),
            RequestKind::AlterConfigs(r) => Some(ResponseKind::AlterConfigs(
                alter_configs::replace(self, r, &ctx),
            )),
            RequestKind::IncrementalAlterConfigs(r) => Some(ResponseKind::IncrementalAlterConfigs(
                alter_configs::incremental(self, r, &ctx),
            )),
            RequestKind::InitProducerId(r) => Some(ResponseKind::InitProducerId(
                init_producer_id::handle(self, r, &ctx),
            )),
            RequestKind::AddPartitionsToTxn(r) => Some(ResponseKind::AddPartitionsToTxn(
                transactions::add_partitions(self, r, &ctx),
            )),
            RequestKind::AddOffsetsToTxn(r) => Some(ResponseKind::AddOffsetsToTxn(
                transactions::add_offsets(self, r, &ctx),
            )),
            RequestKind::TxnOffsetCommit(r) => Some(ResponseKind::TxnOffsetCommit(
                transactions::txn_offset_commit(self, r, &ctx),
            )),
            RequestKind::EndTxn(r) => {
                Some(ResponseKind::EndTxn(transactions::end_txn(self, r, &ctx)))
            }
            RequestKind::FindCoordinator(r) => Some(ResponseKind::FindCoordinator(
                self.groups.find_coordinator(&self.config, r, &ctx),
            )),
            RequestKind::JoinGroup(r) => Some(ResponseKind::JoinGroup(
                self.groups.join_group(r, &ctx).await,
            )),
            RequestKind::SyncGroup(r) => Some(ResponseKind::SyncGroup(
                self.groups.sync_group(r, &ctx).await,
            )),
            RequestKind::Heartbeat(r) => {
                Some(ResponseKind::Heartbeat(self.groups.heartbeat(r, &ctx)))
            }
            RequestKind::LeaveGroup(r) => {
                Some(ResponseKind::LeaveGroup(self.groups.leave_group(r, &ctx)))
            }
            RequestKind::OffsetCommit(r) => Some(ResponseKind::OffsetCommit(
                self.groups.offset_commit(r, &ctx),
            )),
            RequestKind::OffsetFetch(r) => {
                Some(ResponseKind::OffsetFetch(self.groups.offset_fetch(r, &ctx)))
            }
            RequestKind::ListGroups(r) => {
                Some(ResponseKind::ListGroups(self.groups.list_groups(r, &ctx)))
            }
            RequestKind::DescribeGroups(r) => Some(ResponseKind::DescribeGroups(
                self.groups.describe_groups(r, &ctx),
            )),
            RequestKind::DeleteGroups(r) => Some(ResponseKind::DeleteGroups(
                self.groups.delete_groups(r, &ctx),
            )),
            _ => return Err(FrameError::UnsupportedVersion { api, version }),
        };
        if let Some(m) = crate::metrics::metrics() {
            let name = format!("{api:?}");
            m.kafka_requests.with_label_values(&[&name]).inc();
            m.kafka_request_seconds
                .with_label_values(&[&name])
                .observe(started.elapsed().as_secs_f64());
        }
        match response {
            Some(body) => encode_response(api, version, header.correlation_id, body).map(Some),
            None => Ok(None),
        }
    }
}

/// Length prefix, response header, body.
fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
) -> Result<BytesMut, FrameError> {
    let enc_err = |e: anyhow::Error| FrameError::Encode {
        api,
        version,
        reason: e.to_string(),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(enc_err)?;
    body.encode(&mut buf, version).map_err(enc_err)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Read the 4-byte size prefix of a frame, if complete.
pub fn frame_len(buf: &[u8]) -> Option<i32> {
    if buf.len() < 4 {
        return None;
    }
    let mut b = buf;
    Some(b.get_i32())
}
