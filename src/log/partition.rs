//! A partition: an ordered list of segments, one appender at a time, any
//! number of concurrent readers, group-committed fsyncs, and recovery.
//!
//! (About 1,430 lines, 160 of them tests: one type whose three locks, the
//! recovery that sets its end and the reads that may fence it must be
//! read together to check the invariants below.)
//!
//! Locks, in the order they may be taken:
//! 1. `writer` (Mutex): one append or roll at a time. Offsets are assigned
//!    under it, so they are dense and in file order.
//! 2. `segments` (RwLock): the segment list. Readers hold it only long enough
//!    to clone an `Arc<Segment>`; appends take it for writing only to push a
//!    new segment at a roll; the cleaner takes it to drop or swap segments.
//! 3. `sync_lock` (Mutex): at most one fsync in flight per partition; appenders
//!    that arrive while one runs wait and usually find their data already
//!    covered by it (group commit).
//!
//! `end` is the log end offset published to readers, advanced only after the
//! batch is completely written, so a reader never sees a partial batch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use tracing::info;

use super::batch::{self, BatchHeader};
use super::config::{TimestampKind, TopicConfig};
use super::damage::{Action, Damage, DamageLog};
use super::error::{IoContext, LogError, Result};
use super::index::{sync_dir, write_atomic};
use super::producer::{AbortedTxn, Check, ProducerStates, Rejection};
use super::segment::{Segment, file_stem};
use super::{AppendInfo, Durability, ReadResult, now_ms};

pub(crate) const RECOVERY_POINT: &str = "recovery-point";

pub struct Partition {
    topic: String,
    id: i32,
    dir: PathBuf,
    config: Arc<RwLock<TopicConfig>>,
    writer: Mutex<ProducerStates>,
    segments: RwLock<Vec<Arc<Segment>>>,
    end: AtomicI64,
    synced: AtomicI64,
    sync_lock: Mutex<()>,
    poisoned: AtomicBool,
    /// Damage that makes the partition read-only (see `damage.rs`): set at
    /// open, cleared only by `eddy repair` (offline).
    fence: RwLock<Option<Damage>>,
    /// Where damage found at open or by a read is recorded.
    damage: Arc<DamageLog>,
    /// fsyncs issued (benchmarks and system tables report it).
    fsyncs: std::sync::atomic::AtomicU64,
    /// Wakes long-polling readers (Kafka Fetch with max_wait) after appends.
    appended: tokio::sync::Notify,
    /// The log start offset DeleteRecords moved, inside a segment (records
    /// below it are gone to readers); 0 when never moved. Persisted in
    /// `log-start-offset` before it is answered.
    start: AtomicI64,
    start_lock: Mutex<()>,
    /// First offset of the oldest open transaction (`i64::MAX`: none), so
    /// the last stable offset is read without the writer lock. Stored
    /// before `end` on every append, so a reader that loads `end` and then
    /// this never sees an uncommitted batch as stable.
    open_from: AtomicI64,
    /// The aborted transactions of the producer state, mirrored for readers.
    aborted: RwLock<Arc<Vec<AbortedTxn>>>,
}

/// The file holding a partition's log start offset once DeleteRecords
/// moved it (Kafka keeps it in `log-start-offset-checkpoint`).
const LOG_START_FILE: &str = "log-start-offset";

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.id)
    }
}

fn lock_err<T>(_: T) -> LogError {
    LogError::Closed
}

/// The records of a partition in `[from, to)`, read and decoded one fetch
/// of up to `fetch_bytes` at a time; each item is one fetch's records in
/// range (possibly none, where compaction left gaps). See
/// [`Partition::records`].
pub struct Records<'a> {
    fetch: Fetch<'a>,
    offset: i64,
    end: i64,
    fetch_bytes: usize,
    damaged: bool,
}

/// One read of a partition: (offset, max bytes) → its batches.
type Fetch<'a> = Box<dyn FnMut(i64, usize) -> Result<ReadResult> + Send + 'a>;

