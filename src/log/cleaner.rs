//! The background cleaner: retention (delete whole closed segments by age or
//! by size, advancing the log start offset) and compaction (keep the latest
//! record per key in closed segments; drop tombstones older than
//! `delete.retention.ms`). Compaction stops at the last stable offset and
//! removes the records of aborted transactions (as Kafka's cleaner does);
//! transaction markers are dropped with the rewrite, which clears producer
//! identity: the partition's aborted-transaction list no longer matches
//! anything there.
//!
//! Neither blocks appends or reads: appends only touch the active segment,
//! which the cleaner never rewrites, and readers hold their own reference to
//! the segment they read, so a segment swapped or deleted under them stays
//! readable through its open descriptor until they finish.
//!
//! Compaction rewrites one closed segment at a time into
//! `<base>.log.cleaned`, fsyncs it, removes the segment's index files, and
//! renames the copy over the original (an atomic replace). A crash leaves
//! either the old segment or the new one; a missing index is rebuilt at
//! open; a stray `.cleaned` file is deleted at open.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Record;
use tracing::info;

use super::batch::{self, BatchHeader};
use super::error::{IoContext, LogError, Result};
use super::index::sync_dir;
use super::partition::Partition;
use super::segment::Segment;
use super::topic::Topic;

/// What one pass did (for logs and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanerStats {
    pub segments_deleted: usize,
    pub segments_compacted: usize,
    pub records_removed: usize,
}

/// Per-partition memory of the cleaner between passes.
#[derive(Debug, Default)]
pub struct CleanerState {
    /// (topic, partition) → first offset not yet compacted.
    cleaned_up_to: HashMap<(String, i32), i64>,
    /// (topic, partition) → wall time when a kept tombstone expires, so a
    /// pass runs then even if nothing new is dirty.
    tombstone_due: HashMap<(String, i32), i64>,
}

/// Apply retention and compaction to every partition of `topics`.
pub fn run_once(topics: &[Arc<Topic>], state: &mut CleanerState, now: i64) -> Result<CleanerStats> {
    let mut stats = CleanerStats::default();
    for topic in topics {
        let config = topic.config();
        for p in topic.partitions() {
            if p.fenced().is_some() {
                // Read-only until `eddy repair`: its damaged bytes stay as
                // they are, and with a damaged `topic.json` its retention
                // and cleanup policy are unknown.
                continue;
            }
            if config.cleanup_policy.delete {
                stats.segments_deleted += apply_retention(&p, now)?;
            }
            if config.cleanup_policy.compact {
                compact(&p, state, now, &mut stats)?;
            }
            if config.flush_ms < i64::MAX && now - config.flush_ms >= 0 {
                p.flush()?;
            }
        }
    }
    Ok(stats)
}

/// Delete closed segments past `retention.ms` (by their newest record) or
/// beyond `retention.bytes`. An active segment that has itself expired is
/// rolled first so that it can go too, as in Kafka.
pub fn apply_retention(p: &Partition, now: i64) -> Result<usize> {
    let config = p.config();
    let mut deleted = 0;
    if config.retention_ms >= 0 {
        let horizon = now - config.retention_ms;
        if let Some(active) = p.segments().last()
            && !active.is_empty()
            && active.max_timestamp() < horizon
        {
            p.roll_now()?;
        }
        deleted += p.delete_oldest(|seg, _| seg.max_timestamp() < horizon)?;
    }
    if config.retention_bytes >= 0 {
        let limit = config.retention_bytes as u64;
        deleted += p.delete_oldest(|_, bytes_after| bytes_after >= limit)?;
    }
    Ok(deleted)
}

