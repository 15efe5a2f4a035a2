//! Checkpoints of dataflow state, so a restart does not replay history.
//!
//! Every table and materialized view writes its state into one file at a
//! tick boundary: each operator its own state (group accumulators, join
//! arrangements, counts, top-k orders), each leaf the offsets it has read,
//! each view and table its output index. Restoring gives the operators back
//! exactly the state they had after that tick; the leaves then continue from
//! the saved offsets, so a restart reads only what arrived since.
//!
//! The state is row bytes (arrow's row format) and integers, written with
//! [`Writer`] and read back with [`Reader`], which checks every length
//! against what is left and every operator's tag against the operator being
//! restored: a file that does not match gives an error, never a panic, and
//! the relation is rebuilt from the log instead. The encoding is ours
//! because it is five primitive types inside a container (header, CRC,
//! atomic replace) that has to be ours anyway.
//!
//! The file ([`CheckpointFile`]): a magic, the build that wrote it (row
//! encodings belong to the arrow version), the epoch, then one entry per
//! relation — kind, name, the catalog version of its definition, a
//! fingerprint of its plan, its state — and a CRC-32C of all of it. It is
//! replaced atomically (write, fsync, rename, fsync directory), so a crash
//! leaves the old checkpoint or the new one.

use std::path::{Path, PathBuf};

use super::rows::RowBytes;
use super::{DataflowError, Result};
use crate::log::LogStore;

const MAGIC: &[u8; 8] = b"EDDYCKP1";

/// The build a checkpoint belongs to: a different eddy or DataFusion (and
/// so arrow, whose row format the state is in) rebuilds from the log.
pub fn build_id() -> String {
    format!(
        "eddy {} datafusion {}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

fn corrupt(what: impl Into<String>) -> DataflowError {
    DataflowError::Checkpoint(what.into())
}

/// Serializes state.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// An operator's name, checked when restoring.
    pub fn tag(&mut self, t: &str) {
        self.bytes(t.as_bytes());
    }

    /// A multiset: (row, count) pairs.
    pub fn counts<'a>(&mut self, len: usize, entries: impl Iterator<Item = (&'a [u8], i64)>) {
        self.u64(len as u64);
        let mut n = 0;
        for (k, c) in entries {
            self.bytes(k);
            self.i64(c);
            n += 1;
        }
        debug_assert_eq!(n, len);
    }
}

/// Reads what a [`Writer`] wrote; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The log the restored leaves will read (to check their topics).
    pub log: &'a dyn LogStore,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], log: &'a dyn LogStore) -> Reader<'a> {
        Reader { buf, pos: 0, log }
    }

    pub fn is_done(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| corrupt("state ends early"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(corrupt(format!("{b} is not a boolean"))),
        }
    }

    /// A count of following items, each at least `min_bytes` long: a count
    /// the rest of the state cannot hold is corruption (and must not size
    /// an allocation).
    pub fn len(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes.max(1) as u64) > left {
            return Err(corrupt(format!("{n} items do not fit in {left} bytes")));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(1)?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("a name is not UTF-8"))
    }

    /// Check the next operator is `t`.
    pub fn tag(&mut self, t: &str) -> Result<()> {
        let got = self.bytes()?;
        if got != t.as_bytes() {
            return Err(corrupt(format!(
                "found {} where {t} was expected",
                String::from_utf8_lossy(got)
            )));
        }
        Ok(())
    }

    /// A multiset written by [`Writer::counts`].
    pub fn counts(&mut self) -> Result<Vec<(RowBytes, i64)>> {
        let n = self.len(16)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k: RowBytes = self.bytes()?.into();
            out.push((k, self.i64()?));
        }
        Ok(out)
    }
}

/// What a relation's entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Table,
    View,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::View => "view",
        }
    }
}

/// One relation's saved state.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    /// The catalog version (offset of its definition in the catalog
    /// topic) it was saved under: a relation redefined since is rebuilt.
    pub version: i64,
    /// The plan (views) or layout (tables) it was saved under.
    pub fingerprint: String,
    pub state: Vec<u8>,
}

/// A whole checkpoint: every relation's state after one tick.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    pub epoch: u64,
    pub written_ms: i64,
    pub entries: Vec<Entry>,
}