impl<'a> Records<'a> {
    /// Records from `from` up to `to` through `fetch` (a partition's own
    /// read, or a [`super::LogStore`]'s: see [`super::records`]).
    pub fn new(fetch: Fetch<'a>, from: i64, to: i64, fetch_bytes: usize) -> Records<'a> {
        Records {
            fetch,
            offset: from,
            end: to,
            fetch_bytes,
            damaged: false,
        }
    }

    /// Where the next fetch starts: one past the last record returned.
    pub fn position(&self) -> i64 {
        self.offset
    }

    /// Whether every record below the end has been returned, or the
    /// iteration stopped at damage.
    pub fn done(&self) -> bool {
        self.offset >= self.end || self.damaged
    }

    /// The iteration stopped at damage (at [`Records::position`]), which is
    /// reported in `Log::damage` and fences the partition.
    pub fn damaged(&self) -> bool {
        self.damaged
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Vec<kafka_protocol::records::Record>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done() {
            return None;
        }
        let read = match (self.fetch)(self.offset, self.fetch_bytes) {
            Ok(r) => r,
            // Damage found by this read (see `Partition::read`): the
            // partition, now fenced, ends here for its readers, who get
            // everything before it.
            Err(LogError::Corrupt { .. }) => {
                self.damaged = true;
                return None;
            }
            Err(e) => return Some(Err(e)),
        };
        if read.records.is_empty() {
            self.end = self.offset;
            return None;
        }
        // Where the fetched batches end, from their headers (compaction
        // may have removed a batch's last records, never its header).
        let mut covered = self.offset;
        let mut at = 0;
        while at < read.records.len() {
            let Ok(h) = batch::BatchHeader::parse(&read.records[at..]) else {
                break;
            };
            covered = covered.max(h.next_offset());
            at += h.total_len();
        }
        let mut records = match batch::decode(read.records) {
            Ok(r) => r,
            Err(e) => return Some(Err(LogError::from(e))),
        };
        if !read.aborted.is_empty() {
            // Records of aborted transactions are never seen (Kafka's
            // read_committed consumers drop them the same way).
            records.retain(|r| {
                !(r.transactional
                    && read
                        .aborted
                        .iter()
                        .any(|a| a.covers(r.producer_id, r.offset)))
            });
        }
        let (from, to) = (self.offset, self.end);
        // The fetch may run past `to`: records appended since the caller
        // took its end. They are not returned, so the position must not
        // pass them: the next read (over a later end) starts at `to`.
        let next = records
            .last()
            .map_or(covered, |r| covered.max(r.offset + 1))
            .min(to);
        if next <= from {
            self.end = self.offset;
            return None;
        }
        self.offset = next;
        Some(Ok(records
            .into_iter()
            .filter(|r| r.offset >= from && r.offset < to)
            .collect()))
    }
}

impl Partition {
    /// Create the directory of a new, empty partition.
    pub fn create(
        topic: &str,
        id: i32,
        dir: &Path,
        config: Arc<RwLock<TopicConfig>>,
        damage: Arc<DamageLog>,
    ) -> Result<Partition> {
        fs::create_dir_all(dir).at(dir)?;
        let seg = Segment::create(dir, 0, now_ms())?;
        // The new directory entry and file must survive a crash before the
        // topic is reported created.
        sync_dir(dir)?;
        Ok(Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            config,
            writer: Mutex::new(ProducerStates::default()),
            segments: RwLock::new(vec![Arc::new(seg)]),
            end: AtomicI64::new(0),
            synced: AtomicI64::new(0),
            sync_lock: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            fence: RwLock::new(None),
            damage,
            fsyncs: std::sync::atomic::AtomicU64::new(0),
            appended: tokio::sync::Notify::new(),
            start: AtomicI64::new(0),
            start_lock: Mutex::new(()),
            open_from: AtomicI64::new(i64::MAX),
            aborted: RwLock::new(Arc::new(Vec::new())),
        })
    }

