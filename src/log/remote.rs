//! An existing Kafka cluster (Apache Kafka, Redpanda, MSK, tansu, another
//! eddy) as a [`LogStore`], through librdkafka (the `rdkafka` crate).
//!
//! Reads and appends speak to the cluster; everything above the trait —
//! the dataflow readers and their checkpointed offsets, sinks reading back
//! what their topic holds, `INSERT` into a stream — works on it unchanged.
//! librdkafka is used rather than the `kafka-protocol` codec eddy serves
//! with because a client of a real cluster needs what a server does not:
//! partition leaders that move, several brokers, retries, SASL and TLS.
//!
//! - `read` keeps one consumer per partition, assigned (not subscribed: no
//!   group rebalances) at the offset asked for; each call returns what the
//!   consumer fetched from there, re-encoded as a RecordBatch v2 with the
//!   cluster's offsets, so [`super::Records`] walks it as a local read.
//!   Below the high watermark it waits for the first record (up to
//!   [`READ_WAIT`]), so a reader never takes "nothing yet" for the end.
//! - `append` decodes the batch and produces its records to the one
//!   partition, idempotently with `acks=all`, and waits for every delivery.
//! - `offsets` is the partition's watermarks, refreshed at most every
//!   [`OFFSETS_TTL`] (a dataflow asks at every tick).
//! - Consumer groups, config changes and partition growth stay with the
//!   cluster's own tools: those calls are refused or empty here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, TimestampType};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    AppendInfo, CommittedOffset, Durability, LogError, LogStore, ReadResult, Result, TopicInfo,
    batch,
};

/// How long a read below the high watermark waits for its first record.
pub const READ_WAIT: Duration = Duration::from_secs(10);
/// How long [`LogStore::exact_offsets`] waits for the record below the
/// high watermark (none comes where it is a transaction marker).
const EXACT_WAIT: Duration = Duration::from_secs(3);
/// How long a partition's watermarks are reused before being asked again.
pub const OFFSETS_TTL: Duration = Duration::from_millis(100);
/// How long a metadata request or a produce may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Consumers kept per partition; past it, the least recently used one is
/// moved.
const READERS_PER_PARTITION: usize = 4;
/// Records a caught-up reader found past the reported end, kept for
/// the read that follows.
const PENDING_MAX: usize = 10_000;

/// One partition's consumer.
struct Reader {
    consumer: BaseConsumer,
    /// The offset after the last record polled.
    next: i64,
    /// The offset after the last record handed to a read (records polled
    /// in between wait in `pending`).
    served: i64,
    pending: std::collections::VecDeque<Record>,
}

impl Reader {
    /// The consumer's next record (past `next`), as a RecordBatch record.
    fn poll(&mut self, wait: Duration) -> rdkafka::error::KafkaResult<Option<Record>> {
        loop {
            let Some(m) = self.consumer.poll(wait) else {
                return Ok(None);
            };
            let m = m?;
            if m.offset() < self.next {
                continue;
            }
            self.next = m.offset() + 1;
            let mut headers = kafka_protocol::indexmap::IndexMap::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers.insert(
                        h.key.to_string().into(),
                        h.value.map(Bytes::copy_from_slice),
                    );
                }
            }
            return Ok(Some(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: m.offset(),
                sequence: -1,
                timestamp: m.timestamp().to_millis().unwrap_or(-1),
                key: m.key().map(Bytes::copy_from_slice),
                value: m.payload().map(Bytes::copy_from_slice),
                headers,
            }));
        }
    }
}

/// A partition: (topic, partition).
type Part = (String, i32);

/// What [`RemoteLog::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Nothing accepts a connection at any broker address.
    Unreachable,
    /// Something listens but gave no cluster id (why).
    NoAnswer(String),
    Cluster(String),
}

/// An external Kafka cluster (see the module documentation).
pub struct RemoteLog {
    brokers: String,
    /// librdkafka properties given with the connection (`security.protocol`,
    /// `sasl.*`, `ssl.*`).
    properties: BTreeMap<String, String>,
    meta: BaseConsumer,
    producer: FutureProducer,
    /// A partition's consumers, one per reader position (several views
    /// reading one partition at different offsets), up to
    /// [`READERS_PER_PARTITION`].
    readers: Mutex<HashMap<Part, Vec<Arc<Mutex<Reader>>>>>,
    /// Watermarks asked, and when: (low, high).
    offsets: Mutex<HashMap<Part, (Instant, i64, i64)>>,
    /// The end each partition is known to reach at least: past what this
    /// process appended there (a broker's reported end may lag it).
    known: Mutex<HashMap<Part, i64>>,
    infos: Mutex<HashMap<String, (Instant, TopicInfo)>>,
}

