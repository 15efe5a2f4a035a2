//! One segment of a partition: `<base offset:020>.log` holding record batches
//! back to back, plus its sparse `.index` and `.timeindex` (see `index.rs`).
//!
//! A segment is written by one appender at a time (the partition's writer
//! lock) and read concurrently with positional reads (`pread`), so readers
//! never block the writer. The byte size published in `state` only ever
//! covers complete batches: a reader never sees half a batch.
//!
//! (About 900 lines: the file format's validating scan, positional reads,
//! index lookups and the checks every read makes are one type's methods
//! over one file; splitting them would split the invariant that what is
//! published was validated.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN, Marker};
use super::error::{IoContext, LogError, Result};
use super::index::{Index, IndexEntry};

/// File name stem of a segment: the base offset, zero-padded to 20 digits.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

#[derive(Debug)]
struct State {
    /// Bytes of complete batches in the file.
    size: u64,
    /// Offset the next appended batch gets (last offset + 1).
    next_offset: i64,
    /// Largest record timestamp in the segment (-1 when empty).
    max_timestamp: i64,
    index: Index,
    bytes_since_index: u64,
    /// Wall-clock ms when the segment was created or, after a restart, when
    /// its first batch was written (for `segment.ms`).
    created_ms: i64,
}

#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_path: PathBuf,
    file: File,
    state: RwLock<State>,
    /// The index files were missing or unusable and the in-memory index was
    /// rebuilt by scanning, so the files on disk need rewriting.
    index_rebuilt: bool,
    /// A lookup found an index entry that does not point at its batch (an
    /// index file damaged yet plausible enough to pass the checks at open):
    /// lookups walk from the segment's start from then on.
    index_wrong: AtomicBool,
}

/// What a validating scan found past the last good batch.
#[derive(Debug)]
pub struct ScanStop {
    pub position: u64,
    pub error: BatchError,
    /// The next valid batch after the damage (byte position, base offset),
    /// found by trying every byte position after it; `None` when nothing
    /// valid follows, so the damage is the file's tail (a torn write, a zero
    /// fill, appended garbage) rather than something in the middle.
    pub resume: Option<(u64, i64)>,
}

impl ScanStop {
    /// No valid batch follows the damage.
    pub fn at_tail(&self) -> bool {
        self.resume.is_none()
    }
}

/// A reusable window over a file for scanning many small batches without a
/// syscall per batch.
struct Window<'a> {
    file: &'a File,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW: usize = 1 << 20;

impl<'a> Window<'a> {
    fn new(file: &'a File, file_len: u64) -> Self {
        Window {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes `[pos, pos+len)` clipped to the file's end.
    fn get(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let avail = (self.file_len.saturating_sub(pos)) as usize;
        let len = len.min(avail);
        let end = pos + len as u64;
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = len.max(WINDOW).min(avail);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        Ok(&self.buf[off..off + len])
    }
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base_offset);
        (
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        )
    }

