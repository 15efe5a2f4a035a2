#![allow(clippy::unwrap_used)]
//! Retention by time and bytes, and compaction, verified on real segment
//! files: whole closed segments go (the log start offset advances with
//! them), a compacted topic keeps exactly the latest value per key, and
//! tombstones go after `delete.retention.ms`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::log::batch::{self, BatchHeader, NewRecord};
use eddy::log::{AppendInfo, Durability, Log, LogError, LogOptions, LogStore, now_ms};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------- helpers

fn open(dir: &Path) -> Arc<Log> {
    Log::open(
        dir,
        LogOptions {
            cleaner_interval: None,
        },
    )
    .unwrap()
}

fn create(log: &Log, topic: &str, pairs: &[(&str, &str)]) {
    let cfg: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log.create_topic(topic, 1, cfg).unwrap();
}

fn part_dir(dir: &Path, topic: &str) -> PathBuf {
    dir.join("topics").join(topic).join("0")
}

/// Base offsets of the `.log` files on disk, sorted.
fn log_files(dir: &Path, topic: &str) -> Vec<i64> {
    let mut v: Vec<i64> = fs::read_dir(part_dir(dir, topic))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn seg_file(dir: &Path, topic: &str, base: i64, ext: &str) -> PathBuf {
    part_dir(dir, topic).join(format!("{base:020}.{ext}"))
}

/// Total bytes of the `.log` files on disk.
fn disk_bytes(dir: &Path, topic: &str) -> u64 {
    log_files(dir, topic)
        .iter()
        .map(|b| fs::metadata(seg_file(dir, topic, *b, "log")).unwrap().len())
        .sum()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn rec(key: Option<&str>, value: Option<&str>, ts: i64) -> NewRecord {
    NewRecord {
        key: key.map(b),
        value: value.map(b),
        timestamp: ts,
        headers: vec![],
    }
}

fn append(log: &Log, topic: &str, recs: &[NewRecord]) -> AppendInfo {
    log.append(topic, 0, batch::encode(recs).unwrap(), Durability::Os)
        .unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp: i64,
}

/// Read from `from` to the end as a consumer would (whole batches, CRC
/// checked by the decoder, following gaps left by compaction).
fn read_from(log: &Log, topic: &str, from: i64) -> Result<Vec<Rec>, LogError> {
    let end = log.offsets(topic, 0)?.1;
    let mut out = Vec::new();
    let mut off = from;
    while off < end {
        let rr = log.read(topic, 0, off, 8 * 1024)?;
        if rr.records.is_empty() {
            // Only the tail of a compacted segment can be empty of records
            // below the end.
            break;
        }
        let bytes = rr.records;
        let mut pos = 0;
        let mut next = off;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).unwrap();
            let len = h.total_len();
            for r in batch::decode(bytes.slice(pos..pos + len)).unwrap() {
                if r.offset >= off {
                    out.push(Rec {
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                        timestamp: r.timestamp,
                    });
                }
            }
            next = next.max(h.next_offset());
            pos += len;
        }
        assert!(next > off, "no progress at {off}");
        off = next;
    }
    Ok(out)
}

fn read_all(log: &Log, topic: &str) -> Vec<Rec> {
    let start = log.offsets(topic, 0).unwrap().0;
    read_from(log, topic, start).unwrap()
}

fn assert_increasing(recs: &[Rec]) {
    for w in recs.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "offsets {} then {}",
            w[0].offset,
            w[1].offset
        );
    }
}

// -------------------------------------------------------------- retention

