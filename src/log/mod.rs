//! The durable, partitioned log: Kafka's model and Kafka's promises, on disk.
//!
//! Owns topics, partitions, segments, offsets, retention, compaction,
//! consumer-group offsets, idempotent producer state and crash recovery.
//! Bytes in (Kafka RecordBatch v2, exactly as the wire carries them), bytes
//! out. Knows nothing of SQL, Arrow or sockets.
//!
//! On disk, under the data directory:
//!
//! ```text
//! .lock                     exclusive lock: one eddy per data directory
//! .clean-shutdown           present only between a clean close and the next open
//! topics/<name>/topic.json  partition count and config overrides
//! topics/<name>/<p>/        one partition: <base:020>.log/.index/.timeindex,
//!                           <offset:020>.snapshot (producer state), recovery-point
//! ```
//!
//! [`LogStore`] is the interface the rest of eddy uses, so a second
//! implementation backed by an external Kafka cluster can replace [`Log`]
//! without touching callers.

pub mod batch;
pub mod cleaner;
pub mod config;
pub mod damage;
pub mod error;
pub mod index;
pub mod offsets;
pub mod partition;
pub mod partitioner;
pub mod producer;
pub mod remote;
pub mod repair;
pub mod routed;
pub mod segment;
pub mod topic;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use tracing::{info, warn};

pub use config::TopicConfig;
pub use damage::{Action, Damage};
pub use error::{LogError, Result};
pub use offsets::CommittedOffset;
pub use partition::{Partition, Records};
pub use topic::Topic;

use damage::DamageLog;
use error::IoContext;
use index::sync_dir;
use offsets::OffsetStore;

/// How durable an append must be before it returns (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// acks=0. The log still writes before returning; the protocol layer
    /// simply does not wait for or send a reply.
    None,
    /// acks=1: the batch has reached the OS (survives a process crash).
    Os,
    /// acks=all: the batch is fsynced (survives a machine crash). On one node
    /// the local disk is the whole in-sync replica set.
    Fsync,
}

impl Durability {
    pub fn from_acks(acks: i16) -> Durability {
        match acks {
            0 => Durability::None,
            1 => Durability::Os,
            _ => Durability::Fsync,
        }
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1
    /// (as Kafka's ProduceResponse reports it).
    pub log_append_time: i64,
    pub log_start: i64,
    /// The batch was a retry of one already written (idempotent producer);
    /// the offsets are the original ones.
    pub duplicate: bool,
}

/// Result of a read: whole record batches, stored bytes unchanged.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: bytes::Bytes,
    pub log_start: i64,
    pub high_watermark: i64,
    /// The last stable offset (see [`Partition::stable_end`]).
    pub last_stable: i64,
    /// Aborted transactions with records in the range read (filled by
    /// read_committed reads only): their records are to be dropped.
    pub aborted: Vec<producer::AbortedTxn>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Summary of a topic for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
    pub internal: bool,
    /// When this incarnation of the topic was created (ms since the
    /// epoch): a topic dropped and created again under the same name has
    /// another, so a reader's saved offsets are known not to apply.
    pub created_ms: i64,
}

/// The log as the rest of eddy sees it.
pub trait LogStore: Send + Sync {
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicInfo>;
    fn delete_topic(&self, name: &str) -> Result<()>;
    fn topics(&self) -> Vec<TopicInfo>;
    fn topic_info(&self, name: &str) -> Result<TopicInfo>;
    fn alter_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<()>;
    fn create_partitions(&self, name: &str, count: i32) -> Result<()>;
    fn append(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<AppendInfo>;
    /// Whole batches from `offset`, as a read_committed Kafka consumer
    /// sees them: never past the last stable offset, with the aborted
    /// transactions of the range in [`ReadResult::aborted`] (the
    /// [`Records`] loop drops their records).
    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult>;
    /// (log start offset, last stable offset): the end eddy's readers read
    /// to. With no Kafka transaction open it is the log end.
    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)>;
    /// [`LogStore::offsets`] exactly as of now, for a reader that must
    /// see everything written before it asked (a sink reading back its
    /// topic): a store whose `offsets` may lag (an external cluster's
    /// cached watermarks) asks again.
    fn exact_offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.offsets(topic, partition)
    }
    fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>>;
    fn commit_offsets(&self, group: &str, offsets: &[(String, i32, CommittedOffset)])
    -> Result<()>;
    fn committed_offset(&self, group: &str, topic: &str, partition: i32)
    -> Option<CommittedOffset>;
    fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)>;
    fn groups(&self) -> Vec<String>;
    /// Make every record below `offset` durable (a checkpoint about to
    /// name that offset calls it first). A store whose appends are durable
    /// when acknowledged has nothing to do.
    fn sync_to(&self, topic: &str, partition: i32, offset: i64) -> Result<()>;
    /// The store was closed: background work over it stops.
    fn is_closed(&self) -> bool;
    /// Bytes and segments a partition holds on local disk, where the store
    /// keeps it there.
    /// Damage found in the store's files (reported in
    /// `eddy_catalog.log_damage`); stores without local files have none.
    fn damage(&self) -> Vec<Damage> {
        Vec::new()
    }
    fn disk_usage(&self, _topic: &str, _partition: i32) -> Option<(u64, usize)> {
        None
    }
}

