//! Sparse indexes of one segment, in Kafka's file formats:
//!
//! - `.index`: entries of (relative offset u32, file position u32), 8 bytes,
//!   big-endian; one entry per `index.interval.bytes` of log, pointing at the
//!   start of a batch.
//! - `.timeindex`: entries of (timestamp i64, relative offset u32), 12 bytes;
//!   the timestamp is the largest record timestamp in the segment up to and
//!   including the indexed batch, so every batch before the entry's batch has
//!   only records older than or equal to it.
//!
//! Both live in memory while the segment is open and are written to disk
//! whole (temp file, fsync, rename) when a segment is rolled or the log is
//! closed cleanly. The active segment's indexes are therefore always rebuilt
//! by the recovery scan after a crash; a closed segment's files are checked
//! for sanity at open and rebuilt if missing or stale.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::error::{IoContext, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch's base, relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
    /// Largest timestamp seen in the segment up to and including this batch.
    pub max_timestamp: i64,
}

/// The in-memory form of both index files of a segment.
#[derive(Debug, Default, Clone)]
pub struct Index {
    entries: Vec<IndexEntry>,
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    pub fn push(&mut self, e: IndexEntry) {
        self.entries.push(e);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    /// The last entry whose relative offset is ≤ `relative`, if any.
    pub fn floor(&self, relative: u32) -> Option<IndexEntry> {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Position of the last indexed batch whose base offset is ≤ `relative`,
    /// or 0 when there is none.
    pub fn position_for(&self, relative: u32) -> u32 {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].position
        }
    }

    /// The entry `position_for_timestamp` starts from, if any.
    pub fn floor_for_timestamp(&self, ts: i64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.max_timestamp < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Position from which to scan for the first record with timestamp ≥ `ts`:
    /// the last entry whose running max is still < `ts` (all batches before it
    /// are older), or 0.
    pub fn position_for_timestamp(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.max_timestamp < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].position
        }
    }

    /// Drop entries at or past byte `position` (after truncating the log).
    pub fn truncate_to_position(&mut self, position: u32) {
        let i = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(i);
    }

    /// Write both files atomically: temp file, fsync, rename. The fsync makes
    /// the rename publish complete contents; the caller fsyncs the directory
    /// (once for all files of a roll) so the new names survive a crash.
    pub fn write_files(&self, index_path: &Path, time_path: &Path) -> Result<()> {
        let mut off = Vec::with_capacity(self.entries.len() * 8);
        let mut time = Vec::with_capacity(self.entries.len() * 12);
        for e in &self.entries {
            off.extend_from_slice(&e.relative_offset.to_be_bytes());
            off.extend_from_slice(&e.position.to_be_bytes());
            time.extend_from_slice(&e.max_timestamp.to_be_bytes());
            time.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        write_atomic(index_path, &off)?;
        write_atomic(time_path, &time)?;
        Ok(())
    }

    /// Load both files; `None` if either is missing or fails the sanity
    /// checks (length a multiple of the entry size, the two files agreeing,
    /// offsets and positions strictly increasing, positions inside the log,
    /// timestamps non-decreasing). The caller then rebuilds by scanning.
    pub fn load_files(index_path: &Path, time_path: &Path, log_len: u64) -> Option<Index> {
        let off = fs::read(index_path).ok()?;
        let time = fs::read(time_path).ok()?;
        if off.len() % 8 != 0 || time.len() % 12 != 0 || off.len() / 8 != time.len() / 12 {
            return None;
        }
        let mut entries = Vec::with_capacity(off.len() / 8);
        for (o, t) in off.chunks_exact(8).zip(time.chunks_exact(12)) {
            let rel = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let pos = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&t[0..8]);
            let ts = i64::from_be_bytes(ts);
            let trel = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            if trel != rel || pos as u64 >= log_len.max(1) {
                return None;
            }
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if rel <= prev.relative_offset || pos <= prev.position || ts < prev.max_timestamp {
                    return None;
                }
            }
            entries.push(IndexEntry {
                relative_offset: rel,
                position: pos,
                max_timestamp: ts,
            });
        }
        Some(Index { entries })
    }
}

/// Write `data` to `path` so that after a crash the file holds either its old
/// contents or all of `data`: write a temp file, fsync it (the data is on
/// disk before the name points at it), then rename over `path`. The caller
/// fsyncs the directory when the rename itself must survive a crash.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    Ok(())
}

/// fsync a directory so that creations, renames and deletions inside it
/// survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_round_trip() {
        let mut ix = Index::new();
        for i in 0..10u32 {
            ix.push(IndexEntry {
                relative_offset: i * 100,
                position: i * 4096,
                max_timestamp: 1000 + i as i64 * 10,
            });
        }
        assert_eq!(ix.position_for(0), 0);
        assert_eq!(ix.position_for(150), 4096);
        assert_eq!(ix.position_for(10_000), 9 * 4096);
        assert_eq!(ix.position_for_timestamp(0), 0);
        assert_eq!(ix.position_for_timestamp(1025), 2 * 4096);
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("x.index"), dir.path().join("x.timeindex"));
        ix.write_files(&a, &b).expect("write");
        let back = Index::load_files(&a, &b, 1 << 20).expect("load");
        assert_eq!(back.entries, ix.entries);
        // A log shorter than the indexed positions makes the index stale.
        assert!(Index::load_files(&a, &b, 4096).is_none());
        // A torn index file is rejected.
        let bytes = fs::read(&a).expect("read");
        fs::write(&a, &bytes[..bytes.len() - 3]).expect("write");
        assert!(Index::load_files(&a, &b, 1 << 20).is_none());
    }
}