/// 1. retention.bytes: whole closed segments go, oldest first, until the
///    rest fits; the log start offset moves to the first remaining
///    segment's base; reads below it are out of range.
#[test]
fn retention_bytes_deletes_whole_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let t = "rb";
    let limit = 4096u64;
    let seg = 1024u64;
    let log = open(dir.path());
    create(
        &log,
        t,
        &[("segment.bytes", "1024"), ("retention.bytes", "4096")],
    );
    let now = now_ms();
    let mut model = Vec::new();
    for i in 0..300 {
        let r = rec(
            Some(&format!("k{}", i % 17)),
            Some(&format!("value-{i:05}")),
            now,
        );
        assert_eq!(append(&log, t, &[r]).base_offset, i);
        model.push(format!("value-{i:05}"));
    }
    let before = log_files(dir.path(), t);
    assert!(before.len() > 10, "{before:?}");
    let bytes_before = disk_bytes(dir.path(), t);
    assert!(bytes_before > limit + seg);
    let end = log.offsets(t, 0).unwrap().1;
    assert_eq!(end, 300);

    let stats = log.clean_now().unwrap();
    assert!(stats.segments_deleted > 0, "{stats:?}");
    let after = log_files(dir.path(), t);
    // Exactly the oldest segments went, with their index files.
    assert_eq!(after.len() + stats.segments_deleted, before.len());
    assert_eq!(after[..], before[stats.segments_deleted..]);
    for gone in &before[..stats.segments_deleted] {
        for ext in ["log", "index", "timeindex"] {
            assert!(
                !seg_file(dir.path(), t, *gone, ext).exists(),
                "{gone}.{ext}"
            );
        }
    }
    // The log start is the first remaining segment's base; the end stays.
    let start = after[0];
    assert_eq!(log.offsets(t, 0).unwrap(), (start, end));
    let p = log.partition(t, 0).unwrap();
    assert_eq!(p.log_start(), start);
    // Kafka's rule: delete while what remains is still ≥ retention.bytes.
    let total = disk_bytes(dir.path(), t);
    assert_eq!(total, p.size_bytes());
    let first_size = fs::metadata(seg_file(dir.path(), t, start, "log"))
        .unwrap()
        .len();
    assert!(total >= limit, "{total} < {limit}: deleted too much");
    assert!(
        total < limit + first_size,
        "{total}: one more segment could go"
    );
    assert!(total <= limit + seg);

    match log.read(t, 0, start - 1, 1024) {
        Err(LogError::OffsetOutOfRange {
            offset,
            log_start,
            log_end,
            ..
        }) => assert_eq!((offset, log_start, log_end), (start - 1, start, end)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.read(t, 0, 0, 1024),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let rest = read_all(&log, t);
    assert_eq!(rest.first().unwrap().offset, start);
    assert_eq!(rest.len() as i64, end - start);
    for r in &rest {
        assert_eq!(
            r.value.as_deref(),
            Some(model[r.offset as usize].as_bytes())
        );
    }
    // A second pass has nothing to do.
    assert_eq!(log.clean_now().unwrap().segments_deleted, 0);
    // And the log start survives a crash.
    drop(p);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.offsets(t, 0).unwrap(), (start, end));
    assert_eq!(read_all(&log, t), rest);
}

/// 2. retention.ms: segments whose newest record is older than the limit go,
///    including an expired active segment (rolled, then deleted: the end
///    offset stays and appends continue there). Segments holding a current
///    record are kept.
#[test]
fn retention_ms_deletes_expired_segments_including_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let old = now_ms() - 3_600_000;
    let cfg = [("segment.bytes", "1024"), ("retention.ms", "60000")];

    // Everything old: every segment goes, the active one too.
    create(&log, "all-old", &cfg);
    for i in 0..60 {
        let r = rec(Some("k"), Some(&format!("old-{i:04}")), old + i);
        append(&log, "all-old", &[r]);
    }
    let before = log_files(dir.path(), "all-old");
    assert!(before.len() >= 3, "{before:?}");
    let stats = log.clean_now().unwrap();
    assert_eq!(stats.segments_deleted, before.len());
    // One new, empty active segment at the old end.
    assert_eq!(log_files(dir.path(), "all-old"), vec![60]);
    assert_eq!(
        fs::metadata(seg_file(dir.path(), "all-old", 60, "log"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(log.offsets("all-old", 0).unwrap(), (60, 60));
    let rr = log.read("all-old", 0, 60, 1024).unwrap();
    assert!(rr.records.is_empty());
    assert!(matches!(
        log.read("all-old", 0, 59, 1024),
        Err(LogError::OffsetOutOfRange {
            log_start: 60,
            log_end: 60,
            ..
        })
    ));
    let info = append(&log, "all-old", &[rec(Some("k"), Some("new"), now_ms())]);
    assert_eq!(info.base_offset, 60);
    let recs = read_all(&log, "all-old");
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].offset, recs[0].value.as_deref()),
        (60, Some(&b"new"[..]))
    );
    // Nothing more to delete: the new record is current.
    assert_eq!(log.clean_now().unwrap().segments_deleted, 0);

    // Old records followed by current ones: only all-old segments go.
    create(&log, "mixed", &cfg);
    let now = now_ms();
    let mut written = Vec::new();
    for i in 0..100i64 {
        let ts = if i < 50 { old + i } else { now + i };
        append(
            &log,
            "mixed",
            &[rec(Some("k"), Some(&format!("v-{i:04}")), ts)],
        );
        written.push(ts);
    }
    let before = log_files(dir.path(), "mixed");
    let stats = log.clean_now().unwrap();
    assert!(stats.segments_deleted > 0);
    let after = log_files(dir.path(), "mixed");
    assert_eq!(after[..], before[before.len() - after.len()..]);
    let (start, end) = log.offsets("mixed", 0).unwrap();
    assert_eq!(end, 100);
    assert_eq!(start, after[0]);
    // The first kept segment is the one holding offset 50 (the first
    // current record); every segment before it held only old records.
    let holder = *before.iter().filter(|b| **b <= 50).max().unwrap();
    assert_eq!(start, holder);
    let recs = read_all(&log, "mixed");
    assert_eq!(recs.len() as i64, end - start);
    for r in &recs {
        assert_eq!(r.timestamp, written[r.offset as usize]);
        assert_eq!(r.value, Some(b(&format!("v-{:04}", r.offset))));
    }
    assert!(recs.iter().any(|r| r.offset == 50));
    // The active segment holds current records: not rolled.
    assert_eq!(*after.last().unwrap(), *before.last().unwrap());
}

