//! Crash recovery of the durable log under `kill -9`.
//!
//! The test `crash_recovery` re-executes this test binary as a writer process
//! (`child_writer`, inert unless `EDDY_CRASH_DIR` is set). The writer opens
//! the log, creates the topic `crash` (6 partitions, 256 KiB segments so that
//! segment rolls happen all the time) if it is missing, and appends batches of
//! 1–500 records to random partitions with `Durability::Fsync` from 3 threads.
//! The threads share partitions, so concurrent appenders meet in the same
//! partition's group commit. After every acknowledged append the writer
//! prints `ack <partition> <base> <last> <thread> <first seq> <fsyncs>`.
//!
//! Every record's value names its origin: `p<partition> t<thread> n<seq>`,
//! where `seq` counts that thread's records in that partition (the parent
//! passes each new writer the counts it found in the recovered log). The
//! parent kills the writer with SIGKILL after a random 50–400 ms, at least 20
//! times and until the log holds at least 1,000,000 records, and after every
//! kill it reopens the log and checks, for every partition:
//!
//! - `Log::open` succeeds (a torn tail is truncated, never an error);
//! - offsets are dense from 0 to the log end;
//! - each thread's records appear exactly once and in order (its sequence
//!   numbers in the partition are exactly 0, 1, 2, …): no loss in the
//!   middle, no duplicates, no reordering, no foreign bytes;
//! - every acknowledged range `base..=last` is below the log end and holds
//!   exactly the records that append carried;
//! - everything an earlier recovery found is still there, unchanged.
//!
//! The parent leaves the log alternately with a clean `close()` and with a
//! plain drop (a crash of the recovering process), and now and then fakes a
//! torn write at the end of a partition's active segment (a cut-off batch, a
//! whole batch with a bad CRC, or file-system zeros): the next open must cut
//! exactly those bytes off and nothing else.

#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy::log::batch::{self, NewRecord};
use eddy::log::{Durability, Log, LogError, LogOptions, LogStore};
use rand::Rng;

const TOPIC: &str = "crash";
const PARTITIONS: usize = 6;
const THREADS: usize = 3;
const MAX_BATCH: u64 = 500;
const SEGMENT_BYTES: &str = "262144";
const TARGET_RECORDS: usize = 1_000_000;
const MIN_CYCLES: usize = 20;
/// A safety net: the test fails rather than loop forever if writers stall.
const MAX_CYCLES: usize = 400;
const DIR_ENV: &str = "EDDY_CRASH_DIR";
const NEXT_ENV: &str = "EDDY_CRASH_NEXT";
const SIGKILL: i32 = 9;

fn options() -> LogOptions {
    LogOptions {
        cleaner_interval: None,
    }
}

fn value(partition: usize, thread: usize, seq: u64) -> Bytes {
    Bytes::from(format!("p{partition} t{thread} n{seq}"))
}

/// `p<partition> t<thread> n<seq>` → (partition, thread, seq).
fn parse_value(v: &[u8]) -> Option<(usize, usize, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split(' ');
    let p = it.next()?.strip_prefix('p')?.parse().ok()?;
    let t = it.next()?.strip_prefix('t')?.parse().ok()?;
    let n = it.next()?.strip_prefix('n')?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((p, t, n))
}

// ---------------------------------------------------------------- writer --

/// The writer process. Does nothing in a normal test run.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    // next[t * PARTITIONS + p]: the sequence number thread t's next record
    // for partition p carries.
    let next: Vec<u64> = match std::env::var(NEXT_ENV) {
        Ok(s) => s.split(',').map(|n| n.parse().unwrap()).collect(),
        Err(_) => vec![0; THREADS * PARTITIONS],
    };
    assert_eq!(next.len(), THREADS * PARTITIONS);

    let log = Log::open(&dir, options()).expect("writer: open");
    match log.topic_info(TOPIC) {
        Ok(info) => assert_eq!(info.partitions, PARTITIONS as i32),
        Err(LogError::UnknownTopic(_)) => {
            let config = [("segment.bytes".to_string(), SEGMENT_BYTES.to_string())].into();
            log.create_topic(TOPIC, PARTITIONS as i32, config)
                .expect("writer: create topic");
        }
        Err(e) => panic!("writer: topic_info: {e}"),
    }

    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            let next = next[t * PARTITIONS..(t + 1) * PARTITIONS].to_vec();
            std::thread::spawn(move || write_forever(&log, t, next))
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread panicked");
    }
}