fn compact(
    p: &Partition,
    state: &mut CleanerState,
    now: i64,
    stats: &mut CleanerStats,
) -> Result<()> {
    let key = (p.topic().to_string(), p.id());
    let segs = p.segments();
    if segs.len() < 2 {
        return Ok(());
    }
    // Only below the last stable offset, as Kafka's cleaner: a record of
    // an open transaction may yet be aborted, so it neither shadows an
    // older value nor is rewritten (which would drop its producer id).
    let stable = p.stable_end();
    let cleanable = segs[..segs.len() - 1]
        .iter()
        .take_while(|s| s.next_offset() <= stable)
        .count();
    if cleanable == 0 {
        return Ok(());
    }
    let closed = &segs[..cleanable];
    let cleaned_up_to = state.cleaned_up_to.get(&key).copied().unwrap_or(0);
    let total: u64 = closed.iter().map(|s| s.size()).sum();
    let dirty: u64 = closed
        .iter()
        .filter(|s| s.next_offset() > cleaned_up_to)
        .map(|s| s.size())
        .sum();
    let ratio = if total == 0 {
        0.0
    } else {
        dirty as f64 / total as f64
    };
    let tombstones_due = state.tombstone_due.get(&key).is_some_and(|t| *t <= now);
    if total == 0 || (ratio < p.config().min_cleanable_dirty_ratio && !tombstones_due) {
        return Ok(());
    }
    let delete_retention = p.config().delete_retention_ms;

    // Latest offset of every key, over the whole log below the stable end
    // including the active segment (a newer value there makes older ones
    // removable). Records of aborted transactions are removed and never
    // count as a key's latest value.
    let aborted = p.aborted_between(0, stable);
    let is_aborted =
        |r: &Record| r.transactional && aborted.iter().any(|a| a.covers(r.producer_id, r.offset));
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for seg in &segs {
        for (_, r) in segment_records(seg, stable)? {
            if is_aborted(&r) {
                continue;
            }
            if let Some(k) = r.key {
                latest.insert(k, r.offset);
            }
        }
    }

    let mut next_due: Option<i64> = None;
    for seg in closed {
        let mut kept: Vec<(BatchHeader, Vec<Record>)> = Vec::new();
        let mut removed = 0usize;
        let mut current: Option<(BatchHeader, Vec<Record>)> = None;
        for (h, r) in segment_records_with_headers(seg)? {
            let keep_latest = !is_aborted(&r)
                && r.key
                    .as_ref()
                    .is_some_and(|k| latest.get(k) == Some(&r.offset));
            let tombstone = r.value.is_none();
            // In a LogAppendTime batch every record has the batch's time.
            let ts = if h.is_log_append_time() {
                h.max_timestamp
            } else {
                r.timestamp
            };
            let expired = tombstone && ts + delete_retention <= now;
            if keep_latest && tombstone && !expired {
                let due = ts + delete_retention;
                next_due = Some(next_due.map_or(due, |d: i64| d.min(due)));
            }
            if keep_latest && !expired {
                match &mut current {
                    Some((ch, recs)) if ch.base_offset == h.base_offset => recs.push(r),
                    _ => {
                        if let Some(done) = current.take() {
                            kept.push(done);
                        }
                        current = Some((h, vec![r]));
                    }
                }
            } else {
                removed += 1;
            }
        }
        if let Some(done) = current.take() {
            kept.push(done);
        }
        if removed == 0 {
            continue;
        }
        rewrite_segment(p, seg, &kept)?;
        stats.segments_compacted += 1;
        stats.records_removed += removed;
    }
    state.cleaned_up_to.insert(
        key.clone(),
        closed.last().map(|s| s.next_offset()).unwrap_or(0),
    );
    match next_due {
        Some(d) => state.tombstone_due.insert(key, d),
        None => state.tombstone_due.remove(&key),
    };
    Ok(())
}

/// Records of a segment below `end`, each with its batch header.
fn segment_records(seg: &Segment, end: i64) -> Result<Vec<(BatchHeader, Record)>> {
    Ok(segment_records_with_headers(seg)?
        .into_iter()
        .filter(|(_, r)| r.offset < end)
        .collect())
}