// ------------------------------------------------------------- compaction

/// The model of a compacted topic: every record written, by offset.
#[derive(Default)]
struct Model {
    by_offset: BTreeMap<i64, (Bytes, Option<Bytes>)>,
}

impl Model {
    fn write(&mut self, log: &Log, topic: &str, recs: &[NewRecord]) {
        let info = append(log, topic, recs);
        for (i, r) in recs.iter().enumerate() {
            self.by_offset.insert(
                info.base_offset + i as i64,
                (r.key.clone().unwrap(), r.value.clone()),
            );
        }
    }

    /// Latest (offset, value) per key.
    fn latest(&self) -> HashMap<Bytes, (i64, Option<Bytes>)> {
        let mut m = HashMap::new();
        for (o, (k, v)) in &self.by_offset {
            m.insert(k.clone(), (*o, v.clone()));
        }
        m
    }
}

/// Write `n` updates over `keys` keys in batches of 1–4, about one in
/// `tomb_every` a tombstone.
fn write_updates(
    log: &Log,
    topic: &str,
    model: &mut Model,
    rng: &mut StdRng,
    n: usize,
    keys: u32,
    tomb_every: u32,
) {
    let mut written = 0;
    while written < n {
        let count = rng.random_range(1..=4).min(n - written);
        let recs: Vec<NewRecord> = (0..count)
            .map(|i| {
                let k = rng.random_range(0..keys);
                let seq = model.by_offset.len() + i;
                let value = if rng.random_range(0..tomb_every) == 0 {
                    None
                } else {
                    Some(format!("k{k}-v{seq}"))
                };
                rec(Some(&format!("k{k}")), value.as_deref(), now_ms())
            })
            .collect();
        model.write(log, topic, &recs);
        written += count;
    }
}

/// Checks that hold after compaction with no appends since:
/// - every record read is exactly the one written at its offset;
/// - offsets strictly increase (gaps allowed);
/// - the last occurrence of each key is its latest value (or `None` when the
///   key's tombstone was removed, which only `tombstones_removed` allows);
/// - in the closed segments each key appears at most once, and only as its
///   latest record (so never also in the active segment);
/// - the active segment is untouched.
fn check_compacted(log: &Log, topic: &str, model: &Model, tombstones_removed: bool) -> Vec<Rec> {
    let recs = read_all(log, topic);
    assert_increasing(&recs);
    for r in &recs {
        let (k, v) = &model.by_offset[&r.offset];
        assert_eq!(
            (r.key.as_ref(), &r.value),
            (Some(k), v),
            "offset {}",
            r.offset
        );
    }
    let latest = model.latest();
    let mut last: HashMap<Bytes, (i64, Option<Bytes>)> = HashMap::new();
    for r in &recs {
        last.insert(r.key.clone().unwrap(), (r.offset, r.value.clone()));
    }
    for (k, (o, v)) in &latest {
        match last.get(k) {
            Some(got) => assert_eq!(got, &(*o, v.clone()), "key {k:?}"),
            None => assert!(
                tombstones_removed && v.is_none(),
                "key {k:?} (latest {v:?} at {o}) is missing"
            ),
        }
    }
    let active_base = log
        .partition(topic, 0)
        .unwrap()
        .segments()
        .last()
        .unwrap()
        .base_offset();
    let mut seen = HashSet::new();
    for r in recs.iter().filter(|r| r.offset < active_base) {
        let k = r.key.clone().unwrap();
        assert!(seen.insert(k.clone()), "key {k:?} twice in closed segments");
        assert_eq!(
            latest[&k].0, r.offset,
            "key {k:?}: stale value kept at {}",
            r.offset
        );
        if tombstones_removed {
            assert!(r.value.is_some(), "expired tombstone kept at {}", r.offset);
        }
    }
    let active: Vec<i64> = recs
        .iter()
        .filter(|r| r.offset >= active_base)
        .map(|r| r.offset)
        .collect();
    let expect: Vec<i64> = model
        .by_offset
        .range(active_base..)
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(active, expect, "the active segment changed");
    log.partition(topic, 0).unwrap().verify().unwrap();
    recs
}