/// Append random batches to random partitions until killed.
fn write_forever(log: &Log, t: usize, mut next: Vec<u64>) {
    let mut rng = rand::rng();
    let stdout = std::io::stdout();
    loop {
        let p = rng.random_range(0..PARTITIONS);
        let count = rng.random_range(1..=MAX_BATCH);
        let n0 = next[p];
        let timestamp = eddy::log::now_ms();
        let records: Vec<NewRecord> = (n0..n0 + count)
            .map(|n| NewRecord {
                key: None,
                value: Some(value(p, t, n)),
                timestamp,
                headers: vec![],
            })
            .collect();
        let bytes = batch::encode(&records).expect("encode");
        let info = log
            .append(TOPIC, p as i32, bytes, Durability::Fsync)
            .expect("append");
        assert!(!info.duplicate);
        assert_eq!(info.last_offset - info.base_offset + 1, count as i64);
        next[p] += count;
        let fsyncs = log.partition(TOPIC, p as i32).unwrap().fsync_count();
        // One line, one write(2) on a pipe: it arrives whole or not at all.
        let mut out = stdout.lock();
        writeln!(
            out,
            "ack {p} {} {} {t} {n0} {fsyncs}",
            info.base_offset, info.last_offset
        )
        .expect("stdout");
        out.flush().expect("stdout");
    }
}

// ---------------------------------------------------------------- parent --

/// One acknowledged (fsynced) append.
#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: usize,
    base: i64,
    last: i64,
    thread: usize,
    first_seq: u64,
    fsyncs: u64,
}

fn parse_ack(s: &str) -> Option<Ack> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 6 {
        return None;
    }
    Some(Ack {
        partition: f[0].parse().ok()?,
        base: f[1].parse().ok()?,
        last: f[2].parse().ok()?,
        thread: f[3].parse().ok()?,
        first_seq: f[4].parse().ok()?,
        fsyncs: f[5].parse().ok()?,
    })
}

/// What the writer process did before it was killed.
struct Run {
    acks: Vec<Ack>,
    /// Per partition, the fsyncs issued up to the last acknowledged append.
    fsyncs: [u64; PARTITIONS],
}

/// Start a writer, SIGKILL it after `delay`, and collect its acks.
fn run_writer(dir: &Path, next: &[u64], delay: Duration) -> Run {
    let next: Vec<String> = next.iter().map(u64::to_string).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DIR_ENV, dir)
        .env(NEXT_ENV, next.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    std::thread::sleep(delay);
    // SIGKILL; harmless if the child already exited (the status says so).
    let _ = child.kill();
    let status = child.wait().expect("wait for writer");
    let lines = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "the writer exited on its own ({status}) instead of being killed; stderr:\n{stderr}"
    );

    let mut run = Run {
        acks: Vec::new(),
        fsyncs: [0; PARTITIONS],
    };
    for (i, line) in lines.iter().enumerate() {
        // libtest may print "test child_writer ... " in front of the first ack.
        let Some(at) = line.find("ack ") else {
            continue;
        };
        match parse_ack(&line[at + 4..]) {
            Some(ack) => {
                run.fsyncs[ack.partition] = run.fsyncs[ack.partition].max(ack.fsyncs);
                run.acks.push(ack);
            }
            // Only a line cut short by the kill may be malformed.
            None => assert_eq!(i + 1, lines.len(), "malformed ack line {line:?}"),
        }
    }
    run
}

/// The log as the parent has verified it: per partition, the (thread, seq)
/// of the record at each offset.
#[derive(Default)]
struct Model {
    partitions: Vec<Vec<(u8, u32)>>,
}

impl Model {
    fn total(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }

    fn ends(&self) -> Vec<usize> {
        self.partitions.iter().map(Vec::len).collect()
    }

    /// Per thread and partition, the sequence number its next record gets.
    fn next_seqs(&self) -> Vec<u64> {
        let mut next = vec![0u64; THREADS * PARTITIONS];
        for (p, recs) in self.partitions.iter().enumerate() {
            for &(t, n) in recs {
                next[t as usize * PARTITIONS + p] = n as u64 + 1;
            }
        }
        next
    }