fn segment_records_with_headers(seg: &Segment) -> Result<Vec<(BatchHeader, Record)>> {
    let bytes = seg.read_all()?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let corrupt = |reason: String| LogError::Corrupt {
            file: seg.log_path().to_path_buf(),
            position: pos as u64,
            offset: -1,
            reason,
        };
        let h = BatchHeader::parse(&bytes[pos..]).map_err(|e| corrupt(e.to_string()))?;
        let len = h.total_len();
        if pos + len > bytes.len() {
            return Err(corrupt("batch runs past the segment's end".into()));
        }
        if !h.is_control() {
            let records =
                batch::decode(bytes.slice(pos..pos + len)).map_err(|e| corrupt(e.to_string()))?;
            out.extend(records.into_iter().map(|r| (h, r)));
        }
        pos += len;
    }
    Ok(out)
}

fn rewrite_segment(
    p: &Partition,
    seg: &Segment,
    kept: &[(BatchHeader, Vec<Record>)],
) -> Result<()> {
    let dir = p.dir();
    let log_path = seg.log_path().to_path_buf();
    let (ix, tix) = seg.index_paths();
    let (ix, tix) = (ix.to_path_buf(), tix.to_path_buf());
    let first = p.segments().first().map(|s| s.base_offset()) == Some(seg.base_offset());
    if kept.is_empty() && !first {
        // Nothing left: drop the segment (its offsets become a gap, as in a
        // compacted Kafka log). The first segment stays, empty, instead:
        // its base is the log start offset, which compaction must not move
        // (a consumer positioned in it would get OffsetOutOfRange rather
        // than the next record).
        p.replace_segment(seg.base_offset(), None)?;
        fs::remove_file(&log_path).at(&log_path)?;
        for path in [&ix, &tix] {
            let _ = fs::remove_file(path);
        }
        sync_dir(dir)?;
        return Ok(());
    }
    let mut out = Vec::new();
    for (orig, records) in kept {
        let mut buf = batch::encode_records(records).map_err(LogError::InvalidBatch)?;
        // Rewritten batches carry no producer identity: idempotence state
        // lives in the producer snapshots, and a stale sequence in a
        // rewritten batch would only confuse a replay.
        let mut pos = 0;
        while pos < buf.len() {
            let h = BatchHeader::parse(&buf[pos..]).map_err(LogError::InvalidBatch)?;
            let len = h.total_len();
            if orig.is_log_append_time() {
                // The encoder writes CreateTime batches; keep the broker's
                // timestamp and type.
                batch::set_log_append_time(&mut buf[pos..pos + len], len, orig.max_timestamp);
            }
            batch::clear_producer(&mut buf[pos..pos + len]);
            pos += len;
        }
        out.extend_from_slice(&buf);
    }
    let cleaned = log_path.with_extension("log.cleaned");
    {
        let mut f = File::create(&cleaned).at(&cleaned)?;
        f.write_all(&out).at(&cleaned)?;
        // The copy is complete on disk before it can replace the original.
        f.sync_all().at(&cleaned)?;
    }
    // Remove the old indexes first: after the rename they would describe
    // the wrong file. A crash in between leaves a segment without indexes,
    // which open rebuilds.
    for path in [&ix, &tix] {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(path),
            _ => {}
        }
    }
    fs::rename(&cleaned, &log_path).at(&log_path)?;
    sync_dir(dir)?;
    let interval = p.config().index_interval_bytes as u64;
    let (new_seg, stop) = Segment::open(dir, seg.base_offset(), false, interval, super::now_ms())?;
    if let Some(stop) = stop {
        return Err(LogError::Corrupt {
            file: log_path,
            position: stop.position,
            offset: -1,
            reason: format!("compacted copy failed validation: {}", stop.error),
        });
    }
    new_seg.write_index_files()?;
    sync_dir(dir)?;
    p.replace_segment(seg.base_offset(), Some(new_seg))?;
    info!(
        topic = p.topic(),
        partition = p.id(),
        base = seg.base_offset(),
        "compacted segment"
    );
    Ok(())
}