const COMPACT: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.bytes", "1024"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("index.interval.bytes", "256"),
];

/// 3. Compaction keeps exactly the latest value per key (tombstones kept
///    while `delete.retention.ms` has not passed), on disk.
#[test]
fn compaction_keeps_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = "c";
    let log = open(dir.path());
    create(&log, t, COMPACT);
    let mut model = Model::default();
    let mut rng = StdRng::seed_from_u64(3);
    write_updates(&log, t, &mut model, &mut rng, 800, 25, 10);
    let segs_before = log_files(dir.path(), t);
    let bytes_before = disk_bytes(dir.path(), t);
    assert!(segs_before.len() > 20);

    let stats = log.clean_now().unwrap();
    assert!(
        stats.segments_compacted > 0 && stats.records_removed > 0,
        "{stats:?}"
    );
    let recs = check_compacted(&log, t, &model, false);
    assert!(recs.len() < model.by_offset.len());
    let bytes_after = disk_bytes(dir.path(), t);
    assert!(
        bytes_after * 3 < bytes_before,
        "{bytes_before} -> {bytes_after}"
    );
    assert_eq!(bytes_after, log.partition(t, 0).unwrap().size_bytes());
    // Every compacted segment has index files describing it again.
    for base in log_files(dir.path(), t) {
        assert!(
            seg_file(dir.path(), t, base, "index").exists() || base == *segs_before.last().unwrap()
        );
    }
    // Nothing new is dirty: a second pass changes nothing.
    let again = log.clean_now().unwrap();
    assert_eq!(again.records_removed, 0, "{again:?}");
    assert_eq!(read_all(&log, t), recs);

    // More updates, another pass: still exactly the latest per key.
    write_updates(&log, t, &mut model, &mut rng, 300, 25, 10);
    log.clean_now().unwrap();
    check_compacted(&log, t, &model, false);
    // Tombstones are still there (delete.retention.ms is a day).
    let tombs = read_all(&log, t)
        .iter()
        .filter(|r| r.value.is_none())
        .count();
    let expect = model.latest().values().filter(|(_, v)| v.is_none()).count();
    assert!(expect > 0);
    assert!(tombs >= expect);
}

/// Keys k0..k9 written, then tombstones for the even ones, then enough
/// updates of other keys to push the tombstones into closed segments.
fn write_tombstone_scenario(log: &Log, t: &str, model: &mut Model) {
    for round in 0..5 {
        for k in 0..10 {
            let v = format!("k{k}-round{round}");
            model.write(log, t, &[rec(Some(&format!("k{k}")), Some(&v), now_ms())]);
        }
    }
    for k in (0..10).step_by(2) {
        model.write(log, t, &[rec(Some(&format!("k{k}")), None, now_ms())]);
    }
    for i in 0..60 {
        let k = format!("filler{}", i % 5);
        let v = format!("{k}-{i}");
        model.write(log, t, &[rec(Some(&k), Some(&v), now_ms())]);
    }
}