    /// Read the whole log, check it (see the module docs) against `acks` and
    /// against what earlier recoveries found, and remember it.
    fn verify(&mut self, log: &Log, acks: &[Ack], what: &str) {
        match log.topic_info(TOPIC) {
            Ok(info) => assert_eq!(info.partitions, PARTITIONS as i32, "{what}"),
            Err(LogError::UnknownTopic(_)) => {
                // The first writer died before creating the topic.
                assert!(acks.is_empty() && self.partitions.is_empty(), "{what}");
                return;
            }
            Err(e) => panic!("{what}: topic_info: {e}"),
        }
        let mut found = Vec::with_capacity(PARTITIONS);
        for p in 0..PARTITIONS {
            found.push(read_partition(log, p, what));
        }
        for (p, recs) in found.iter().enumerate() {
            let before = self.partitions.get(p).map(Vec::as_slice).unwrap_or(&[]);
            assert!(
                recs.len() >= before.len() && recs[..before.len()] == *before,
                "{what}: partition {p} lost or changed records an earlier recovery found \
                 (log end {} < {} or contents differ)",
                recs.len(),
                before.len()
            );
        }
        for a in acks {
            let recs = &found[a.partition];
            assert!(
                a.last < recs.len() as i64,
                "{what}: acknowledged {a:?} lost: partition {} ends at {}",
                a.partition,
                recs.len()
            );
            for (i, off) in (a.base..=a.last).enumerate() {
                assert_eq!(
                    recs[off as usize],
                    (a.thread as u8, (a.first_seq + i as u64) as u32),
                    "{what}: acknowledged {a:?}: wrong record at offset {off}"
                );
            }
        }
        self.partitions = found;
    }
}

/// Every record of partition `p`, checking dense offsets from 0 and that
/// each thread's sequence numbers run 0, 1, 2, … without gaps or repeats.
fn read_partition(log: &Log, p: usize, what: &str) -> Vec<(u8, u32)> {
    let (start, end) = log.offsets(TOPIC, p as i32).unwrap();
    assert_eq!(start, 0, "{what}: partition {p} log start");
    let mut recs = Vec::with_capacity(end as usize);
    let mut next_seq = [0u64; THREADS];
    let mut offset = 0i64;
    while offset < end {
        let read = log.read(TOPIC, p as i32, offset, 1 << 20).unwrap();
        assert_eq!(read.high_watermark, end, "{what}: partition {p}");
        assert!(
            !read.records.is_empty(),
            "{what}: partition {p}: nothing readable at {offset} below the end {end}"
        );
        for r in batch::decode(read.records).unwrap() {
            assert_eq!(r.offset, offset, "{what}: partition {p}: offsets not dense");
            let v = r.value.as_deref().unwrap_or_default();
            let Some((vp, t, n)) = parse_value(v) else {
                panic!("{what}: partition {p} offset {offset}: foreign value {v:?}");
            };
            assert!(
                vp == p && t < THREADS && n == next_seq[t],
                "{what}: partition {p} offset {offset}: got {:?}, expected thread {t}'s \
                 record n{} here",
                String::from_utf8_lossy(v),
                next_seq.get(t).copied().unwrap_or_default()
            );
            next_seq[t] += 1;
            recs.push((t as u8, n as u32));
            offset += 1;
        }
    }
    let past = log.read(TOPIC, p as i32, end, 1 << 20).unwrap();
    assert!(
        past.records.is_empty(),
        "{what}: partition {p}: data past the end"
    );
    recs
}

/// Leave the log the way a clean shutdown or a crash would.
fn leave(log: Arc<Log>, clean: bool) {
    if clean {
        log.close().expect("close");
    }
    drop(log);
}

/// The active (last) segment file of partition `p`, if it exists yet.
fn active_segment(dir: &Path, p: usize) -> Option<PathBuf> {
    let pdir = dir.join("topics").join(TOPIC).join(p.to_string());
    fs::read_dir(&pdir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "log"))
        .max()
}

/// Length of every partition's active segment file.
fn active_lengths(dir: &Path) -> Vec<Option<(PathBuf, u64)>> {
    (0..PARTITIONS)
        .map(|p| {
            let seg = active_segment(dir, p)?;
            let len = fs::metadata(&seg).ok()?.len();
            Some((seg, len))
        })
        .collect()
}