fn upstream(brokers: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Upstream(format!("{brokers}: {e}"))
}

impl RemoteLog {
    /// Clients for the cluster at `brokers` (`host:port[,host:port…]`);
    /// nothing is asked of it until used.
    pub fn new(brokers: &str, properties: BTreeMap<String, String>) -> Result<RemoteLog> {
        let meta: BaseConsumer = client_config(brokers, &properties, CONSUMER)
            .create()
            .map_err(|e| upstream(brokers, e))?;
        let producer: FutureProducer = client_config(brokers, &properties, PRODUCER)
            .create()
            .map_err(|e| upstream(brokers, e))?;
        Ok(RemoteLog {
            brokers: brokers.to_string(),
            properties,
            meta,
            producer,
            readers: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            infos: Mutex::new(HashMap::new()),
        })
    }

    /// What the brokers at `brokers` say they are: [`Probe::Unreachable`]
    /// when no TCP connection opens (a port nothing listens on answers
    /// at once), else the cluster id they report within `timeout`.
    pub fn probe(brokers: &str, properties: &BTreeMap<String, String>, timeout: Duration) -> Probe {
        let reachable = brokers.split(',').any(|b| {
            use std::net::ToSocketAddrs;
            b.trim().to_socket_addrs().is_ok_and(|mut addrs| {
                addrs.any(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok())
            })
        });
        if !reachable {
            return Probe::Unreachable;
        }
        let c: BaseConsumer = match client_config(brokers, properties, CONSUMER).create() {
            Ok(c) => c,
            Err(e) => return Probe::NoAnswer(e.to_string()),
        };
        match c.client().fetch_cluster_id(timeout) {
            Some(id) => Probe::Cluster(id),
            None => Probe::NoAnswer(
                "no cluster id within the timeout (wrong security settings or credentials?)".into(),
            ),
        }
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        client_config(&self.brokers, &self.properties, &[])
            .create()
            .map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> LogError {
        upstream(&self.brokers, e)
    }

    fn reader(&self, topic: &str, partition: i32, offset: i64) -> Result<Arc<Mutex<Reader>>> {
        let mut readers = self.readers.lock().map_err(|_| LogError::Closed)?;
        let pool = readers.entry((topic.to_string(), partition)).or_default();
        // The one already at `offset` (moved to the back: most recently
        // used), else a new one, else the least recently used (the caller
        // moves it).
        let at = pool
            .iter()
            .position(|r| r.try_lock().is_ok_and(|r| r.served == offset));
        if let Some(i) = at.or((pool.len() >= READERS_PER_PARTITION).then_some(0)) {
            let r = pool.remove(i);
            pool.push(Arc::clone(&r));
            return Ok(r);
        }
        let consumer = self.consumer()?;
        assign(&consumer, topic, partition, offset).map_err(|e| self.err(e))?;
        let r = Arc::new(Mutex::new(Reader {
            consumer,
            next: offset,
            served: offset,
            pending: std::collections::VecDeque::new(),
        }));
        pool.push(Arc::clone(&r));
        Ok(r)
    }

    /// A consumer of its own (assigned, never subscribed).
    fn consumer(&self) -> Result<BaseConsumer> {
        client_config(&self.brokers, &self.properties, CONSUMER)
            .create()
            .map_err(|e| self.err(e))
    }

    fn watermarks(&self, topic: &str, partition: i32, fresh: bool) -> Result<(i64, i64)> {
        let key = (topic.to_string(), partition);
        if !fresh
            && let Some((at, low, high)) = self
                .offsets
                .lock()
                .map_err(|_| LogError::Closed)?
                .get(&key)
                .copied()
            && at.elapsed() < OFFSETS_TTL
        {
            return Ok((low, high));
        }
        let (low, high) = self
            .meta
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| match e.rdkafka_error_code() {
                Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    LogError::UnknownTopic(topic.to_string())
                }
                _ => self.err(e),
            })?;
        let high = high.max(
            self.known
                .lock()
                .map_err(|_| LogError::Closed)?
                .get(&key)
                .copied()
                .unwrap_or(0),
        );
        self.offsets
            .lock()
            .map_err(|_| LogError::Closed)?
            .insert(key, (Instant::now(), low, high));
        Ok((low, high))
    }
}