/// 4. Tombstones: kept (as the key's only record) while
///    `delete.retention.ms` has not passed; once it has, the key disappears
///    entirely from the closed segments — and a pass runs for that alone,
///    with nothing newly dirty.
#[test]
fn tombstones_go_after_delete_retention_ms() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let tombstoned: Vec<Bytes> = (0..10).step_by(2).map(|k| b(&format!("k{k}"))).collect();
    let keys_in =
        |recs: &[Rec]| -> HashSet<Bytes> { recs.iter().map(|r| r.key.clone().unwrap()).collect() };

    // delete.retention.ms = 0: gone at the first pass.
    let mut cfg = COMPACT.to_vec();
    cfg.push(("delete.retention.ms", "0"));
    create(&log, "t0", &cfg);
    let mut m0 = Model::default();
    write_tombstone_scenario(&log, "t0", &mut m0);
    let active_base = log
        .partition("t0", 0)
        .unwrap()
        .segments()
        .last()
        .unwrap()
        .base_offset();
    for (o, (k, v)) in &m0.by_offset {
        if v.is_none() {
            assert!(
                *o < active_base,
                "tombstone for {k:?} is in the active segment"
            );
        }
    }
    log.clean_now().unwrap();
    let recs = check_compacted(&log, "t0", &m0, true);
    let keys = keys_in(&recs);
    for k in &tombstoned {
        assert!(!keys.contains(k), "{k:?} still present");
    }
    for k in (1..10).step_by(2) {
        assert!(keys.contains(&b(&format!("k{k}"))));
    }

    // delete.retention.ms = one day: tombstones stay, older values go.
    let mut cfg = COMPACT.to_vec();
    cfg.push(("delete.retention.ms", "86400000"));
    create(&log, "tday", &cfg);
    let mut md = Model::default();
    write_tombstone_scenario(&log, "tday", &mut md);
    log.clean_now().unwrap();
    let recs = check_compacted(&log, "tday", &md, false);
    for k in &tombstoned {
        let of_key: Vec<&Rec> = recs.iter().filter(|r| r.key.as_ref() == Some(k)).collect();
        assert_eq!(of_key.len(), 1, "{k:?}");
        assert_eq!(of_key[0].value, None, "{k:?}");
    }

    // delete.retention.ms = 2.5 s: kept at first, gone on a later pass even
    // though nothing new was written (the cleaner remembers when they are
    // due).
    let mut cfg = COMPACT.to_vec();
    cfg.push(("delete.retention.ms", "2500"));
    create(&log, "tsoon", &cfg);
    let mut ms = Model::default();
    let written_at = Instant::now();
    write_tombstone_scenario(&log, "tsoon", &mut ms);
    log.clean_now().unwrap();
    assert!(
        written_at.elapsed() < Duration::from_millis(2200),
        "machine too slow for this test"
    );
    let recs = check_compacted(&log, "tsoon", &ms, false);
    let keys = keys_in(&recs);
    for k in &tombstoned {
        assert!(keys.contains(k), "{k:?} went early");
    }
    std::thread::sleep(Duration::from_millis(2700));
    let stats = log.clean_now().unwrap();
    assert!(stats.records_removed >= tombstoned.len(), "{stats:?}");
    let recs = check_compacted(&log, "tsoon", &ms, true);
    let keys = keys_in(&recs);
    for k in &tombstoned {
        assert!(!keys.contains(k), "{k:?} still present");
    }
}

/// 5. Keyless records are refused by a compacted topic (alone or mixed
///    with keyed ones); tombstones (key, no value) are accepted.
#[test]
fn compacted_topic_rejects_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    create(&log, "c", COMPACT);
    append(&log, "c", &[rec(Some("a"), Some("1"), now_ms())]);
    for recs in [
        vec![rec(None, Some("x"), now_ms())],
        vec![rec(None, None, now_ms())],
        vec![
            rec(Some("a"), Some("2"), now_ms()),
            rec(None, Some("x"), now_ms()),
        ],
    ] {
        match log.append("c", 0, batch::encode(&recs).unwrap(), Durability::Os) {
            Err(LogError::MissingKey { topic }) => assert_eq!(topic, "c"),
            other => panic!("expected MissingKey, got {other:?}"),
        }
    }
    assert_eq!(log.offsets("c", 0).unwrap(), (0, 1));
    let info = append(&log, "c", &[rec(Some("a"), None, now_ms())]);
    assert_eq!(info.base_offset, 1);
    // A delete-policy topic takes keyless records.
    create(&log, "d", &[]);
    append(&log, "d", &[rec(None, Some("x"), now_ms())]);
}

/// 6. Compaction survives a crash: reopened without a clean shutdown, the
///    log holds exactly what it held, compacted segments and all; a stray
///    `.cleaned` file (a compaction interrupted before its rename) is
///    removed; missing indexes of compacted segments are rebuilt; appends
///    and further compaction continue correctly.
#[test]
fn compaction_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = "c";
    let mut model = Model::default();
    let mut rng = StdRng::seed_from_u64(6);
    let (recs, offsets, files) = {
        let log = open(dir.path());
        create(&log, t, COMPACT);
        write_updates(&log, t, &mut model, &mut rng, 500, 15, 8);
        let stats = log.clean_now().unwrap();
        assert!(stats.segments_compacted > 0);
        let recs = check_compacted(&log, t, &model, false);
        (recs, log.offsets(t, 0).unwrap(), log_files(dir.path(), t))
        // Crash: dropped without close.
    };
    assert!(!dir.path().join(".clean-shutdown").exists());
    // Leftovers of an interrupted compaction, and a lost index.
    let stray = part_dir(dir.path(), t).join(format!("{:020}.log.cleaned", files[1]));
    fs::write(&stray, b"half a compacted copy").unwrap();
    fs::remove_file(seg_file(dir.path(), t, files[0], "index")).unwrap();
    fs::remove_file(seg_file(dir.path(), t, files[0], "timeindex")).unwrap();

    let log = open(dir.path());
    assert!(!stray.exists());
    assert!(seg_file(dir.path(), t, files[0], "index").exists());
    assert_eq!(log.offsets(t, 0).unwrap(), offsets);
    assert_eq!(log_files(dir.path(), t), files);
    assert_eq!(read_all(&log, t), recs);
    check_compacted(&log, t, &model, false);
    // Appends continue at the old end; a new pass (with a fresh cleaner
    // state) keeps the invariants.
    let before_end = offsets.1;
    model.write(&log, t, &[rec(Some("k1"), Some("after-restart"), now_ms())]);
    assert_eq!(*model.by_offset.keys().last().unwrap(), before_end);
    write_updates(&log, t, &mut model, &mut rng, 200, 15, 8);
    log.clean_now().unwrap();
    let recs = check_compacted(&log, t, &model, false);
    // And once more after a clean close.
    log.close().unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(read_all(&log, t), recs);
}