/// Open a compacted keyed topic of eddy's own (creating it, one
/// partition, `cleanup.policy=compact`, if missing) and replay it in
/// order: `apply(key, offset, value)` for every keyed record, `None` for a
/// tombstone. The catalog and the roles are kept this way.
pub fn replay_keyed(
    log: &dyn LogStore,
    topic: &str,
    mut apply: impl FnMut(String, i64, Option<&[u8]>),
) -> Result<()> {
    if log.topic_info(topic).is_err() {
        let mut cfg = std::collections::BTreeMap::new();
        cfg.insert("cleanup.policy".to_string(), "compact".to_string());
        match log.create_topic(topic, 1, cfg) {
            Ok(_) | Err(LogError::TopicExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let (start, end) = log.exact_offsets(topic, 0)?;
    for records in records(log, topic, 0, start, end, 1 << 20) {
        for r in records? {
            if let Some(key) = r.key.as_deref() {
                apply(
                    String::from_utf8_lossy(key).to_string(),
                    r.offset,
                    r.value.as_deref(),
                );
            }
        }
    }
    Ok(())
}

/// The records of `topic`/`partition` in `[from, to)` (`from` raised to
/// the log start) through any [`LogStore`], decoded one fetch of up to
/// `fetch_bytes` at a time.
pub fn records<'a>(
    log: &'a dyn LogStore,
    topic: &'a str,
    partition: i32,
    from: i64,
    to: i64,
    fetch_bytes: usize,
) -> Records<'a> {
    let start = log.offsets(topic, partition).map_or(from, |(s, _)| s);
    Records::new(
        Box::new(move |offset, max| log.read(topic, partition, offset, max)),
        from.max(start),
        to,
        fetch_bytes,
    )
}

/// Options for opening a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// How often the background cleaner applies retention and compaction
    /// (Kafka's `log.retention.check.interval.ms`, default 5 minutes).
    /// `None`: no background cleaner (offline tools run it explicitly).
    pub cleaner_interval: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            cleaner_interval: Some(Duration::from_secs(300)),
        }
    }
}

pub(crate) const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
const LOCK: &str = ".lock";

/// Take the data directory's lock (one eddy, or one offline tool, at a
/// time), creating the directory if needed. Held until the file is dropped;
/// the OS releases it if the process dies.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).at(dir)?;
    let lock_path = dir.join(LOCK);
    let mut lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LogError::Locked {
                path: dir.to_path_buf(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).at(&lock_path),
    }
    lock.set_len(0).at(&lock_path)?;
    writeln!(lock, "{}", std::process::id()).at(&lock_path)?;
    Ok(lock)
}

/// The built-in log over a data directory.
pub struct Log {
    dir: PathBuf,
    topics_dir: PathBuf,
    /// Held open until `close` (or drop): the OS releases the lock if the
    /// process dies, so a crash never leaves the directory locked.
    lock: Mutex<Option<File>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    offsets: OffsetStore,
    cleaner_state: Mutex<cleaner::CleanerState>,
    cleaner_stop: Arc<(Mutex<bool>, Condvar)>,
    cleaner: Mutex<Option<JoinHandle<()>>>,
    closed: Mutex<bool>,
    /// Damage found by recovery and reads since open (`damage.rs`).
    damage: Arc<DamageLog>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Log({})", self.dir.display())
    }
}