/// What eddy's consumers set: assigned, never committing, reading what
/// transactions committed.
const CONSUMER: &[(&str, &str)] = &[
    ("group.id", "eddy"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("isolation.level", "read_committed"),
    ("allow.auto.create.topics", "false"),
    ("enable.partition.eof", "false"),
];

/// What eddy's producer sets: every in-sync replica acknowledges, no
/// duplicate on a retry.
const PRODUCER: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "1"),
    ("message.timeout.ms", "30000"),
];

/// A client of `brokers`: eddy's `settings`, then the connection's
/// `properties` (SASL, TLS), which may override them.
fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    settings: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

fn assign(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> rdkafka::error::KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)
}

impl LogStore for RemoteLog {
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        let admin = self.admin()?;
        let mut new = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        for (k, v) in &config {
            new = new.set(k, v);
        }
        let results = futures::executor::block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
        ))
        .map_err(|e| self.err(e))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    return Err(LogError::TopicExists(name.to_string()));
                }
                Err((t, code)) => return Err(self.err(format!("creating topic {t}: {code}"))),
            }
        }
        // The cluster's metadata follows the creation a moment later.
        let until = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.topic_info(name) {
                Ok(info) if info.partitions == partitions => return Ok(info),
                _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let admin = self.admin()?;
        let results = futures::executor::block_on(admin.delete_topics(
            &[name],
            &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
        ))
        .map_err(|e| self.err(e))?;
        if let Ok(mut infos) = self.infos.lock() {
            infos.remove(name);
        }
        if let Ok(mut readers) = self.readers.lock() {
            readers.retain(|(t, _), _| t != name);
        }
        if let Ok(mut known) = self.known.lock() {
            known.retain(|(t, _), _| t != name);
        }
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(LogError::UnknownTopic(name.to_string()));
                }
                Err((t, code)) => return Err(self.err(format!("deleting topic {t}: {code}"))),
            }
        }
        Ok(())
    }

    fn topics(&self) -> Vec<TopicInfo> {
        let Ok(md) = self.meta.fetch_metadata(None, REQUEST_TIMEOUT) else {
            return Vec::new();
        };
        md.topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| TopicInfo {
                name: t.name().to_string(),
                partitions: t.partitions().len() as i32,
                overrides: BTreeMap::new(),
                internal: t.name().starts_with("__"),
                created_ms: 0,
            })
            .collect()
    }

    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        if let Some((at, info)) = self
            .infos
            .lock()
            .map_err(|_| LogError::Closed)?
            .get(name)
            .cloned()
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(info);
        }
        let md = self
            .meta
            .fetch_metadata(Some(name), REQUEST_TIMEOUT)
            .map_err(|e| self.err(e))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let info = TopicInfo {
            name: name.to_string(),
            partitions: t.partitions().len() as i32,
            overrides: BTreeMap::new(),
            internal: false,
            created_ms: 0,
        };
        self.infos
            .lock()
            .map_err(|_| LogError::Closed)?
            .insert(name.to_string(), (Instant::now(), info.clone()));
        Ok(info)
    }

    fn alter_topic_config(
        &self,
        name: &str,
        _changes: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        Err(self.err(format!(
            "topic {name} is on an external cluster: change its configuration with that cluster's tools"
        )))
    }

    fn create_partitions(&self, name: &str, _count: i32) -> Result<()> {
        Err(self.err(format!(
            "topic {name} is on an external cluster: add partitions with that cluster's tools"
        )))
    }

    fn append(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        _durability: Durability,
    ) -> Result<AppendInfo> {
        let records = batch::decode(batches.freeze())?;
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: v.as_deref(),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(partition)
                .headers(headers);
            if let Some(k) = r.key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = r.value.as_deref() {
                record = record.payload(v);
            }
            if r.timestamp >= 0 {
                record = record.timestamp(r.timestamp);
            }
            let d = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| self.err(e))?;
            deliveries.push(d);
        }
        let mut first = None;
        let mut last = -1;
        for d in deliveries {
            match futures::executor::block_on(d) {
                Ok(Ok(delivery)) => {
                    first.get_or_insert(delivery.offset);
                    last = last.max(delivery.offset);
                }
                Ok(Err((e, _))) => return Err(self.err(e)),
                Err(_) => return Err(self.err("the producer was closed")),
            }
        }
        let key = (topic.to_string(), partition);
        if let Ok(mut known) = self.known.lock() {
            let k = known.entry(key.clone()).or_default();
            *k = (*k).max(last + 1);
        }
        if let Ok(mut o) = self.offsets.lock() {
            o.remove(&key);
        }
        Ok(AppendInfo {
            base_offset: first.unwrap_or(-1),
            last_offset: last,
            log_append_time: -1,
            log_start: 0,
            duplicate: false,
        })
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let (low, high) = self.offsets(topic, partition)?;
        let empty = |low, high| ReadResult {
            records: Bytes::new(),
            log_start: low,
            high_watermark: high,
            last_stable: high,
            aborted: Vec::new(),
        };
        if offset >= high {
            return Ok(empty(low, high));
        }
        let offset = offset.max(low);
        let reader = self.reader(topic, partition, offset)?;
        let mut reader = reader.lock().map_err(|_| LogError::Closed)?;
        let reader = &mut *reader;
        if reader.served != offset {
            assign(&reader.consumer, topic, partition, offset).map_err(|e| self.err(e))?;
            reader.pending.clear();
            reader.next = offset;
            reader.served = offset;
        }
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0;
        let deadline = Instant::now() + READ_WAIT;
        while bytes < max_bytes.max(1) {
            let r = match reader.pending.pop_front() {
                Some(r) => r,
                None => {
                    let wait = match out.is_empty() {
                        true => deadline.saturating_duration_since(Instant::now()),
                        false => Duration::ZERO,
                    };
                    match reader.poll(wait).map_err(|e| self.err(e))? {
                        Some(r) => r,
                        None => break,
                    }
                }
            };
            bytes +=
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            reader.served = r.offset + 1;
            out.push(r);
            if Instant::now() >= deadline {
                break;
            }
        }
        if out.is_empty() {
            return Ok(empty(low, high));
        }
        let high = high.max(reader.next);
        Ok(ReadResult {
            records: batch::encode_records(&out)?.freeze(),
            log_start: low,
            high_watermark: high,
            last_stable: high,
            aborted: Vec::new(),
        })
    }

    /// The watermarks, the high one raised to what this partition's
    /// consumer has fetched: a caught-up reader looks (without waiting)
    /// for records past the reported end, as a broker may report it
    /// late (tansu 0.6's ListOffsets gives its last batch's base offset).
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let (low, high) = self.watermarks(topic, partition, false)?;
        let pool = self
            .readers
            .lock()
            .map_err(|_| LogError::Closed)?
            .get(&(topic.to_string(), partition))
            .cloned()
            .unwrap_or_default();
        let mut end = high;
        for reader in pool {
            // One busy in a read is passed over.
            let Ok(mut reader) = reader.try_lock() else {
                continue;
            };
            let reader = &mut *reader;
            if reader.served >= high.max(reader.next) {
                while reader.pending.len() < PENDING_MAX {
                    match reader.poll(Duration::ZERO).map_err(|e| self.err(e))? {
                        Some(r) => reader.pending.push_back(r),
                        None => break,
                    }
                }
            }
            end = end.max(reader.next);
        }
        Ok((low, end))
    }

    /// The watermarks asked now, the high one checked by reading the
    /// record below it: a broker that reports its last batch's base
    /// offset (tansu 0.6) has more past it, which a sink reading back its
    /// topic must see.
    fn exact_offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let (low, high) = self.watermarks(topic, partition, true)?;
        if high <= low {
            return Ok((low, high));
        }
        let c = self.consumer()?;
        assign(&c, topic, partition, high - 1).map_err(|e| self.err(e))?;
        let mut end = high;
        let mut wait = EXACT_WAIT;
        while let Some(m) = c.poll(wait) {
            let m = m.map_err(|e| self.err(e))?;
            end = end.max(m.offset() + 1);
            wait = Duration::ZERO;
        }
        Ok((low, end))
    }

    fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(timestamp))
            .map_err(|e| self.err(e))?;
        let found = self
            .meta
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(|e| self.err(e))?;
        Ok(found
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some((o, timestamp)),
                _ => None,
            }))
    }

    fn commit_offsets(
        &self,
        _group: &str,
        _offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        Err(self.err("eddy keeps its consumer groups in its own log"))
    }

    fn committed_offset(
        &self,
        _group: &str,
        _topic: &str,
        _partition: i32,
    ) -> Option<CommittedOffset> {
        None
    }

    fn group_offsets(&self, _group: &str) -> Vec<(String, i32, CommittedOffset)> {
        Vec::new()
    }

    fn groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// Appends are acknowledged by every in-sync replica (`acks=all`).
    fn sync_to(&self, _topic: &str, _partition: i32, _offset: i64) -> Result<()> {
        Ok(())
    }

    fn is_closed(&self) -> bool {
        false
    }
}