/// Append what a torn write leaves behind to the end of partition `p`:
/// a batch cut short, a whole batch whose CRC does not match (the length
/// reached the disk, the payload did not), or zeros (blocks allocated but
/// never written). Returns a description and the file's original length.
fn tear_tail(dir: &Path, p: usize, end: usize, rng: &mut impl Rng) -> (String, PathBuf, u64) {
    let seg = active_segment(dir, p).unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    let count = rng.random_range(1..=MAX_BATCH);
    let records: Vec<NewRecord> = (0..count)
        .map(|n| NewRecord {
            value: Some(value(p, 0, 1_000_000_000 + n)),
            timestamp: eddy::log::now_ms(),
            ..NewRecord::default()
        })
        .collect();
    let mut garbage = batch::encode(&records).unwrap();
    batch::set_base_offset(&mut garbage, end as i64);
    let (kind, bytes) = match rng.random_range(0..3) {
        0 => {
            let cut = rng.random_range(1..garbage.len());
            (
                format!("batch cut at {cut}/{}", garbage.len()),
                garbage[..cut].to_vec(),
            )
        }
        1 => {
            let i = rng.random_range(batch::HEADER_LEN..garbage.len());
            garbage[i] ^= 0x40;
            (format!("bad CRC (byte {i} flipped)"), garbage.to_vec())
        }
        _ => {
            let n = rng.random_range(1..=8192);
            (format!("{n} zero bytes"), vec![0u8; n])
        }
    };
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    (kind, seg, len)
}

#[test]
fn crash_recovery() {
    if std::env::var_os(DIR_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut rng = rand::rng();
    let mut model = Model::default();
    let mut acks: Vec<Ack> = Vec::new();
    let (mut fsyncs, mut torn, mut natural_torn, mut clean_closes) = (0u64, 0, 0, 0);
    let started = Instant::now();
    let mut cycle = 0;
    while cycle < MIN_CYCLES || model.total() < TARGET_RECORDS {
        cycle += 1;
        assert!(
            cycle <= MAX_CYCLES,
            "only {} records after {MAX_CYCLES} cycles",
            model.total()
        );
        let delay = Duration::from_millis(rng.random_range(50..=400));
        let run = run_writer(&dir, &model.next_seqs(), delay);
        fsyncs += run.fsyncs.iter().sum::<u64>();
        acks.extend(run.acks);

        let what = format!("cycle {cycle} (killed after {delay:?})");
        let before = active_lengths(&dir);
        let log = Log::open(&dir, options())
            .unwrap_or_else(|e| panic!("{what}: reopening after kill -9 failed: {e}"));
        // A write(2) cut short by the kill leaves a torn tail of its own.
        for (seg, len) in before.into_iter().flatten() {
            natural_torn += (fs::metadata(&seg).unwrap().len() < len) as usize;
        }
        model.verify(&log, &acks, &what);
        let clean = rng.random_bool(0.5);
        clean_closes += clean as usize;
        leave(log, clean);

        if !model.partitions.is_empty() && rng.random_bool(0.3) {
            torn += 1;
            let p = rng.random_range(0..PARTITIONS);
            let ends = model.ends();
            let (kind, seg, len) = tear_tail(&dir, p, ends[p], &mut rng);
            let what = format!("{what}, torn tail on partition {p}: {kind}");
            let log = Log::open(&dir, options())
                .unwrap_or_else(|e| panic!("{what}: reopening failed: {e}"));
            assert_eq!(
                fs::metadata(&seg).unwrap().len(),
                len,
                "{what}: not truncated back"
            );
            model.verify(&log, &acks, &what);
            assert_eq!(model.ends(), ends, "{what}: log ends moved");
            leave(log, rng.random_bool(0.5));
        }
    }
    let appends = acks.len();
    eprintln!(
        "crash_recovery: {cycle} kill -9 cycles in {:.1?}: {} records in the log, {} acknowledged \
         in {appends} fsync appends with {fsyncs} fsyncs; {clean_closes} clean closes, {torn} \
         torn tails injected, {natural_torn} left by kills; per partition: {:?}",
        started.elapsed(),
        model.total(),
        acks.iter().map(|a| a.last - a.base + 1).sum::<i64>(),
        model.ends()
    );
}