    /// Create a new, empty segment. The caller fsyncs the directory before
    /// acknowledging anything written to it.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&log_path)
        {
            Ok(f) => f,
            // An empty file left by a roll that failed after creating it
            // (e.g. the directory fsync failed) is reused; anything with
            // data in it is never overwritten.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&log_path)
                    .at(&log_path)?;
                if f.metadata().at(&log_path)?.len() != 0 {
                    return Err(e).at(&log_path);
                }
                f
            }
            Err(e) => return Err(e).at(&log_path),
        };
        Ok(Segment {
            base_offset,
            log_path,
            index_path,
            time_path,
            file,
            state: RwLock::new(State {
                size: 0,
                next_offset: base_offset,
                max_timestamp: -1,
                index: Index::new(),
                bytes_since_index: 0,
                created_ms: now_ms,
            }),
            index_rebuilt: false,
            index_wrong: AtomicBool::new(false),
        })
    }

    /// Open an existing segment. With `trust_index` and sane index files, only
    /// the last indexed batch onwards is scanned (to find the segment's end);
    /// otherwise every batch is read and its CRC checked, and the indexes are
    /// rebuilt. Returns the segment (covering only the valid prefix) and what
    /// stopped the scan, if anything did; the caller decides whether that is
    /// a torn tail to truncate or corruption to report.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        trust_index: bool,
        index_interval: u64,
        now_ms: i64,
    ) -> Result<(Segment, Option<ScanStop>)> {
        Self::open_with(
            dir,
            base_offset,
            trust_index,
            index_interval,
            now_ms,
            false,
            i64::MAX,
        )
    }

    /// As [`Segment::open`]. With `dense`, every scanned batch must start
    /// exactly where the previous one ended (the first at the segment's base
    /// offset): true of the active segment, which compaction never rewrites.
    /// The base offset is outside the CRC, so this is what catches a damaged
    /// one there. Every batch's offsets must also lie below `below` (the
    /// next segment's base offset), which catches a damaged base offset in
    /// an older segment.
    pub fn open_with(
        dir: &Path,
        base_offset: i64,
        trust_index: bool,
        index_interval: u64,
        now_ms: i64,
        dense: bool,
        below: i64,
    ) -> Result<(Segment, Option<ScanStop>)> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .at(&log_path)?;
        let file_len = file.metadata().at(&log_path)?.len();
        let loaded = if trust_index {
            Index::load_files(&index_path, &time_path, file_len)
        } else {
            None
        };
        let index_rebuilt = loaded.is_none();
        let (index, from_pos, from_offset, max_ts) = match loaded {
            Some(ix) => {
                let (pos, off, ts) = match ix.last() {
                    Some(e) => (
                        e.position as u64,
                        base_offset + e.relative_offset as i64,
                        e.max_timestamp,
                    ),
                    None => (0, base_offset, -1),
                };
                (ix, pos, off, ts)
            }
            None => (Index::new(), 0, base_offset, -1),
        };
        let mut seg = Segment {
            base_offset,
            log_path,
            index_path,
            time_path,
            file,
            state: RwLock::new(State {
                size: 0,
                next_offset: base_offset,
                max_timestamp: max_ts,
                index,
                bytes_since_index: 0,
                created_ms: now_ms,
            }),
            index_rebuilt,
            index_wrong: AtomicBool::new(false),
        };
        let mut stop = seg.scan_from(
            from_pos,
            from_offset,
            file_len,
            index_interval,
            dense,
            below,
        )?;
        if stop.is_some() && from_pos > 0 {
            // The index led the scan to something that is not a valid batch:
            // it may be damaged or stale, so it cannot be trusted to have
            // skipped only good data. Rebuild it with a full scan, which also
            // finds the first bad batch precisely.
            {
                let mut st = seg.state.write().map_err(|_| LogError::Closed)?;
                st.size = 0;
                st.next_offset = base_offset;
                st.max_timestamp = -1;
                st.index = Index::new();
                st.bytes_since_index = 0;
            }
            seg.index_rebuilt = true;
            stop = seg.scan_from(0, base_offset, file_len, index_interval, dense, below)?;
        }
        Ok((seg, stop))
    }

    /// The index files were missing or unusable at open (see `open`) and
    /// should be written from the rebuilt in-memory index.
    pub fn index_rebuilt(&self) -> bool {
        self.index_rebuilt
    }

    /// Walk batches from `pos`, validating each (CRC, magic, offsets
    /// increasing from `expect_at_least`), extending the in-memory index and
    /// the segment's size. Stops at the first bad batch.
    fn scan_from(
        &self,
        mut pos: u64,
        mut min_offset: i64,
        file_len: u64,
        index_interval: u64,
        dense: bool,
        below: i64,
    ) -> Result<Option<ScanStop>> {
        let mut st = self.state.write().map_err(|_| LogError::Closed)?;
        let mut win = Window::new(&self.file, file_len);
        let mut bad = None;
        // Where the previous batch started, and the state before it: see the
        // "goes backwards" case below.
        let mut before_prev: Option<(u64, i64, i64, u64, i64)> = None;
        while pos < file_len {
            let head = win.get(pos, HEADER_LEN).at(&self.log_path)?;
            let h = match BatchHeader::parse(head) {
                Ok(h) => h,
                Err(error) => {
                    bad = Some(error);
                    break;
                }
            };
            let len = h.total_len();
            let end = pos + len as u64;
            if end > file_len {
                bad = Some(BatchError::Truncated {
                    need: len,
                    have: (file_len - pos) as usize,
                });
                break;
            }
            let bytes = win.get(pos, len).at(&self.log_path)?;
            if let Err(error) = batch::validate(bytes) {
                bad = Some(error);
                break;
            }
            if h.base_offset < min_offset || h.base_offset < self.base_offset {
                bad = Some(BatchError::Decode(format!(
                    "batch base offset {} goes backwards (expected at least {})",
                    h.base_offset, min_offset
                )));
                // Base offsets are outside the CRC. Where gaps are allowed
                // (not `dense`: compaction), the previous batch's base may
                // be the damaged one, raised: nothing tells which, so the
                // damage is taken to start at the previous batch, whose
                // offsets are not to be trusted either.
                if !dense && let Some((prev_pos, prev_min, max_ts, since, next)) = before_prev {
                    bad = Some(BatchError::Decode(format!(
                        "the next batch's base offset {} is below this one's end {min_offset}: one of the two base offsets is damaged",
                        h.base_offset
                    )));
                    pos = prev_pos;
                    min_offset = prev_min;
                    st.size = prev_pos;
                    st.max_timestamp = max_ts;
                    st.bytes_since_index = since;
                    st.next_offset = next;
                    st.index
                        .truncate_to_position(prev_pos.min(u32::MAX as u64) as u32);
                }
                break;
            }
            if dense && h.base_offset != min_offset {
                bad = Some(BatchError::Decode(format!(
                    "batch base offset {} skips ahead (expected {})",
                    h.base_offset, min_offset
                )));
                break;
            }
            if h.last_offset() >= below {
                bad = Some(BatchError::Decode(format!(
                    "batch offsets {} to {} reach the next segment's base {below}",
                    h.base_offset,
                    h.last_offset()
                )));
                break;
            }
            if h.last_offset() - self.base_offset > u32::MAX as i64 || pos > u32::MAX as u64 {
                bad = Some(BatchError::Decode(
                    "segment exceeds 4 GiB or 2^32 offsets".into(),
                ));
                break;
            }
            before_prev = Some((
                pos,
                min_offset,
                st.max_timestamp,
                st.bytes_since_index,
                st.next_offset,
            ));
            Self::note_batch(&mut st, self.base_offset, pos, &h, index_interval);
            st.size = end;
            min_offset = h.next_offset();
            pos = end;
        }
        let Some(error) = bad else {
            return Ok(None);
        };
        let resume = self.next_valid(&mut win, pos + 1, min_offset, below, file_len)?;
        Ok(Some(ScanStop {
            position: pos,
            error,
            resume,
        }))
    }

    /// The first valid batch (CRC-checked, base offset at least
    /// `min_offset`, wholly inside the file) starting at any byte position
    /// from `from` on: what separates damage in the middle of a file (valid
    /// data follows, an operator may want it) from a damaged tail (nothing
    /// does, cutting it loses nothing). Runs only when a scan found damage;
    /// its cost is one pass over the rest of the file.
    fn next_valid(
        &self,
        win: &mut Window,
        from: u64,
        min_offset: i64,
        below: i64,
        file_len: u64,
    ) -> Result<Option<(u64, i64)>> {
        let mut p = from;
        while p + HEADER_LEN as u64 <= file_len {
            // The magic byte first: almost every position fails there.
            let head = win.get(p, HEADER_LEN).at(&self.log_path)?;
            if head[16] as i8 != batch::MAGIC {
                p += 1;
                continue;
            }
            if let Ok(h) = BatchHeader::parse(head)
                && h.base_offset >= min_offset
                && h.last_offset() < below
                && h.last_offset() - self.base_offset <= u32::MAX as i64
                && p + h.total_len() as u64 <= file_len
            {
                let bytes = win.get(p, h.total_len()).at(&self.log_path)?;
                if batch::validate(bytes).is_ok() {
                    return Ok(Some((p, h.base_offset)));
                }
            }
            p += 1;
        }
        Ok(None)
    }

    fn note_batch(st: &mut State, base: i64, pos: u64, h: &BatchHeader, interval: u64) {
        st.max_timestamp = st.max_timestamp.max(h.max_timestamp);
        let past_last = st.index.last().is_none_or(|e| pos > e.position as u64);
        if st.bytes_since_index >= interval && pos > 0 && past_last {
            st.index.push(IndexEntry {
                relative_offset: (h.base_offset - base) as u32,
                position: pos as u32,
                max_timestamp: st.max_timestamp,
            });
            st.bytes_since_index = 0;
        }
        st.bytes_since_index += h.total_len() as u64;
        st.next_offset = h.next_offset();
    }

    /// Cut the file back to `position` (recovery of a torn tail only) and
    /// fsync, so that the truncation is on disk before new appends land after
    /// it.
    pub fn truncate_to(&self, position: u64) -> Result<()> {
        self.file.set_len(position).at(&self.log_path)?;
        self.file.sync_all().at(&self.log_path)?;
        let mut st = self.state.write().map_err(|_| LogError::Closed)?;
        st.size = position;
        st.index.truncate_to_position(position as u32);
        Ok(())
    }

    /// Append validated batches whose base offsets are already assigned.
    /// One `write` call, so a crash leaves at most one torn tail.
    pub fn append(&self, bytes: &[u8], headers: &[BatchHeader], index_interval: u64) -> Result<()> {
        (&self.file).write_all(bytes).at(&self.log_path)?;
        let mut st = self.state.write().map_err(|_| LogError::Closed)?;
        let mut pos = st.size;
        for h in headers {
            Self::note_batch(&mut st, self.base_offset, pos, h, index_interval);
            pos += h.total_len() as u64;
        }
        st.size = pos;
        Ok(())
    }

    /// fdatasync: makes every byte written so far durable (the file size is
    /// metadata fdatasync includes because reads depend on it).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.log_path)
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn size(&self) -> u64 {
        self.state.read().map(|s| s.size).unwrap_or(0)
    }

    pub fn next_offset(&self) -> i64 {
        self.state
            .read()
            .map(|s| s.next_offset)
            .unwrap_or(self.base_offset)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.state.read().map(|s| s.max_timestamp).unwrap_or(-1)
    }

    pub fn created_ms(&self) -> i64 {
        self.state.read().map(|s| s.created_ms).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Persist the indexes (at roll and clean close).
    pub fn write_index_files(&self) -> Result<()> {
        let st = self.state.read().map_err(|_| LogError::Closed)?;
        st.index.write_files(&self.index_path, &self.time_path)
    }

    pub fn index_paths(&self) -> (&Path, &Path) {
        (&self.index_path, &self.time_path)
    }

    fn read_header(&self, pos: u64) -> Result<BatchHeader> {
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, pos).at(&self.log_path)?;
        BatchHeader::parse(&head).map_err(|e| LogError::Corrupt {
            file: self.log_path.clone(),
            position: pos,
            offset: -1,
            reason: e.to_string(),
        })
    }

    /// Base offsets are outside the CRC: check that the batch at `pos`
    /// starts where a walk expects it to (exactly at an index entry's offset,
    /// otherwise at or after the end of the previous batch, and always below
    /// the segment's end offset).
    fn check_base(&self, h: &BatchHeader, pos: u64, min: i64, exact: bool) -> Result<()> {
        let next = self.next_offset();
        if h.base_offset < min || (exact && h.base_offset != min) || h.base_offset >= next {
            return Err(LogError::Corrupt {
                file: self.log_path.clone(),
                position: pos,
                offset: min,
                reason: format!(
                    "batch base offset {} out of sequence (expected {}{min}, below {next})",
                    h.base_offset,
                    if exact { "" } else { "at least " }
                ),
            });
        }
        Ok(())
    }

    /// Where a header walk from an index entry starts: byte position, the
    /// offset the first batch must start at (or after), and whether exactly.
    fn walk_start(&self, entry: Option<IndexEntry>) -> (u64, i64, bool) {
        match entry {
            Some(e) => (
                e.position as u64,
                self.base_offset + e.relative_offset as i64,
                true,
            ),
            None => (0, self.base_offset, false),
        }
    }

    /// Byte position of the batch containing `offset` (or the first batch
    /// after it, in a compacted segment), scanning headers forward from the
    /// sparse index. `None` when the segment holds nothing at or after it.
    ///
    /// Base offsets are outside the CRC, so the walk checks them: the batch
    /// at an index entry starts exactly at the entry's offset, and each one
    /// after it at or past where the previous one ended.
    pub fn position_of(&self, offset: i64) -> Result<Option<u64>> {
        let (entry, size) = {
            let st = self.state.read().map_err(|_| LogError::Closed)?;
            let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
            (st.index.floor(rel), st.size)
        };
        let entry = entry.filter(|_| !self.index_wrong.load(Ordering::Relaxed));
        match self.walk_to(entry, offset, size) {
            Err(e) if entry.is_some() => self.without_index(e, |s| s.walk_to(None, offset, size)),
            other => other,
        }
    }

    /// A lookup guided by an index entry failed: if a walk from the
    /// segment's start succeeds, the entry was wrong, not the log; stop using
    /// the index (`eddy repair` rewrites it). Otherwise the log is damaged
    /// there and the walk's error says where.
    fn without_index<T>(
        &self,
        guided: LogError,
        walk: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<T> {
        let r = walk(self)?;
        if !self.index_wrong.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                file = %self.index_path.display(),
                error = %guided,
                "index entry does not match the log; reading this segment without its index"
            );
        }
        Ok(r)
    }

    fn walk_to(&self, entry: Option<IndexEntry>, offset: i64, size: u64) -> Result<Option<u64>> {
        let (mut pos, mut min, mut exact) = self.walk_start(entry);
        while pos < size {
            let h = self.read_header(pos)?;
            self.check_base(&h, pos, min, exact)?;
            if h.last_offset() >= offset {
                return Ok(Some(pos));
            }
            exact = false;
            min = h.next_offset();
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Whole batches starting at byte `pos`, up to `max_bytes` but always at
    /// least one batch (Kafka's KIP-74 rule, so a consumer never stalls on a
    /// batch larger than its limit).
    /// Batches whose base offset is at or past `end_offset` are left out:
    /// they were written but not yet published to readers.
    pub fn read_from(&self, pos: u64, max_bytes: usize, end_offset: i64) -> Result<Bytes> {
        let size = self.size();
        if pos >= size {
            return Ok(Bytes::new());
        }
        let want = (size - pos).min(max_bytes.max(HEADER_LEN) as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        self.file.read_exact_at(&mut buf, pos).at(&self.log_path)?;
        // Trim to whole batches.
        let mut end = 0usize;
        let mut min = self.base_offset;
        while end + HEADER_LEN <= buf.len() {
            let h = match BatchHeader::parse(&buf[end..])
                .map_err(|e| LogError::Corrupt {
                    file: self.log_path.clone(),
                    position: pos + end as u64,
                    offset: min,
                    reason: e.to_string(),
                })
                // Outside the CRC: a damaged base offset must not be served.
                .and_then(|h| {
                    self.check_base(&h, pos + end as u64, min, false)
                        .map(|()| h)
                }) {
                Ok(h) => h,
                // The batches before the damage are served; the read that
                // starts at it fails.
                Err(_) if end > 0 => break,
                Err(e) => return Err(e),
            };
            min = h.next_offset();
            if h.base_offset >= end_offset {
                break;
            }
            if pos + (end + h.total_len()) as u64 > size {
                if end > 0 {
                    break;
                }
                // Published batches lie wholly below `size`: the header is
                // damaged (its length is outside the CRC).
                return Err(LogError::Corrupt {
                    file: self.log_path.clone(),
                    position: pos + end as u64,
                    offset: h.base_offset,
                    reason: format!(
                        "batch of {} bytes runs past the segment's end at byte {size}",
                        h.total_len()
                    ),
                });
            }
            if end + h.total_len() > buf.len() {
                if end == 0 {
                    // The first batch is larger than max_bytes: return it whole.
                    let mut whole = BytesMut::zeroed(h.total_len());
                    self.file
                        .read_exact_at(&mut whole, pos)
                        .at(&self.log_path)?;
                    self.check_crc(&whole, pos, &h)?;
                    return Ok(whole.freeze());
                }
                break;
            }
            // The CRC too (Kafka's broker leaves it to consumers): eddy's own
            // readers (catalog replay, scans, views, the CLI) decode a whole
            // read at once, so one bad batch served in a read would hide the
            // good ones before it.
            let batch = &buf[end..end + h.total_len()];
            match self.check_crc(batch, pos + end as u64, &h) {
                Ok(()) => {}
                Err(_) if end > 0 => break,
                Err(e) => return Err(e),
            }
            end += h.total_len();
        }
        buf.truncate(end);
        Ok(buf.freeze())
    }

    /// A batch read at `pos` passes its CRC-32C, or is `Corrupt` there.
    fn check_crc(&self, bytes: &[u8], pos: u64, h: &BatchHeader) -> Result<()> {
        batch::validate(bytes)
            .map(|_| ())
            .map_err(|e| LogError::Corrupt {
                file: self.log_path.clone(),
                position: pos,
                offset: h.base_offset,
                reason: e.to_string(),
            })
    }

    /// Earliest record at or after byte position given by the time index
    /// whose timestamp is ≥ `ts`: (offset, timestamp).
    pub fn find_timestamp(&self, ts: i64, end_offset: i64) -> Result<Option<(i64, i64)>> {
        let (entry, size) = {
            let st = self.state.read().map_err(|_| LogError::Closed)?;
            (st.index.floor_for_timestamp(ts), st.size)
        };
        let entry = entry.filter(|_| !self.index_wrong.load(Ordering::Relaxed));
        match self.find_timestamp_from(entry, ts, end_offset, size) {
            Err(e) if entry.is_some() => {
                self.without_index(e, |s| s.find_timestamp_from(None, ts, end_offset, size))
            }
            other => other,
        }
    }

    fn find_timestamp_from(
        &self,
        entry: Option<IndexEntry>,
        ts: i64,
        end_offset: i64,
        size: u64,
    ) -> Result<Option<(i64, i64)>> {
        let (mut pos, mut min, mut exact) = self.walk_start(entry);
        while pos < size {
            let h = self.read_header(pos)?;
            self.check_base(&h, pos, min, exact)?;
            exact = false;
            min = h.next_offset();
            if h.base_offset >= end_offset {
                break;
            }
            if h.max_timestamp >= ts && !h.is_control() {
                if pos + h.total_len() as u64 > size {
                    return Err(LogError::Corrupt {
                        file: self.log_path.clone(),
                        position: pos,
                        offset: h.base_offset,
                        reason: "batch runs past the segment's end".into(),
                    });
                }
                let mut whole = BytesMut::zeroed(h.total_len());
                self.file
                    .read_exact_at(&mut whole, pos)
                    .at(&self.log_path)?;
                let records = batch::decode(whole.freeze()).map_err(|e| LogError::Corrupt {
                    file: self.log_path.clone(),
                    position: pos,
                    offset: h.base_offset,
                    reason: e.to_string(),
                })?;
                let next = pos + h.total_len() as u64;
                for r in records {
                    let rts = if h.is_log_append_time() {
                        h.max_timestamp
                    } else {
                        r.timestamp
                    };
                    if rts >= ts {
                        // The answer's offset comes from this batch's base
                        // offset: the next batch must not contradict it.
                        if next + HEADER_LEN as u64 <= size {
                            self.check_base(&self.read_header(next)?, next, min, false)?;
                        }
                        return Ok(Some((r.offset, rts)));
                    }
                }
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Headers of every batch, in order (for producer-state rebuild and the
    /// cleaner). Reads only headers.
    pub fn headers_from(&self, from_offset: i64) -> Result<Vec<BatchHeader>> {
        Ok(self
            .headers_and_markers_from(from_offset, false)?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }

    /// Headers of every batch from `from_offset`, with the transaction
    /// marker of each control batch when `markers` (producer-state rebuild:
    /// only control batches, which are tiny, are read past their header).
    pub fn headers_and_markers_from(
        &self,
        from_offset: i64,
        markers: bool,
    ) -> Result<Vec<(BatchHeader, Option<Marker>)>> {
        let size = self.size();
        let mut out = Vec::new();
        let mut pos = match self.position_of(from_offset)? {
            Some(p) => p,
            None => return Ok(out),
        };
        let mut win = Window::new(&self.file, size);
        while pos < size {
            let head = win.get(pos, HEADER_LEN).at(&self.log_path)?;
            let h = BatchHeader::parse(head).map_err(|e| LogError::Corrupt {
                file: self.log_path.clone(),
                position: pos,
                offset: -1,
                reason: e.to_string(),
            })?;
            let marker = if markers && h.is_control() {
                let whole = win.get(pos, h.total_len()).at(&self.log_path)?;
                Some(batch::marker_of(whole).map_err(|e| LogError::Corrupt {
                    file: self.log_path.clone(),
                    position: pos,
                    offset: h.base_offset,
                    reason: e.to_string(),
                })?)
            } else {
                None
            };
            pos += h.total_len() as u64;
            out.push((h, marker));
        }
        Ok(out)
    }

    /// Every byte of the segment (the cleaner reads closed segments whole).
    pub fn read_all(&self) -> Result<Bytes> {
        let size = self.size() as usize;
        let mut buf = BytesMut::zeroed(size);
        self.file.read_exact_at(&mut buf, 0).at(&self.log_path)?;
        Ok(buf.freeze())
    }

    /// Why `ix` (index files loaded from disk) does not fit this segment:
    /// an entry that does not point at the start of a batch with the
    /// entry's offset, or whose timestamp is not the largest one up to that
    /// batch. `None`: it fits. Open trusts sane-looking index files without
    /// reading every batch header; `eddy verify` checks. Call only on a
    /// segment opened with a full scan (its size covers only valid batches).
    pub fn check_index(&self, ix: &Index) -> Result<Option<String>> {
        let mut batches = std::collections::HashMap::new();
        let (mut pos, mut max_ts) = (0u64, -1i64);
        for h in self.headers_from(self.base_offset)? {
            max_ts = max_ts.max(h.max_timestamp);
            batches.insert(pos, (h.base_offset, max_ts));
            pos += h.total_len() as u64;
        }
        for e in ix.entries() {
            let want = self.base_offset + e.relative_offset as i64;
            match batches.get(&(e.position as u64)) {
                Some((base, _)) if *base != want => {}
                Some((_, ts)) if *ts != e.max_timestamp => {
                    return Ok(Some(format!(
                        "time index entry for offset {want} says {} but the largest timestamp up to it is {ts}",
                        e.max_timestamp
                    )));
                }
                Some(_) => continue,
                None => {}
            }
            return Ok(Some(format!(
                "entry for offset {want} points at byte {}, which is not the start of that batch",
                e.position
            )));
        }
        Ok(None)
    }

    /// Full validation of every batch (`eddy topic verify`, tests).
    pub fn verify(&self) -> Result<()> {
        let size = self.size();
        let mut win = Window::new(&self.file, size);
        let mut pos = 0u64;
        let mut min = self.base_offset;
        while pos < size {
            let head = win.get(pos, HEADER_LEN).at(&self.log_path)?;
            let corrupt = |reason: String| LogError::Corrupt {
                file: self.log_path.clone(),
                position: pos,
                offset: min,
                reason,
            };
            let h = BatchHeader::parse(head).map_err(|e| corrupt(e.to_string()))?;
            let bytes = win.get(pos, h.total_len()).at(&self.log_path)?;
            batch::validate(bytes).map_err(|e| corrupt(e.to_string()))?;
            if h.base_offset < min {
                return Err(corrupt(format!("offset {} goes backwards", h.base_offset)));
            }
            min = h.next_offset();
            pos += h.total_len() as u64;
        }
        Ok(())
    }
}