/// 7. Appends and reads keep working while the cleaner runs in another
///    thread: retention deleting segments under readers, compaction
///    swapping segments under them. Readers check every record they get.
#[test]
fn concurrent_appends_reads_and_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    create(&log, "cc", COMPACT);
    create(
        &log,
        "rr",
        &[("segment.bytes", "1024"), ("retention.bytes", "6000")],
    );
    const N: i64 = 1500;
    const KEYS: i64 = 30;
    let value_of = |topic: &str, o: i64| format!("{topic}-k{}-v{o}", o % KEYS);
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    std::thread::scope(|s| {
        // One appender per topic: single records and small batches, so
        // every offset's key and value are known in advance.
        for topic in ["cc", "rr"] {
            let log = &log;
            s.spawn(move || {
                let mut o = 0;
                while o < N {
                    let n = (1 + o % 3).min(N - o);
                    let recs: Vec<NewRecord> = (o..o + n)
                        .map(|x| {
                            let k = format!("k{}", x % KEYS);
                            rec(Some(&k), Some(&value_of(topic, x)), now_ms())
                        })
                        .collect();
                    let info = append(log, topic, &recs);
                    assert_eq!(info.base_offset, o, "{topic}");
                    o += n;
                }
            });
        }
        // Readers: consume from the start over and over until the appenders
        // finish; every record must be the one written at its offset.
        for (topic, reader) in [("cc", 0), ("cc", 1), ("rr", 0), ("rr", 1)] {
            let log = &log;
            let done = Arc::clone(&done);
            s.spawn(move || {
                let mut passes = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let (start, end) = log.offsets(topic, 0).unwrap();
                    let mut off = start;
                    let mut last = -1;
                    while off < end {
                        let rr = match log.read(topic, 0, off, 2048 + reader * 1000) {
                            Ok(rr) => rr,
                            Err(LogError::OffsetOutOfRange { log_start, .. }) => {
                                // Retention moved the start past us.
                                assert!(log_start > off, "{topic}: {off} < {log_start}");
                                off = log_start;
                                continue;
                            }
                            Err(e) => panic!("{topic}: read at {off}: {e}"),
                        };
                        if rr.records.is_empty() {
                            break;
                        }
                        let mut pos = 0;
                        let bytes = rr.records;
                        while pos < bytes.len() {
                            let h = BatchHeader::parse(&bytes[pos..]).unwrap();
                            let len = h.total_len();
                            let recs =
                                batch::decode(bytes.slice(pos..pos + len)).unwrap_or_else(|e| {
                                    panic!("{topic}: batch at {}: {e}", h.base_offset)
                                });
                            for r in recs {
                                if r.offset < off {
                                    continue;
                                }
                                assert!(r.offset > last, "{topic}: {} after {last}", r.offset);
                                assert!(r.offset < N, "{topic}");
                                last = r.offset;
                                let want = value_of(topic, r.offset);
                                assert_eq!(r.value.as_deref(), Some(want.as_bytes()), "{topic}");
                                let key = format!("k{}", r.offset % KEYS);
                                assert_eq!(r.key.as_deref(), Some(key.as_bytes()), "{topic}");
                            }
                            off = off.max(h.next_offset());
                            pos += len;
                        }
                    }
                    passes += 1;
                    if finished {
                        break;
                    }
                }
                eprintln!("reader {topic}/{reader}: {passes} passes");
            });
        }
        // The cleaner, as fast as it can until the appenders are done.
        let log = &log;
        let done = Arc::clone(&done);
        s.spawn(move || {
            let mut passes = 0;
            let mut compacted = 0;
            let mut deleted = 0;
            loop {
                let ended = ["cc", "rr"]
                    .iter()
                    .all(|t| log.offsets(t, 0).unwrap().1 == N);
                let stats = log.clean_now().unwrap();
                compacted += stats.segments_compacted;
                deleted += stats.segments_deleted;
                passes += 1;
                if ended {
                    break;
                }
            }
            done.store(true, Ordering::Release);
            eprintln!(
                "cleaner: {passes} passes, {compacted} segments compacted, {deleted} deleted"
            );
            assert!(compacted > 0 && deleted > 0);
        });
    });
    eprintln!("concurrent test: {:?}", started.elapsed());

    // Final state, after a restart (a fresh cleaner state makes the next
    // pass compact every closed segment against the final log: a pass that
    // ran while the last updates were still arriving may have kept values
    // that are stale now, and nothing newer is dirty to trigger another):
    // the compacted topic holds the latest value of every key, closed
    // segments once each; the retained topic fits its limit.
    log.close().unwrap();
    drop(log);
    let log = open(dir.path());
    log.clean_now().unwrap();
    let mut model = Model::default();
    for o in 0..N {
        model.by_offset.insert(
            o,
            (b(&format!("k{}", o % KEYS)), Some(b(&value_of("cc", o)))),
        );
    }
    check_compacted(&log, "cc", &model, false);
    let (start, end) = log.offsets("rr", 0).unwrap();
    assert_eq!(end, N);
    assert!(start > 0);
    let p = log.partition("rr", 0).unwrap();
    assert!(p.size_bytes() < 6000 + 1024);
    p.verify().unwrap();
    let recs = read_all(&log, "rr");
    assert_eq!(recs.len() as i64, end - start);
}