impl Log {
    /// Open (creating if needed) the log in `dir`, recovering after a crash.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Arc<Log>> {
        let dir = dir.as_ref().to_path_buf();
        let lock = lock_dir(&dir)?;

        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        if clean {
            // From here on a crash is unclean again.
            fs::remove_file(&marker).at(&marker)?;
            sync_dir(&dir)?;
        } else {
            info!(dir = %dir.display(), "no clean-shutdown marker: recovering");
        }

        let topics_dir = dir.join("topics");
        fs::create_dir_all(&topics_dir).at(&topics_dir)?;
        let damage = Arc::new(DamageLog::default());
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&topics_dir).at(&topics_dir)? {
            let entry = entry.at(&topics_dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with(".tmp-") || name.starts_with(".deleted-") {
                // An interrupted create (never published) or delete.
                fs::remove_dir_all(&path).at(&path)?;
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            if fs::read_dir(&path).at(&path)?.next().is_none() {
                // Nothing in it to open or to salvage.
                fs::remove_dir(&path).at(&path)?;
                continue;
            }
            if let Some(topic) = Topic::open(&path, clean, &damage)? {
                topics.insert(topic.name().to_string(), Arc::new(topic));
            }
        }
        if !topics.contains_key(offsets::TOPIC) {
            let mut cfg = BTreeMap::new();
            cfg.insert("cleanup.policy".to_string(), "compact".to_string());
            cfg.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
            let t = Topic::create(&topics_dir, offsets::TOPIC, 1, cfg, now_ms(), &damage)?;
            topics.insert(offsets::TOPIC.to_string(), Arc::new(t));
        }
        let offsets_partition = topics
            .get(offsets::TOPIC)
            .ok_or(LogError::UnknownTopic(offsets::TOPIC.into()))?
            .partition(0)?;
        let offsets = OffsetStore::load(offsets_partition)?;

        let log = Arc::new(Log {
            dir,
            topics_dir,
            lock: Mutex::new(Some(lock)),
            topics: RwLock::new(topics),
            offsets,
            cleaner_state: Mutex::new(cleaner::CleanerState::default()),
            cleaner_stop: Arc::new((Mutex::new(false), Condvar::new())),
            cleaner: Mutex::new(None),
            closed: Mutex::new(false),
            damage,
        });
        if let Some(every) = options.cleaner_interval {
            log.start_cleaner(every);
        }
        Ok(log)
    }

    fn start_cleaner(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Log> = Arc::downgrade(self);
        let stop = Arc::clone(&self.cleaner_stop);
        let handle = std::thread::Builder::new()
            .name("eddy-log-cleaner".into())
            .spawn(move || {
                loop {
                    {
                        let (lock, cv) = &*stop;
                        let Ok(guard) = lock.lock() else { return };
                        let Ok((guard, _)) = cv.wait_timeout_while(guard, every, |s| !*s) else {
                            return;
                        };
                        if *guard {
                            return;
                        }
                    }
                    let Some(log) = weak.upgrade() else { return };
                    if let Err(e) = log.clean_now() {
                        warn!(error = %e, "log cleaner pass failed");
                    }
                }
            });
        match handle {
            Ok(h) => {
                if let Ok(mut slot) = self.cleaner.lock() {
                    *slot = Some(h);
                }
            }
            Err(e) => warn!(error = %e, "could not start the log cleaner thread"),
        }
    }

    /// Run one retention + compaction pass over every topic now.
    pub fn clean_now(&self) -> Result<cleaner::CleanerStats> {
        let topics: Vec<Arc<Topic>> = self.topic_list();
        let mut state = self.cleaner_state.lock().map_err(|_| LogError::Closed)?;
        cleaner::run_once(&topics, &mut state, now_ms())
    }

    /// Damage found in the log's files since it was opened (by recovery,
    /// or by reads in segments that recovery trusted), oldest first.
    pub fn damage(&self) -> Vec<Damage> {
        self.damage.snapshot()
    }

    /// Whether [`Log::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.closed.lock().map(|c| *c).unwrap_or(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn topic_list(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Names of all topics, internal ones included.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .map_err(|_| LogError::Closed)?
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition)
    }

    pub fn offset_store(&self) -> &OffsetStore {
        &self.offsets
    }

    fn info(t: &Topic) -> TopicInfo {
        TopicInfo {
            name: t.name().to_string(),
            partitions: t.partition_count(),
            overrides: t.overrides(),
            internal: t.name().starts_with("__"),
            created_ms: t.created_ms(),
        }
    }

    /// Flush everything, persist indexes, snapshots and recovery points, and
    /// leave the clean-shutdown marker so the next open skips the scan.
    pub fn close(&self) -> Result<()> {
        let mut closed = self.closed.lock().map_err(|_| LogError::Closed)?;
        if *closed {
            return Ok(());
        }
        {
            let (lock, cv) = &*self.cleaner_stop;
            if let Ok(mut s) = lock.lock() {
                *s = true;
            }
            cv.notify_all();
        }
        if let Some(h) = self.cleaner.lock().ok().and_then(|mut h| h.take())
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
        for t in self.topic_list() {
            t.close()?;
        }
        let marker = self.dir.join(CLEAN_SHUTDOWN);
        File::create(&marker).at(&marker)?.sync_all().at(&marker)?;
        // The marker must be durable, or the next start scans needlessly
        // (harmless) — but it must never appear before the data above is
        // synced, which the order of these calls guarantees.
        sync_dir(&self.dir)?;
        *closed = true;
        // Release the directory now rather than when the last reference
        // goes: a restart in the same process must be able to open it.
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
        Ok(())
    }
}

