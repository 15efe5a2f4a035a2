//! Idempotent producer state of one partition: for each producer id, its
//! epoch and the last few batches it wrote (sequence range → offsets), so a
//! retried batch is recognised as a duplicate and answered with its original
//! offsets instead of being written twice, and a gap in sequences is refused.
//!
//! It also keeps the partition's transactions (Kafka's producer state and
//! `.txnindex` together): the first offset of every producer's open
//! transaction, which bounds the last stable offset (LSO) read_committed
//! readers stop at, and every aborted transaction (producer, first offset,
//! marker offset) still in the log, which readers use to drop its records.
//!
//! State is rebuilt at open from the newest snapshot (`<offset:020>.snapshot`,
//! written at every segment roll and at clean close) plus the batch headers
//! after it (and the markers of control batches), as Kafka does, so restart
//! cost does not grow with history.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use std::collections::BTreeMap;

use super::batch::{BatchHeader, Marker};
use super::error::{LogError, Result};
use super::index::write_atomic;

/// Kafka keeps the last five batches per producer (max in-flight requests).
const CACHED_BATCHES: usize = 5;
/// Snapshots written before transactions (no transaction section).
const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"EPS1";
const SNAPSHOT_MAGIC: &[u8; 4] = b"EPS2";

/// An aborted transaction in one partition: its records are those of
/// `producer_id` from `first_offset` up to the abort marker at
/// `last_offset` (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl AbortedTxn {
    /// Whether the record at `offset` written by `producer_id` belongs to
    /// this aborted transaction.
    pub fn covers(&self, producer_id: i64, offset: i64) -> bool {
        producer_id == self.producer_id && self.first_offset <= offset && offset < self.last_offset
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
}