/// 3b. Compaction never moves the log start offset: when every record of
///     the first segment is superseded, a consumer positioned at (or
///     committed to) an offset in it must still be served from the next
///     record, as in Kafka — not get OffsetOutOfRange (which, with the
///     default `auto.offset.reset=latest`, would skip the whole topic).
#[test]
fn compaction_does_not_move_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let t = "c";
    let log = open(dir.path());
    create(&log, t, COMPACT);
    let mut model = Model::default();
    // The same few keys over and over: the first segments end up empty.
    for i in 0..200 {
        let k = format!("k{}", i % 4);
        let v = format!("{k}-v{i}");
        model.write(&log, t, &[rec(Some(&k), Some(&v), now_ms())]);
    }
    log.clean_now().unwrap();
    check_compacted(&log, t, &model, false);
    assert_eq!(
        log.offsets(t, 0).unwrap().0,
        0,
        "compaction moved the log start"
    );
    let rr = log.read(t, 0, 5, 1024).unwrap();
    let first = batch::decode(rr.records).unwrap();
    assert!(first[0].offset > 5);
    // Also after a restart.
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.offsets(t, 0).unwrap().0, 0);
    check_compacted(&log, t, &model, false);
}

/// 3c. Compaction keeps a LogAppendTime topic's batches LogAppendTime, with
///     the broker's timestamp (rewriting must not turn them into CreateTime
///     batches whose record timestamps are append time plus the producer's
///     deltas).
#[test]
fn compaction_keeps_log_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let t = "lat";
    let log = open(dir.path());
    let mut cfg = COMPACT.to_vec();
    cfg.push(("message.timestamp.type", "LogAppendTime"));
    create(&log, t, &cfg);
    let mut model = Model::default();
    let mut append_times = BTreeMap::new();
    for i in 0..120 {
        // Batches of 3 with producer timestamps far apart.
        let recs: Vec<NewRecord> = (0..3)
            .map(|j| {
                let k = format!("k{}", (i * 3 + j) % 40);
                let v = format!("{k}-v{i}-{j}");
                rec(Some(&k), Some(&v), 1_000_000 + j * 100_000)
            })
            .collect();
        let before = model.by_offset.len() as i64;
        model.write(&log, t, &recs);
        let rr = log.read(t, 0, before, 1).unwrap();
        let h = batch::validate(&rr.records).unwrap();
        assert!(h.is_log_append_time());
        append_times.insert(before, h.max_timestamp);
    }
    log.clean_now().unwrap();
    check_compacted(&log, t, &model, false);
    let p = log.partition(t, 0).unwrap();
    for h in p.headers(0).unwrap() {
        assert!(
            h.is_log_append_time(),
            "batch at {} lost LogAppendTime",
            h.base_offset
        );
        // The batch's timestamp is the append time of the batch its
        // records came from.
        let (from, ts) = append_times.range(..=h.base_offset).next_back().unwrap();
        assert!(*from <= h.base_offset);
        assert_eq!(h.max_timestamp, *ts);
    }
}