impl CheckpointFile {
    /// The checkpoint's path in a data directory.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("checkpoints").join("dataflows.ckpt")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.buf.extend_from_slice(MAGIC);
        w.bytes(build_id().as_bytes());
        w.u64(self.epoch);
        w.i64(self.written_ms);
        w.u64(self.entries.len() as u64);
        for e in &self.entries {
            w.tag(e.kind.tag());
            w.bytes(e.name.as_bytes());
            w.i64(e.version);
            w.bytes(e.fingerprint.as_bytes());
            w.bytes(&e.state);
        }
        let crc = crc32c::crc32c(&w.buf);
        w.buf.extend_from_slice(&crc.to_le_bytes());
        w.buf
    }

    /// Parse a checkpoint; any damage (torn, bit flips, another build) is
    /// an error naming it.
    pub fn decode(data: &[u8], log: &dyn LogStore) -> Result<CheckpointFile> {
        if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not an eddy checkpoint"));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32c::crc32c(body) != u32::from_le_bytes(c) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader::new(&body[MAGIC.len()..], log);
        let build = r.string()?;
        if build != build_id() {
            return Err(corrupt(format!(
                "written by {build}, this is {}",
                build_id()
            )));
        }
        let epoch = r.u64()?;
        let written_ms = r.i64()?;
        let n = r.len(40)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match r.bytes()? {
                b"table" => Kind::Table,
                b"view" => Kind::View,
                k => {
                    return Err(corrupt(format!(
                        "unknown entry kind {}",
                        String::from_utf8_lossy(k)
                    )));
                }
            };
            entries.push(Entry {
                kind,
                name: r.string()?,
                version: r.i64()?,
                fingerprint: r.string()?,
                state: r.bytes()?.to_vec(),
            });
        }
        if !r.is_done() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(CheckpointFile {
            epoch,
            written_ms,
            entries,
        })
    }

    /// Replace the data directory's checkpoint with this one, atomically.
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        let dir = path
            .parent()
            .ok_or_else(|| corrupt("checkpoint path has no directory"))?;
        let io = |e: std::io::Error| DataflowError::Other(format!("{}: {e}", dir.display()));
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            crate::log::index::sync_dir(data_dir)?;
        }
        crate::log::index::write_atomic(&path, &self.encode())?;
        crate::log::index::sync_dir(dir)?;
        Ok(())
    }

    /// The data directory's checkpoint: `Ok(None)` when there is none.
    pub fn load(data_dir: &Path, log: &dyn LogStore) -> Result<Option<CheckpointFile>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(data) => Self::decode(&data, log)
                .map(Some)
                .map_err(|e| DataflowError::Checkpoint(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataflowError::Other(format!("{}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Log;

    fn sample() -> CheckpointFile {
        CheckpointFile {
            epoch: 7,
            written_ms: 1_700_000_000_000,
            entries: vec![
                Entry {
                    kind: Kind::Table,
                    name: "t".into(),
                    version: 3,
                    fingerprint: "t schema".into(),
                    state: vec![1, 2, 3],
                },
                Entry {
                    kind: Kind::View,
                    name: "v".into(),
                    version: 9,
                    fingerprint: "plan".into(),
                    state: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Default::default()).expect("log");
        let bytes = sample().encode();
        let back = CheckpointFile::decode(&bytes, &*log).expect("decodes");
        assert_eq!(back.epoch, 7);
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[0].state, vec![1, 2, 3]);
        assert_eq!(back.entries[1].kind, Kind::View);
        // Every truncation and every single-bit flip is refused, never a panic.
        for len in 0..bytes.len() {
            assert!(
                CheckpointFile::decode(&bytes[..len], &*log).is_err(),
                "len {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(CheckpointFile::decode(&b, &*log).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn reader_refuses_counts_that_cannot_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), Default::default()).expect("log");
        let mut w = Writer::new();
        w.u64(u64::MAX);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes, &*log);
        assert!(r.counts().is_err());
        let mut w = Writer::new();
        w.counts(2, [(&b"ab"[..], 1), (&b""[..], -2)].into_iter());
        w.tag("x");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes, &*log);
        let c = r.counts().expect("counts");
        assert_eq!(
            c,
            vec![
                (RowBytes::from(&b"ab"[..]), 1),
                (RowBytes::from(&b""[..]), -2)
            ]
        );
        assert!(r.tag("y").is_err());
    }
}