/// The outcome of checking a batch against the state.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the expected next sequence: append it.
    Append,
    /// Already written: answer with these offsets, write nothing.
    Duplicate(BatchMeta),
    /// Sequence gap or a fenced epoch.
    Reject(Rejection),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    OutOfOrder { got: i32, expected: i32 },
    Fenced { current: i16 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id → offset of its first record here.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerStates {
    pub fn check(&self, h: &BatchHeader) -> Check {
        if !h.is_idempotent() || h.base_sequence < 0 {
            return Check::Append;
        }
        let Some(e) = self.map.get(&h.producer_id) else {
            // A producer we have no state for must start at sequence 0.
            return if h.base_sequence == 0 {
                Check::Append
            } else {
                Check::Reject(Rejection::OutOfOrder {
                    got: h.base_sequence,
                    expected: 0,
                })
            };
        };
        if h.producer_epoch < e.epoch {
            return Check::Reject(Rejection::Fenced { current: e.epoch });
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 {
                Check::Append
            } else {
                Check::Reject(Rejection::OutOfOrder {
                    got: h.base_sequence,
                    expected: 0,
                })
            };
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == h.last_sequence())
        {
            return Check::Duplicate(*b);
        }
        let expected = e.batches.back().map(|b| next_seq(b.last_seq)).unwrap_or(0);
        if h.base_sequence != expected {
            return Check::Reject(Rejection::OutOfOrder {
                got: h.base_sequence,
                expected,
            });
        }
        Check::Append
    }

    /// Record a batch that was written (its base offset assigned);
    /// `marker` is the transaction marker a control batch carries.
    pub fn update(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if h.is_transactional() && h.producer_id >= 0 {
            if h.is_control() {
                let first = self.ongoing.remove(&h.producer_id);
                if let (Some(first_offset), Some(Marker::Abort)) = (first, marker) {
                    self.aborted.push(AbortedTxn {
                        producer_id: h.producer_id,
                        first_offset,
                        last_offset: h.base_offset,
                    });
                }
                // A marker written under a bumped epoch (the coordinator
                // aborting for a new producer instance) fences the old one.
                let e = self.map.entry(h.producer_id).or_default();
                if h.producer_epoch > e.epoch {
                    e.epoch = h.producer_epoch;
                    e.batches.clear();
                }
                return;
            }
            self.ongoing.entry(h.producer_id).or_insert(h.base_offset);
        }
        if !h.is_idempotent() || h.base_sequence < 0 {
            return;
        }
        let e = self.map.entry(h.producer_id).or_default();
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp: h.max_timestamp,
        });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The last stable offset: the first offset of the oldest open
    /// transaction, or `end` when none is open.
    pub fn stable_end(&self, end: i64) -> i64 {
        self.ongoing
            .values()
            .copied()
            .min()
            .map_or(end, |f| f.min(end))
    }

    /// The open transaction of `producer_id` here, by its first offset.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.ongoing.get(&producer_id).copied()
    }

    /// Every producer with an open transaction here.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(p, f)| (*p, *f))
    }

    /// The aborted transactions with records in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        if self.aborted.is_empty() {
            return Vec::new();
        }
        // Markers are in offset order: skip those before `from`.
        let i = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[i..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forget aborted transactions wholly below the log start.
    pub fn prune_aborted(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.map.get(&producer_id)
    }

    /// Each producer's state as DescribeProducers reports it: id, epoch,
    /// the last sequence and timestamp of its newest batch.
    pub fn states(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .map
            .iter()
            .map(|(id, e)| {
                let last = e.batches.back();
                (
                    *id,
                    e.epoch,
                    last.map_or(-1, |b| b.last_seq),
                    last.map_or(-1, |b| b.timestamp),
                )
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The largest epoch any partition saw for a producer id is what
    /// InitProducerId must bump; exposed for the coordinator.
    pub fn producers(&self) -> impl Iterator<Item = (i64, i16)> + '_ {
        self.map.iter().map(|(id, e)| (*id, e.epoch))
    }

    /// Write a snapshot atomically (temp, fsync, rename; the caller fsyncs
    /// the directory). Layout: magic, count u32, then per producer: id i64,
    /// epoch i16, n u8, n × (first_seq, last_seq i32, first, last offset i64,
    /// timestamp i64); open transactions: count u32, n × (producer id,
    /// first offset i64); aborted ones: count u32, n × (producer id, first,
    /// marker offset i64); then CRC-32C of everything before it. `EPS1`
    /// snapshots (before transactions) end after the producers.
    pub fn write_snapshot(&self, path: &Path) -> Result<()> {
        let mut b = Vec::with_capacity(16 + self.map.len() * 64);
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&(self.map.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.map.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.map[&id];
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.push(e.batches.len() as u8);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_be_bytes());
                b.extend_from_slice(&m.last_seq.to_be_bytes());
                b.extend_from_slice(&m.first_offset.to_be_bytes());
                b.extend_from_slice(&m.last_offset.to_be_bytes());
                b.extend_from_slice(&m.timestamp.to_be_bytes());
            }
        }
        b.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (pid, first) in &self.ongoing {
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&first.to_be_bytes());
        }
        b.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            b.extend_from_slice(&a.producer_id.to_be_bytes());
            b.extend_from_slice(&a.first_offset.to_be_bytes());
            b.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        write_atomic(path, &b)
    }

    pub fn read_snapshot(path: &Path) -> Result<ProducerStates> {
        let bad = |reason: &str| LogError::CorruptMetadata {
            file: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let b = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
        if b.len() < 12 || (&b[0..4] != SNAPSHOT_MAGIC && &b[0..4] != SNAPSHOT_MAGIC_V1) {
            return Err(bad("bad magic or too short"));
        }
        let with_transactions = &b[0..4] == SNAPSHOT_MAGIC;
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("CRC mismatch"));
        }
        let mut r = Reader { b: body, at: 4 };
        let n = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut map = HashMap::new();
        for _ in 0..n {
            let id = r.i64().ok_or_else(|| bad("truncated"))?;
            let epoch = r.i16().ok_or_else(|| bad("truncated"))?;
            let k = r.u8().ok_or_else(|| bad("truncated"))?;
            let mut batches = VecDeque::new();
            for _ in 0..k {
                batches.push_back(BatchMeta {
                    first_seq: r.i32().ok_or_else(|| bad("truncated"))?,
                    last_seq: r.i32().ok_or_else(|| bad("truncated"))?,
                    first_offset: r.i64().ok_or_else(|| bad("truncated"))?,
                    last_offset: r.i64().ok_or_else(|| bad("truncated"))?,
                    timestamp: r.i64().ok_or_else(|| bad("truncated"))?,
                });
            }
            map.insert(id, ProducerEntry { epoch, batches });
        }
        let mut ongoing = BTreeMap::new();
        let mut aborted = Vec::new();
        if with_transactions {
            let n = r.u32().ok_or_else(|| bad("truncated"))?;
            for _ in 0..n {
                let pid = r.i64().ok_or_else(|| bad("truncated"))?;
                let first = r.i64().ok_or_else(|| bad("truncated"))?;
                ongoing.insert(pid, first);
            }
            let n = r.u32().ok_or_else(|| bad("truncated"))?;
            for _ in 0..n {
                aborted.push(AbortedTxn {
                    producer_id: r.i64().ok_or_else(|| bad("truncated"))?,
                    first_offset: r.i64().ok_or_else(|| bad("truncated"))?,
                    last_offset: r.i64().ok_or_else(|| bad("truncated"))?,
                });
            }
        }
        Ok(ProducerStates {
            map,
            ongoing,
            aborted,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.at..self.at + N)?;
        self.at += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|a| a[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&header(7, 0, 0, 3, 0)), Check::Append);
        s.update(&header(7, 0, 0, 3, 0), None);
        // Retry of the same batch: duplicate with the original offsets.
        match s.check(&header(7, 0, 0, 3, 99)) {
            Check::Duplicate(m) => assert_eq!((m.first_offset, m.last_offset), (0, 2)),
            other => panic!("expected duplicate, got {other:?}"),
        }
        // Gap.
        assert_eq!(
            s.check(&header(7, 0, 5, 1, 3)),
            Check::Reject(Rejection::OutOfOrder {
                got: 5,
                expected: 3
            })
        );
        assert_eq!(s.check(&header(7, 0, 3, 1, 3)), Check::Append);
        // New epoch must restart at 0; old epoch is fenced afterwards.
        s.update(&header(7, 1, 0, 1, 3), None);
        assert_eq!(
            s.check(&header(7, 0, 3, 1, 4)),
            Check::Reject(Rejection::Fenced { current: 1 })
        );
        // Non-idempotent batches always append.
        assert_eq!(s.check(&header(-1, -1, -1, 1, 4)), Check::Append);
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut s = ProducerStates::default();
        for i in 0..8 {
            s.update(&header(1, 0, i * 2, 2, i as i64 * 2), None);
        }
        s.update(&header(2, 3, 0, 1, 100), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("00000000000000000101.snapshot");
        s.write_snapshot(&p).expect("write");
        assert_eq!(ProducerStates::read_snapshot(&p).expect("read"), s);
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[10] ^= 1;
        std::fs::write(&p, &bytes).expect("write");
        assert!(ProducerStates::read_snapshot(&p).is_err());
    }
}