/// A transactional batch of keyed records from producer `pid`.
fn append_txn(log: &Log, topic: &str, pid: i64, seq: i32, pairs: &[(&str, &str)]) {
    let records: Vec<NewRecord> = pairs
        .iter()
        .map(|(k, v)| rec(Some(k), Some(v), now_ms()))
        .collect();
    log.append(
        topic,
        0,
        batch::encode_transactional(pid, 0, seq, &records).unwrap(),
        Durability::Os,
    )
    .unwrap();
}

/// What eddy's readers see of a compacted topic: the latest value per
/// key among committed records.
fn committed_latest(log: &Log, topic: &str) -> BTreeMap<String, String> {
    let (start, end) = log.offsets(topic, 0).unwrap();
    let mut out = BTreeMap::new();
    for records in eddy::log::records(log, topic, 0, start, end, 1 << 20) {
        for r in records.unwrap() {
            out.insert(
                String::from_utf8_lossy(&r.key.unwrap()).to_string(),
                String::from_utf8_lossy(&r.value.unwrap()).to_string(),
            );
        }
    }
    out
}

/// 6. Compaction and transactions: a value written by an aborted
///    transaction is removed and never shadows the committed value before
///    it; nothing at or past the last stable offset (an open transaction)
///    is compacted; what readers see is the same before and after.
#[test]
fn compaction_drops_aborted_transactions_and_stops_at_the_stable_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = "ctx";
    let log = open(dir.path());
    create(&log, t, COMPACT);
    let p = log.partition(t, 0).unwrap();
    let filler = "x".repeat(300);
    for round in 0..4 {
        append(
            &log,
            t,
            &[rec(Some("k"), Some(&format!("committed{round}")), now_ms())],
        );
        append(&log, t, &[rec(Some("pad"), Some(&filler), now_ms())]);
    }
    // An aborted transaction rewrites k, across segment rolls.
    append_txn(&log, t, 9, 0, &[("k", "aborted"), ("pad", &filler)]);
    append_txn(&log, t, 9, 2, &[("k", "aborted2"), ("pad", &filler)]);
    p.write_marker(9, 0, batch::Marker::Abort).unwrap();
    for _ in 0..4 {
        append(&log, t, &[rec(Some("pad"), Some(&filler), now_ms())]);
    }
    // A transaction left open: its value must survive compaction and stay
    // invisible; the plain records after it too.
    append_txn(&log, t, 10, 0, &[("k", "open")]);
    for _ in 0..6 {
        append(&log, t, &[rec(Some("pad"), Some(&filler), now_ms())]);
    }
    let before = committed_latest(&log, t);
    assert_eq!(before["k"], "committed3");
    assert!(log_files(dir.path(), t).len() > 6);
    let stable = p.stable_end();
    assert!(stable < p.log_end());

    let stats = log.clean_now().unwrap();
    assert!(stats.records_removed > 0, "{stats:?}");
    assert_eq!(committed_latest(&log, t), before);
    // Below the stable end no record of the aborted transaction is left.
    let raw: Vec<String> = read_from_uncommitted(&log, t)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(!raw.iter().any(|v| v.starts_with("aborted")), "{raw:?}");
    assert!(
        raw.iter().any(|v| v == "open"),
        "the open transaction was compacted: {raw:?}"
    );

    // The open transaction commits: its value is now the latest, and a
    // second pass keeps it.
    p.write_marker(10, 0, batch::Marker::Commit).unwrap();
    assert_eq!(p.stable_end(), p.log_end());
    assert_eq!(committed_latest(&log, t)["k"], "open");
    log.clean_now().unwrap();
    assert_eq!(committed_latest(&log, t)["k"], "open");
}

/// Every record in the log as a read_uncommitted consumer sees it.
fn read_from_uncommitted(log: &Log, topic: &str) -> Vec<(i64, String)> {
    let p = log.partition(topic, 0).unwrap();
    let mut out = Vec::new();
    let mut fetches = eddy::log::Records::new(
        Box::new(|o, m| p.read(o, m)),
        p.log_start(),
        p.log_end(),
        1 << 20,
    );
    for records in fetches.by_ref() {
        for r in records.unwrap() {
            out.push((
                r.offset,
                String::from_utf8_lossy(&r.value.unwrap()).to_string(),
            ));
        }
    }
    out
}