impl LogStore for Log {
    fn damage(&self) -> Vec<Damage> {
        Log::damage(self)
    }
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: BTreeMap<String, String>,
    ) -> Result<TopicInfo> {
        let mut topics = self.topics.write().map_err(|_| LogError::Closed)?;
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let t = Topic::create(
            &self.topics_dir,
            name,
            partitions,
            config,
            now_ms(),
            &self.damage,
        )?;
        let info = Self::info(&t);
        topics.insert(name.to_string(), Arc::new(t));
        Ok(info)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        if name == offsets::TOPIC {
            return Err(LogError::InvalidTopicName {
                name: name.into(),
                reason: "internal topics cannot be deleted".into(),
            });
        }
        let t = {
            let mut topics = self.topics.write().map_err(|_| LogError::Closed)?;
            topics
                .remove(name)
                .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?
        };
        let doomed = self
            .topics_dir
            .join(format!(".deleted-{name}-{}", now_ms()));
        // The rename is the deletion: once durable, the topic is gone even
        // if removing the files is interrupted (open finishes the job).
        fs::rename(t.dir(), &doomed).at(&doomed)?;
        sync_dir(&self.topics_dir)?;
        fs::remove_dir_all(&doomed).at(&doomed)?;
        self.offsets.delete_topic(name)?;
        Ok(())
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.topic_list().iter().map(|t| Self::info(t)).collect()
    }

    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        Ok(Self::info(&*self.topic(name)?))
    }

    fn alter_topic_config(
        &self,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        self.topic(name)?.alter_config(changes)
    }

    fn create_partitions(&self, name: &str, count: i32) -> Result<()> {
        self.topic(name)?.create_partitions(count)
    }

    fn append(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
        durability: Durability,
    ) -> Result<AppendInfo> {
        self.partition(topic, partition)?
            .append(batches, durability)
    }

    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.partition(topic, partition)?
            .read_committed(offset, max_bytes)
    }

    fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let p = self.partition(topic, partition)?;
        Ok((p.log_start(), p.stable_end()))
    }

    fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.partition(topic, partition)?
            .offset_for_timestamp(timestamp)
    }

    fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, CommittedOffset)],
    ) -> Result<()> {
        self.offsets.commit(group, offsets)
    }

    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.offsets.fetch(group, topic, partition)
    }

    fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.offsets.group(group)
    }

    fn groups(&self) -> Vec<String> {
        self.offsets.groups()
    }

    fn sync_to(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        self.partition(topic, partition)?.sync_to(offset)
    }

    fn is_closed(&self) -> bool {
        Log::is_closed(self)
    }

    fn disk_usage(&self, topic: &str, partition: i32) -> Option<(u64, usize)> {
        let p = self.partition(topic, partition).ok()?;
        Some((p.size_bytes(), p.segment_count()))
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Stop the cleaner thread; data is not flushed here (call `close`
        // for a clean shutdown), so a dropped log recovers like a crash.
        let (lock, cv) = &*self.cleaner_stop;
        if let Ok(mut s) = lock.lock() {
            *s = true;
        }
        cv.notify_all();
    }
}