    /// Open an existing partition, recovering after a crash when `clean` is
    /// false: segments past the recovery point are scanned batch by batch
    /// (CRC-32C checked) and their indexes rebuilt. Whatever the files hold,
    /// the partition opens (only I/O errors fail it); damage is recorded in
    /// `damage` (see `damage.rs`):
    /// - invalid bytes at the end of the last segment with no valid batch
    ///   after them (a torn write, a zero fill, appended garbage) are cut,
    ///   clean shutdown or not, as Kafka's recovery does;
    /// - any other invalid batch fences the partition: it serves the records
    ///   before the damage (the log end is the damaged batch's offset), the
    ///   damaged segment's valid prefix included, ignores the segments after
    ///   it, and refuses appends until `eddy repair`;
    /// - damaged indexes and producer snapshots are rebuilt from the log.
    pub fn open(
        topic: &str,
        id: i32,
        dir: &Path,
        config: Arc<RwLock<TopicConfig>>,
        clean: bool,
        damage: Arc<DamageLog>,
    ) -> Result<Partition> {
        let now = now_ms();
        let mut fence: Option<Damage> = None;
        let mut damaged = false;
        let note =
            |file: &Path, position: u64, offset: i64, reason: String, action, bytes| Damage {
                topic: topic.to_string(),
                partition: Some(id),
                file: file.to_path_buf(),
                position,
                offset,
                reason,
                action,
                bytes,
                detected_ms: now,
            };
        if !dir.exists() {
            // Its records are gone: an empty partition keeps the topic (and
            // the server) usable.
            fs::create_dir_all(dir).at(dir)?;
            damage.record(note(
                dir,
                0,
                0,
                "partition directory missing; recreated empty".into(),
                Action::Reported,
                0,
            ));
            damaged = true;
        }
        let mut bases = Vec::new();
        let mut snapshots = Vec::new();
        let mut stems_with_logs = std::collections::HashSet::new();
        let mut others = Vec::new();
        for entry in fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.ends_with(".tmp") || name.ends_with(".cleaned") || name.ends_with(".deleted") {
                // Leftovers of an interrupted atomic write, compaction or
                // deletion: the operation they belonged to never completed
                // (or completed and only the unlink was lost).
                fs::remove_file(&path).at(&path)?;
                continue;
            }
            if let Some(stem) = name.strip_suffix(".log") {
                match stem.parse::<i64>() {
                    Ok(base) if base >= 0 && stem.len() == 20 => {
                        stems_with_logs.insert(stem.to_string());
                        bases.push(base);
                    }
                    _ => damage.record(note(
                        &path,
                        0,
                        -1,
                        "not a segment file name (20-digit offset); ignored".into(),
                        Action::Reported,
                        0,
                    )),
                }
            } else if let Some(stem) = name.strip_suffix(".snapshot") {
                if let Ok(off) = stem.parse::<i64>() {
                    snapshots.push((off, path));
                }
            } else if name.ends_with(".index") || name.ends_with(".timeindex") {
                others.push((name, path));
            }
        }
        // Index files whose segment is gone (a deletion interrupted after
        // the .log went) are removed.
        for (name, path) in others {
            let stem = name.split('.').next().unwrap_or_default();
            if !stems_with_logs.contains(stem) {
                fs::remove_file(&path).at(&path)?;
            }
        }
        bases.sort_unstable();
        let rp_path = dir.join(RECOVERY_POINT);
        let recovery_point = read_checkpoint(&rp_path).unwrap_or(0);
        let (interval, compacted) = {
            let c = config.read().map_err(lock_err)?;
            (c.index_interval_bytes as u64, c.cleanup_policy.compact)
        };
        // Bytes from segment `i` on (what a fence at segment `i` leaves
        // unserved).
        let sizes: Vec<u64> = bases
            .iter()
            .map(|b| {
                let p = dir.join(format!("{}.log", file_stem(*b)));
                fs::metadata(&p).map(|m| m.len()).unwrap_or(0)
            })
            .collect();
        let from = |i: usize| -> u64 { sizes[i.min(sizes.len())..].iter().sum() };

        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let trust = clean || base < recovery_point;
            // The active segment is never compacted: its offsets are dense.
            let below = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let (seg, stop) = Segment::open_with(dir, base, trust, interval, now, last, below)?;
            if let Some(prev) = segments.last() {
                let prev_end = prev.next_offset();
                if prev_end > base {
                    let d = note(
                        seg.log_path(),
                        0,
                        prev_end,
                        format!(
                            "segment starts at {base} but the previous one ends at {}",
                            prev_end - 1
                        ),
                        Action::Fenced,
                        from(i),
                    );
                    damage.record(d.clone());
                    fence = Some(d);
                    break;
                }
                if prev_end < base && !compacted {
                    // Only compaction leaves gaps between segments.
                    damaged = true;
                    damage.record(note(
                        seg.log_path(),
                        0,
                        prev_end,
                        format!(
                            "offsets {prev_end} to {} are missing (a segment file deleted or cut short?)",
                            base - 1
                        ),
                        Action::Reported,
                        0,
                    ));
                }
            }
            if let Some(stop) = stop {
                let file_len = sizes[i];
                let cut = file_len.saturating_sub(stop.position);
                damaged = true;
                if last && stop.at_tail() {
                    damage.record(note(
                        seg.log_path(),
                        stop.position,
                        seg.next_offset(),
                        format!("{}; no valid batch follows", stop.error),
                        Action::Truncated,
                        cut,
                    ));
                    seg.truncate_to(stop.position)?;
                } else {
                    let reason = match stop.resume {
                        Some((pos, off)) => format!(
                            "{}; valid batches follow from byte {pos} (offset {off})",
                            stop.error
                        ),
                        None => format!("{}; no valid batch follows in this segment", stop.error),
                    };
                    let d = note(
                        seg.log_path(),
                        stop.position,
                        seg.next_offset(),
                        reason,
                        Action::Fenced,
                        cut + from(i + 1),
                    );
                    damage.record(d.clone());
                    fence = Some(d);
                    if !trust || seg.index_rebuilt() {
                        seg.write_index_files()?;
                    }
                    segments.push(Arc::new(seg));
                    break;
                }
            } else if trust && seg.index_rebuilt() && !seg.is_empty() {
                // (An empty segment has nothing to index: a new topic's
                // has no index files until its first roll or close.)
                let (ix, _) = seg.index_paths();
                damaged = true;
                damage.record(note(
                    ix,
                    0,
                    base,
                    "index files missing or not matching the log".into(),
                    Action::Rebuilt,
                    0,
                ));
            }
            if !trust || seg.index_rebuilt() {
                // The index was rebuilt by the scan (a crash, or index files
                // missing or damaged); persist it so the next start does not
                // scan again.
                seg.write_index_files()?;
            }
            segments.push(Arc::new(seg));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(dir, 0, now)?));
            sync_dir(dir)?;
        }
        let last = segments.last().map(Arc::clone).ok_or(LogError::Closed)?;
        let end = last.next_offset();
        // Whatever survived the crash is now made durable, so `synced`
        // starts at the end.
        last.sync()?;
        if recovery_point > end {
            if !damaged && fence.is_none() {
                damage.record(note(
                    &rp_path,
                    0,
                    end,
                    format!(
                        "records below the recovery point {recovery_point} are missing past offset {end} (a segment file deleted or cut short?)"
                    ),
                    Action::Reported,
                    0,
                ));
            }
            if fence.is_none() {
                // Reported once: the log now ends here.
                write_atomic(&rp_path, end.to_string().as_bytes())?;
                sync_dir(dir)?;
            }
        }

        // Producer state: newest readable snapshot at or below the end, then
        // replay the batch headers after it.
        snapshots.sort_by_key(|(off, _)| *off);
        let mut producers = ProducerStates::default();
        let mut replay_from = segments.first().map(|s| s.base_offset()).unwrap_or(0);
        for (off, path) in snapshots.iter().rev() {
            if *off > end {
                // A fenced partition keeps what belongs past its end for
                // `eddy repair` to decide.
                if fence.is_none() {
                    fs::remove_file(path).at(path)?;
                }
                continue;
            }
            match ProducerStates::read_snapshot(path) {
                Ok(s) => {
                    producers = s;
                    replay_from = *off;
                    break;
                }
                Err(e) => damage.record(note(
                    path,
                    0,
                    *off,
                    format!("{e}; producer state rebuilt from the log"),
                    Action::Rebuilt,
                    0,
                )),
            }
        }
        'replay: for seg in &segments {
            if seg.next_offset() <= replay_from {
                continue;
            }
            match seg.headers_and_markers_from(replay_from, true) {
                Ok(headers) => {
                    for (h, marker) in headers {
                        if h.base_offset >= replay_from {
                            producers.update(&h, marker);
                        }
                    }
                }
                // Damage inside a segment open trusted (not rescanned): the
                // producer state misses what lies past it, so a retry of a
                // batch written after it may not be recognised.
                Err(e) => {
                    if let Some(d) = record_corrupt(&damage, topic, id, &e) {
                        fence.get_or_insert(d);
                    }
                    break 'replay;
                }
            }
        }

        let open_from = producers.stable_end(i64::MAX);
        let aborted = producers.aborted_between(i64::MIN, i64::MAX);
        Ok(Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            config,
            writer: Mutex::new(producers),
            segments: RwLock::new(segments),
            end: AtomicI64::new(end),
            synced: AtomicI64::new(end),
            sync_lock: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            fence: RwLock::new(fence),
            damage,
            fsyncs: std::sync::atomic::AtomicU64::new(0),
            appended: tokio::sync::Notify::new(),
            start: AtomicI64::new(read_log_start(dir).clamp(0, end)),
            start_lock: Mutex::new(()),
            open_from: AtomicI64::new(open_from),
            aborted: RwLock::new(Arc::new(aborted)),
        })
    }

    /// Make the partition read-only because of `d` (a damaged `topic.json`:
    /// its config is unknown, so appends could break it).
    pub fn fence(&self, d: Damage) {
        if let Ok(mut f) = self.fence.write()
            && f.is_none()
        {
            *f = Some(d);
        }
    }

    /// A read found damage (a segment open trusted, not rescanned): report
    /// it and fence the partition, so nothing is appended after it before
    /// an operator has run `eddy repair`. Readers stop at it; the log end
    /// stays (a point read past the damage still works) until the next
    /// start, which, not rescanning trusted segments, fences it again only
    /// when a read reaches it.
    fn found_damage(&self, e: &LogError) {
        if let Some(d) = record_corrupt(&self.damage, &self.topic, self.id, e) {
            self.fence(d);
        }
    }

    /// The damage that makes this partition read-only, if any.
    pub fn fenced(&self) -> Option<Damage> {
        self.fence.read().ok().and_then(|f| f.clone())
    }

    /// fsyncs of segment data issued so far.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// First offset still in the log.
    /// Iterate over the records in `[from, to)` (`from` raised to the log
    /// start), a fetch of `fetch_bytes` at a time.
    pub fn records(&self, from: i64, to: i64, fetch_bytes: usize) -> Records<'_> {
        Records::new(
            Box::new(move |offset, max| self.read(offset, max)),
            from.max(self.log_start()),
            to,
            fetch_bytes,
        )
    }

    pub fn log_start(&self) -> i64 {
        let first = self
            .segments
            .read()
            .ok()
            .and_then(|s| s.first().map(|s| s.base_offset()))
            .unwrap_or(0);
        first.max(self.start.load(Ordering::Acquire))
    }

    /// The idempotent producers that wrote this partition (those whose
    /// state is kept): id, epoch, last sequence, last timestamp.
    pub fn producers(&self) -> Result<Vec<(i64, i16, i32, i64)>> {
        Ok(self.writer.lock().map_err(lock_err)?.states())
    }

    /// Kafka's DeleteRecords: records below `offset` (-1: the log end) are
    /// gone for every reader; the new log start is persisted before it is
    /// returned, and whole segments below it are removed. An offset past
    /// the end is `OffsetOutOfRange`; one below the current start changes
    /// nothing.
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        let end = self.log_end();
        let offset = if offset == -1 { end } else { offset };
        if offset < 0 || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset,
                log_start: self.log_start(),
                log_end: end,
            });
        }
        // One DeleteRecords at a time per partition (appends go on).
        let _one = self.start_lock.lock().map_err(lock_err)?;
        if offset <= self.log_start() {
            return Ok(self.log_start());
        }
        let path = self.dir.join(LOG_START_FILE);
        write_atomic(&path, offset.to_string().as_bytes())?;
        sync_dir(&self.dir)?;
        self.start.store(offset, Ordering::Release);
        // Segments wholly below the start go (the active one stays).
        self.delete_oldest(|seg, _| seg.next_offset() <= offset)?;
        Ok(self.log_start())
    }

    /// Offset the next record will get; everything below is readable.
    pub fn log_end(&self) -> i64 {
        self.end.load(Ordering::Acquire)
    }

    /// The last stable offset (Kafka's LSO): below it every transaction
    /// has ended, so read_committed readers (Kafka consumers asking for
    /// it, and eddy's own views and queries) stop here. The log end when
    /// no transaction is open.
    pub fn stable_end(&self) -> i64 {
        let end = self.end.load(Ordering::Acquire);
        end.min(self.open_from.load(Ordering::Acquire))
    }

    /// The aborted transactions with records in `[from, to)`: what a
    /// read_committed reader of that range must drop.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let all = self
            .aborted
            .read()
            .map(|a| Arc::clone(&a))
            .unwrap_or_default();
        if all.is_empty() {
            return Vec::new();
        }
        let i = all.partition_point(|a| a.last_offset < from);
        all[i..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Producers with a transaction open here, by the offset of its first
    /// record (the transaction coordinator aborts those it does not know
    /// of at start, so none hangs the LSO).
    pub fn open_transactions(&self) -> Result<Vec<(i64, i64)>> {
        Ok(self
            .writer
            .lock()
            .map_err(lock_err)?
            .open_transactions()
            .collect())
    }

    /// Mirror the producer state's transactions for readers. Called with
    /// the writer lock held, before `end` moves.
    fn publish_transactions(&self, producers: &ProducerStates) {
        self.open_from
            .store(producers.stable_end(i64::MAX), Ordering::Release);
        if let Ok(mut a) = self.aborted.write() {
            let now = producers.aborted_between(i64::MIN, i64::MAX);
            if now.len() != a.len() {
                *a = Arc::new(now);
            }
        }
    }

    /// Write a transaction marker for `producer_id` (the transaction
    /// coordinator ending its transaction here), fsynced. A partition where
    /// the producer wrote nothing in this transaction gets the marker too,
    /// as in Kafka; it changes no state there.
    pub fn write_marker(&self, producer_id: i64, epoch: i16, marker: batch::Marker) -> Result<i64> {
        let bytes = batch::encode_marker(producer_id, epoch, marker, now_ms())
            .map_err(LogError::InvalidBatch)?;
        let info = self.append(bytes, Durability::Fsync)?;
        Ok(info.base_offset)
    }

    /// Bytes on disk over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments
            .read()
            .map(|s| s.iter().map(|s| s.size()).sum())
            .unwrap_or(0)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().map(|s| s.len()).unwrap_or(0)
    }

    /// A snapshot of the segment list (for the cleaner and tools).
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait for an append (Kafka long-poll fetch). Register interest before
    /// re-checking the end offset to avoid a lost wake-up.
    pub fn appended(&self) -> &tokio::sync::Notify {
        &self.appended
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned {
                topic: self.topic.clone(),
                partition: self.id,
            });
        }
        Ok(())
    }

    /// Appends and rolls: refused while poisoned or fenced.
    fn check_writable(&self) -> Result<()> {
        self.check_poisoned()?;
        if let Some(d) = self.fenced() {
            return Err(LogError::Damaged {
                topic: self.topic.clone(),
                partition: self.id,
                file: d.file,
                position: d.position,
                offset: d.offset,
                reason: d.reason,
            });
        }
        Ok(())
    }

    /// Append a producer's record set (one or more RecordBatch v2). Base
    /// offsets (and LogAppendTime timestamps) are rewritten in place; the
    /// bytes are otherwise stored exactly as given.
    pub fn append(&self, mut bytes: BytesMut, durability: Durability) -> Result<AppendInfo> {
        self.check_writable()?;
        let mut headers = batch::validate_producer_set(&bytes)?;
        // Transaction markers, read before the write (control batches are
        // tiny): the producer state records what each one ended.
        let mut markers = Vec::with_capacity(headers.len());
        let mut at = 0;
        for h in &headers {
            markers.push(if h.is_control() {
                Some(batch::marker_of(&bytes[at..]).map_err(LogError::InvalidBatch)?)
            } else {
                None
            });
            at += h.total_len();
        }
        let config = self.config();
        for h in &headers {
            if h.total_len() as i64 > config.max_message_bytes {
                return Err(LogError::BatchTooLarge {
                    topic: self.topic.clone(),
                    size: h.total_len(),
                    max: config.max_message_bytes,
                });
            }
        }
        if config.cleanup_policy.compact {
            // Kafka refuses keyless records on compacted topics: compaction
            // could never remove them.
            let records =
                batch::decode(Bytes::copy_from_slice(&bytes)).map_err(LogError::InvalidBatch)?;
            if records.iter().any(|r| r.key.is_none()) {
                return Err(LogError::MissingKey {
                    topic: self.topic.clone(),
                });
            }
        }
        let now = now_ms();
        let mut producers = self.writer.lock().map_err(lock_err)?;
        self.check_writable()?;

        // Idempotence: a producer sends one batch per partition per request,
        // so the first batch decides for the set.
        if let Some(first) = headers.first() {
            match producers.check(first) {
                Check::Append => {}
                Check::Duplicate(m) => {
                    return Ok(AppendInfo {
                        base_offset: m.first_offset,
                        last_offset: m.last_offset,
                        log_append_time: -1,
                        log_start: self.log_start(),
                        duplicate: true,
                    });
                }
                Check::Reject(Rejection::OutOfOrder { got, expected }) => {
                    return Err(LogError::OutOfOrderSequence {
                        topic: self.topic.clone(),
                        partition: self.id,
                        producer_id: first.producer_id,
                        got,
                        expected,
                    });
                }
                Check::Reject(Rejection::Fenced { current }) => {
                    return Err(LogError::InvalidProducerEpoch {
                        topic: self.topic.clone(),
                        partition: self.id,
                        producer_id: first.producer_id,
                        epoch: first.producer_epoch,
                        current,
                    });
                }
            }
        }

        let mut active = self
            .segments
            .read()
            .map_err(lock_err)?
            .last()
            .map(Arc::clone)
            .ok_or(LogError::Closed)?;
        let base = active.next_offset();
        let segment_age = now - active.created_ms();
        if !active.is_empty()
            && (active.size() + bytes.len() as u64 > config.segment_bytes as u64
                || segment_age >= config.segment_ms)
        {
            active = self.roll(&producers, &active, base)?;
        }

        let log_append_time = config.timestamp_type == TimestampKind::LogAppendTime;
        let mut next = base;
        let mut pos = 0usize;
        for h in headers.iter_mut() {
            let len = h.total_len();
            let slice = &mut bytes[pos..pos + len];
            batch::set_base_offset(slice, next);
            h.base_offset = next;
            if log_append_time {
                batch::set_log_append_time(slice, len, now);
                h.max_timestamp = now;
                h.first_timestamp = now;
            }
            next = h.next_offset();
            pos += len;
        }
        let interval = config.index_interval_bytes as u64;
        if let Err(e) = active.append(&bytes, &headers, interval) {
            // A failed write may have left part of the batch in the file;
            // appending after it would bury garbage mid-log.
            self.poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        for (h, marker) in headers.iter().zip(&markers) {
            producers.update(h, *marker);
        }
        if headers.iter().any(|h| h.is_transactional()) {
            self.publish_transactions(&producers);
        }
        self.end.store(next, Ordering::Release);
        drop(producers);
        self.appended.notify_waiters();

        if durability == Durability::Fsync {
            self.sync_to(next)?;
        }
        Ok(AppendInfo {
            base_offset: base,
            last_offset: next - 1,
            log_append_time: if log_append_time { now } else { -1 },
            log_start: self.log_start(),
            duplicate: false,
        })
    }

    /// Close the active segment and start a new one at `base`. Called with the
    /// writer lock held.
    fn roll(
        &self,
        producers: &ProducerStates,
        active: &Arc<Segment>,
        base: i64,
    ) -> Result<Arc<Segment>> {
        // The closed segment is made durable before a new one exists, so
        // after a crash only the last segment can have a torn tail, and its
        // indexes are written so the next start need not rebuild them.
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = active.sync() {
            self.poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        active.write_index_files()?;
        let seg = Arc::new(Segment::create(&self.dir, base, now_ms())?);
        // The new segment's and the index files' names must be durable
        // before anything written to the new segment is acknowledged.
        sync_dir(&self.dir)?;
        producers.write_snapshot(&self.dir.join(format!("{}.snapshot", file_stem(base))))?;
        // Everything below `base` is on disk with its indexes: a restart
        // after a crash may trust it and scan only from here.
        write_atomic(&self.dir.join(RECOVERY_POINT), base.to_string().as_bytes())?;
        sync_dir(&self.dir)?;
        self.synced.fetch_max(base, Ordering::AcqRel);
        self.segments
            .write()
            .map_err(lock_err)?
            .push(Arc::clone(&seg));
        self.prune_snapshots(base)?;
        info!(topic = %self.topic, partition = self.id, base, "rolled segment");
        Ok(seg)
    }

    /// Keep the two newest producer snapshots; older ones are never read.
    fn prune_snapshots(&self, newest: i64) -> Result<()> {
        let mut snaps: Vec<(i64, PathBuf)> = fs::read_dir(&self.dir)
            .at(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let off: i64 = name.strip_suffix(".snapshot")?.parse().ok()?;
                Some((off, e.path()))
            })
            .filter(|(off, _)| *off <= newest)
            .collect();
        snaps.sort_by_key(|(o, _)| *o);
        let keep = snaps.len().saturating_sub(2);
        for (_, p) in snaps.into_iter().take(keep) {
            fs::remove_file(&p).at(&p)?;
        }
        Ok(())
    }

    /// Roll the active segment now if it holds data (retention uses this to
    /// expire an old active segment, as Kafka does).
    pub fn roll_now(&self) -> Result<bool> {
        let producers = self.writer.lock().map_err(lock_err)?;
        self.check_writable()?;
        let active = self
            .segments
            .read()
            .map_err(lock_err)?
            .last()
            .map(Arc::clone)
            .ok_or(LogError::Closed)?;
        if active.is_empty() {
            return Ok(false);
        }
        let base = active.next_offset();
        self.roll(&producers, &active, base)?;
        Ok(true)
    }

    /// Make everything below `offset` durable. Group commit: one fsync in
    /// flight per partition; whoever holds `sync_lock` syncs everything
    /// written so far, and waiters behind it usually find their offset
    /// covered without an fsync of their own.
    pub fn sync_to(&self, offset: i64) -> Result<()> {
        if self.synced.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        let _guard = self.sync_lock.lock().map_err(lock_err)?;
        if self.synced.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        self.check_poisoned()?;
        let (seg, upto) = {
            let segs = self.segments.read().map_err(lock_err)?;
            (
                segs.last().map(Arc::clone).ok_or(LogError::Closed)?,
                self.end.load(Ordering::Acquire),
            )
        };
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = seg.sync() {
            self.poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// fsync everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.sync_to(self.log_end())
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes`
    /// (but at least one batch), never past the published end.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_inner(offset, max_bytes, false)
            .inspect_err(|e| self.found_damage(e))
    }

    /// As [`Partition::read`], but never past the last stable offset, with
    /// the aborted transactions of the range (Kafka's READ_COMMITTED).
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_inner(offset, max_bytes, true)
            .inspect_err(|e| self.found_damage(e))
    }

    fn read_inner(&self, offset: i64, max_bytes: usize, committed: bool) -> Result<ReadResult> {
        let end = self.log_end();
        let stable = end.min(self.open_from.load(Ordering::Acquire));
        let segs = self.segments_ok()?;
        let log_start = segs
            .first()
            .map(|s| s.base_offset())
            .unwrap_or(0)
            .max(self.start.load(Ordering::Acquire));
        if offset < log_start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset,
                log_start,
                log_end: end,
            });
        }
        let upto = if committed { stable } else { end };
        let mut records = Bytes::new();
        if offset < upto {
            let i = segs.partition_point(|s| s.base_offset() <= offset).max(1) - 1;
            for seg in &segs[i..] {
                if let Some(pos) = seg.position_of(offset)? {
                    records = seg.read_from(pos, max_bytes, upto)?;
                    if !records.is_empty() {
                        break;
                    }
                }
            }
        }
        let aborted = if committed && !records.is_empty() {
            self.aborted_between(offset, upto)
        } else {
            Vec::new()
        };
        Ok(ReadResult {
            records,
            log_start,
            high_watermark: end,
            last_stable: stable,
            aborted,
        })
    }

    fn segments_ok(&self) -> Result<Vec<Arc<Segment>>> {
        Ok(self.segments.read().map_err(lock_err)?.clone())
    }

    /// Earliest offset whose record timestamp is ≥ `ts`, with that
    /// timestamp; `None` when every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        self.offset_for_timestamp_inner(ts)
            .inspect_err(|e| self.found_damage(e))
    }

    fn offset_for_timestamp_inner(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let end = self.log_end();
        for seg in self.segments_ok()? {
            if seg.max_timestamp() < ts {
                continue;
            }
            if let Some(found) = seg.find_timestamp(ts, end)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Drop the oldest segments while `expired(segment, bytes_after)` says so;
    /// the active segment always stays. Returns how many went.
    pub fn delete_oldest(&self, mut expired: impl FnMut(&Segment, u64) -> bool) -> Result<usize> {
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write().map_err(lock_err)?;
            let mut total: u64 = segs.iter().map(|s| s.size()).sum();
            let mut n = 0;
            while n + 1 < segs.len() {
                let after = total - segs[n].size();
                if !expired(&segs[n], after) {
                    break;
                }
                total = after;
                n += 1;
            }
            segs.drain(..n).collect()
        };
        for seg in &removed {
            // Readers still holding the segment keep their open descriptor;
            // the files disappear from the directory now. The .log goes first
            // so an interrupted deletion leaves orphan indexes (removed at
            // open), never a log without its predecessor.
            let log = seg.log_path().to_path_buf();
            fs::remove_file(&log).at(&log)?;
            let (ix, tix) = seg.index_paths();
            for p in [ix, tix] {
                match fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).at(p);
                    }
                    _ => {}
                }
            }
        }
        if !removed.is_empty() {
            // The deletions must be durable before the log start offset they
            // imply is relied on.
            sync_dir(&self.dir)?;
            info!(topic = %self.topic, partition = self.id, segments = removed.len(), log_start = self.log_start(), "retention deleted segments");
            // Aborted transactions wholly below the new start have no
            // records left to hide.
            let mut producers = self.writer.lock().map_err(lock_err)?;
            producers.prune_aborted(self.log_start());
            self.publish_transactions(&producers);
        }
        Ok(removed.len())
    }

    /// Swap a closed segment for its compacted copy (`None`: every record
    /// went, drop it). The copy's file has already replaced the old one on
    /// disk (rename); here only the in-memory list changes.
    pub fn replace_segment(&self, base: i64, new: Option<Segment>) -> Result<()> {
        let mut segs = self.segments.write().map_err(lock_err)?;
        if let Some(i) = segs.iter().position(|s| s.base_offset() == base) {
            if i + 1 == segs.len() {
                return Ok(());
            }
            match new {
                Some(seg) => segs[i] = Arc::new(seg),
                None => {
                    segs.remove(i);
                }
            }
        }
        Ok(())
    }

    /// Write indexes, a producer snapshot and the recovery point so the next
    /// start can skip scanning (clean shutdown).
    pub fn close(&self) -> Result<()> {
        let producers = self.writer.lock().map_err(lock_err)?;
        self.flush()?;
        let segs = self.segments_ok()?;
        if let Some(last) = segs.last() {
            last.write_index_files()?;
        }
        let end = self.log_end();
        producers.write_snapshot(&self.dir.join(format!("{}.snapshot", file_stem(end))))?;
        write_atomic(&self.dir.join(RECOVERY_POINT), end.to_string().as_bytes())?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Producer ids and epochs known here (InitProducerId, tools).
    pub fn producer_epochs(&self) -> BTreeMap<i64, i16> {
        self.writer
            .lock()
            .map(|p| p.producers().collect())
            .unwrap_or_default()
    }

    /// Validate every batch of every segment.
    pub fn verify(&self) -> Result<()> {
        for seg in self.segments_ok()? {
            seg.verify()?;
        }
        Ok(())
    }

    /// Headers of every batch at or after `from` (tools and tests).
    pub fn headers(&self, from: i64) -> Result<Vec<BatchHeader>> {
        let mut out = Vec::new();
        for seg in self.segments_ok()? {
            if seg.next_offset() > from {
                out.extend(seg.headers_from(from)?);
            }
        }
        Ok(out)
    }
}

/// A read ran into damage in a segment that open trusted (and so did not
/// rescan): report it (once per file and position) as fencing the
/// partition, as open would have.
fn record_corrupt(damage: &DamageLog, topic: &str, id: i32, e: &LogError) -> Option<Damage> {
    let LogError::Corrupt {
        file,
        position,
        offset,
        reason,
    } = e
    else {
        return None;
    };
    let d = Damage {
        topic: topic.to_string(),
        partition: Some(id),
        file: file.clone(),
        position: *position,
        offset: *offset,
        reason: format!("{reason}; found by a read"),
        action: Action::Fenced,
        bytes: 0,
        detected_ms: now_ms(),
    };
    damage.record(d.clone());
    Some(d)
}

pub(crate) fn read_checkpoint(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The log start offset DeleteRecords persisted in `dir`, or 0 (none, or
/// a file that does not read as one: the segments' start then holds, and
/// nothing is lost by ignoring it).
fn read_log_start(dir: &Path) -> i64 {
    fs::read_to_string(dir.join(LOG_START_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::log::batch::NewRecord;

    fn append(p: &Partition, n: usize) {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                timestamp: 0,
                headers: vec![],
            })
            .collect();
        p.append(batch::encode(&records).unwrap(), Durability::Os)
            .unwrap();
    }

    /// A reader asked for `[from, to)` while appends move the end past
    /// `to` must stop at `to`, not at the end of what its fetch happened
    /// to return: issue 14's lost runs of records.
    #[test]
    fn records_stop_at_their_end_when_the_log_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(RwLock::new(TopicConfig::default()));
        let p = Partition::create(
            "t",
            0,
            &dir.path().join("0"),
            config,
            Arc::new(DamageLog::default()),
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut from = 0;
        for round in 0..20 {
            append(&p, 7 + round);
            let to = p.log_end();
            // Appended after the reader took its end, before it reads.
            append(&p, 5);
            let mut fetches = p.records(from, to, 1 << 20);
            for records in fetches.by_ref() {
                seen.extend(records.unwrap().into_iter().map(|r| r.offset));
            }
            assert_eq!(fetches.position(), to);
            from = fetches.position();
        }
        let want: Vec<i64> = (0..from).collect();
        assert_eq!(seen, want);
    }

    /// A transactional batch of `n` records from producer `pid`.
    fn append_txn(p: &Partition, pid: i64, seq: i32, values: &[&str]) {
        let records: Vec<NewRecord> = values
            .iter()
            .map(|v| NewRecord {
                value: Some(Bytes::from(v.to_string())),
                ..Default::default()
            })
            .collect();
        p.append(
            batch::encode_transactional(pid, 0, seq, &records).unwrap(),
            Durability::Os,
        )
        .unwrap();
    }

    /// What eddy's readers see: records below the stable end, aborted
    /// transactions dropped.
    fn committed_values(p: &Partition) -> Vec<String> {
        let mut out = Vec::new();
        let mut fetches = Records::new(
            Box::new(|o, m| p.read_committed(o, m)),
            0,
            p.stable_end(),
            1 << 20,
        );
        for records in fetches.by_ref() {
            for r in records.unwrap() {
                out.push(String::from_utf8_lossy(&r.value.unwrap()).to_string());
            }
        }
        out
    }

    /// The last stable offset stops at the first record of the oldest open
    /// transaction; an abort marker lists its records as aborted, a commit
    /// marker releases them; all of it is rebuilt at reopen, from the
    /// snapshot (clean close) and by replaying markers (crash).
    #[test]
    fn transactions_bound_the_stable_end_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0");
        let config = Arc::new(RwLock::new(TopicConfig::default()));
        let damage = Arc::new(DamageLog::default());
        let p = Partition::create("t", 0, &path, Arc::clone(&config), Arc::clone(&damage)).unwrap();
        append(&p, 1); // 0: v0
        append_txn(&p, 5, 0, &["a1", "a2"]); // 1, 2
        append_txn(&p, 6, 0, &["b1"]); // 3
        append(&p, 1); // 4: v0
        assert_eq!((p.stable_end(), p.log_end()), (1, 5));
        assert_eq!(committed_values(&p), vec!["v0"]);
        p.write_marker(5, 0, batch::Marker::Abort).unwrap(); // 5
        assert_eq!(p.stable_end(), 3, "producer 6 is still open at 3");
        assert_eq!(
            p.aborted_between(0, 10),
            vec![AbortedTxn {
                producer_id: 5,
                first_offset: 1,
                last_offset: 5
            }]
        );
        p.write_marker(6, 0, batch::Marker::Commit).unwrap(); // 6
        assert_eq!((p.stable_end(), p.log_end()), (7, 7));
        assert_eq!(committed_values(&p), vec!["v0", "b1", "v0"]);
        // The read_uncommitted view still has every record.
        assert_eq!(p.read(0, 1 << 20).unwrap().aborted, vec![]);
        append_txn(&p, 7, 0, &["c1"]); // 7, left open
        let expect = (
            p.stable_end(),
            p.aborted_between(0, 100),
            committed_values(&p),
        );
        assert_eq!(expect.0, 7);
        // A crash (no snapshot): the producer state is replayed with the
        // markers read from the log.
        drop(p);
        let p = Partition::open(
            "t",
            0,
            &path,
            Arc::clone(&config),
            false,
            Arc::clone(&damage),
        )
        .unwrap();
        assert_eq!(
            (
                p.stable_end(),
                p.aborted_between(0, 100),
                committed_values(&p)
            ),
            expect
        );
        // A clean close writes the state into the snapshot.
        p.close().unwrap();
        let p = Partition::open("t", 0, &path, config, true, damage).unwrap();
        assert_eq!(
            (
                p.stable_end(),
                p.aborted_between(0, 100),
                committed_values(&p)
            ),
            expect
        );
        assert_eq!(p.open_transactions().unwrap(), vec![(7, 7)]);
    }
}
