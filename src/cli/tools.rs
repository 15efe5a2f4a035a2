//! Offline tools over a data directory: topic admin, produce, consume,
//! groups, verify, clean. Each opens the log (taking the directory's lock),
//! does its work and closes it cleanly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::{CliError, ConsumeArgs, GroupCommand, ProduceArgs, TopicCommand};
use crate::log::batch::{self, NewRecord};
use crate::log::partitioner::Partitioner;
use crate::log::repair::{self, Report};
use crate::log::{self, CommittedOffset, Durability, Log, LogOptions, LogStore, now_ms};

fn open(dir: &Path) -> Result<Arc<Log>, CliError> {
    Ok(Log::open(
        dir,
        LogOptions {
            cleaner_interval: None,
        },
    )?)
}

fn parse_configs(items: &[String]) -> Result<BTreeMap<String, Option<String>>, CliError> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("config {item:?} is not KEY=VALUE")))?;
        let v = if v.is_empty() {
            None
        } else {
            Some(v.to_string())
        };
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// Ignore a closed stdout (`eddy consume … | head`): not an error.
fn ok_on_broken_pipe(r: std::io::Result<()>) -> Result<(), CliError> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn topic(dir: &Path, cmd: TopicCommand) -> Result<(), CliError> {
    let log = open(dir)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let cfg = parse_configs(&configs)?
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let info = log.create_topic(&name, partitions, cfg)?;
            writeln!(
                out,
                "Created topic {} with {} partition(s).",
                info.name, info.partitions
            )?;
        }
        TopicCommand::List { all } => {
            for t in log.topics() {
                if all || !t.internal {
                    writeln!(out, "{}", t.name)?;
                }
            }
        }
        TopicCommand::Describe { name } => {
            let t = log.topic(&name)?;
            writeln!(
                out,
                "Topic: {}\tPartitionCount: {}",
                t.name(),
                t.partition_count()
            )?;
            let configs: Vec<String> = t
                .overrides()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(out, "Configs: {}", configs.join(","))?;
            writeln!(
                out,
                "{:>9}  {:>12}  {:>12}  {:>8}  {:>12}",
                "Partition", "StartOffset", "EndOffset", "Segments", "Bytes"
            )?;
            for p in t.partitions() {
                writeln!(
                    out,
                    "{:>9}  {:>12}  {:>12}  {:>8}  {:>12}",
                    p.id(),
                    p.log_start(),
                    p.log_end(),
                    p.segment_count(),
                    p.size_bytes()
                )?;
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            partitions,
        } => {
            if !configs.is_empty() {
                log.alter_topic_config(&name, &parse_configs(&configs)?)?;
            }
            if let Some(n) = partitions {
                log.create_partitions(&name, n)?;
            }
            writeln!(out, "Altered topic {name}.")?;
        }
        TopicCommand::Delete { name } => {
            log.delete_topic(&name)?;
            writeln!(out, "Deleted topic {name}.")?;
        }
    }
    drop(out);
    log.close()?;
    Ok(())
}

pub fn produce(dir: &Path, args: ProduceArgs) -> Result<(), CliError> {
    let log = open(dir)?;
    let topic = log.topic(&args.topic)?;
    let partitions = topic.partition_count();
    if let Some(p) = args.partition {
        topic.partition(p)?;
    }
    let durability = match args.acks.as_str() {
        "0" => Durability::None,
        "1" => Durability::Os,
        _ => Durability::Fsync,
    };
    let batch_size = args.batch_size.max(1);
    let partitioner = Partitioner::new();
    let mut pending: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
    let mut written = 0u64;
    let flush = |p: i32, recs: &mut Vec<NewRecord>| -> Result<(), CliError> {
        if recs.is_empty() {
            return Ok(());
        }
        let bytes = batch::encode(recs).map_err(log::LogError::from)?;
        topic.partition(p)?.append(bytes, durability)?;
        recs.clear();
        Ok(())
    };
    let stdin = std::io::stdin();
    let progress = Progress::new(stdin_size(&stdin));
    for line in stdin.lock().lines() {
        let line = line?;
        progress.line(line.len() as u64 + 1, written + 1);
        let (key, value) = match line.split_once('\t') {
            Some((k, v)) if !args.no_key => (Some(Bytes::copy_from_slice(k.as_bytes())), v),
            _ => (None, line.as_str()),
        };
        let p = args
            .partition
            .unwrap_or_else(|| partitioner.partition(key.as_deref(), partitions));
        let recs = pending.entry(p).or_default();
        recs.push(NewRecord {
            key,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            timestamp: now_ms(),
            headers: vec![],
        });
        written += 1;
        if recs.len() >= batch_size {
            flush(p, recs)?;
        }
    }
    for (p, recs) in pending.iter_mut() {
        flush(*p, recs)?;
    }
    progress.done();
    eprintln!("produced {written} record(s) to {}", args.topic);
    log.close()?;
    Ok(())
}

/// The size of stdin when it is a file (`eddy produce t < big.json`).
fn stdin_size(stdin: &std::io::Stdin) -> Option<u64> {
    use std::os::fd::AsFd;
    let fd = stdin.as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

/// Progress of a long load on stderr: a bar (bytes read of a file) or a
/// counter (records of a pipe) on a terminal; elsewhere a plain line
/// every million records.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(bytes: Option<u64>) -> Progress {
        let bar = match bytes {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        Progress { bar }
    }

    fn line(&self, bytes: u64, records: u64) {
        if self.bar.is_hidden() {
            if records.is_multiple_of(1_000_000) {
                eprintln!("produced {records} records…");
            }
            return;
        }
        self.bar.inc(bytes);
        if records.is_multiple_of(1000) {
            self.bar.set_message(format!("{records} records"));
        }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn consume(dir: &Path, args: ConsumeArgs) -> Result<(), CliError> {
    let log = open(dir)?;
    let topic = log.topic(&args.topic)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => {
            topic.partition(p)?;
            vec![p]
        }
        None => (0..topic.partition_count()).collect(),
    };
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    let mut printed = 0u64;
    let mut commits = Vec::new();
    let limit = args.max_messages.unwrap_or(u64::MAX);
    'partitions: for p in partitions {
        let part = topic.partition(p)?;
        let committed = args
            .group
            .as_deref()
            .and_then(|g| log.committed_offset(g, &args.topic, p));
        let mut offset = match (args.offset, committed) {
            (Some(o), _) => o,
            (None, Some(c)) => c.offset,
            (None, None) if args.from_beginning => part.log_start(),
            (None, None) => part.log_end(),
        };
        // Kafka's auto.offset.reset: a position outside the log snaps back
        // to the start.
        if offset < part.log_start() || offset > part.log_end() {
            offset = part.log_start();
        }
        let end = part.log_end();
        while offset < end {
            let read = part.read(offset, 1 << 20)?;
            if read.records.is_empty() {
                break;
            }
            let records = batch::decode(read.records).map_err(log::LogError::from)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for r in records {
                if r.offset < offset {
                    continue;
                }
                if printed >= limit {
                    commits.push((args.topic.clone(), p, r.offset));
                    break 'partitions;
                }
                let mut line = Vec::new();
                if args.print_offset {
                    line.extend_from_slice(format!("{p}\t{}\t", r.offset).as_bytes());
                }
                if args.print_key {
                    line.extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
                    line.push(b'\t');
                }
                line.extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
                line.push(b'\n');
                if let Err(e) = out.write_all(&line) {
                    return ok_on_broken_pipe(Err(e));
                }
                printed += 1;
            }
            offset = last + 1;
        }
        commits.push((args.topic.clone(), p, offset.max(end)));
    }
    ok_on_broken_pipe(out.flush())?;
    if let Some(g) = &args.group {
        let offsets: Vec<(String, i32, CommittedOffset)> = commits
            .into_iter()
            .map(|(t, p, o)| {
                (
                    t,
                    p,
                    CommittedOffset {
                        offset: o,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp: now_ms(),
                    },
                )
            })
            .collect();
        log.commit_offsets(g, &offsets)?;
    }
    if !args.from_beginning && args.group.is_none() && args.offset.is_none() && printed == 0 {
        eprintln!("(read from the end of the log; pass --from-beginning to see existing records)");
    }
    log.close()?;
    Ok(())
}

pub fn group(dir: &Path, cmd: GroupCommand) -> Result<(), CliError> {
    let log = open(dir)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    match cmd {
        GroupCommand::List => {
            for g in log.groups() {
                writeln!(out, "{g}")?;
            }
        }
        GroupCommand::Describe { group } => {
            let offsets = log.group_offsets(&group);
            if offsets.is_empty() {
                return Err(CliError::Usage(format!(
                    "consumer group {group:?} has no committed offsets"
                )));
            }
            writeln!(
                out,
                "{:<24} {:>9} {:>14} {:>14} {:>8}",
                "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
            )?;
            for (t, p, c) in offsets {
                let end = log.offsets(&t, p).map(|(_, e)| e).unwrap_or(-1);
                writeln!(
                    out,
                    "{:<24} {:>9} {:>14} {:>14} {:>8}",
                    t,
                    p,
                    c.offset,
                    end,
                    (end - c.offset).max(0)
                )?;
            }
        }
        GroupCommand::Delete { group } => {
            let n = log.offset_store().delete_group(&group)?;
            writeln!(out, "Deleted {n} committed offset(s) of group {group}.")?;
        }
    }
    drop(out);
    log.close()?;
    Ok(())
}

/// Print what `inspect` found: each problem, then what repair does about
/// it (`verb`: "would" before the fact, "will" just before doing it).
fn print_findings(out: &mut impl Write, report: &Report, verb: &str) -> std::io::Result<()> {
    for f in &report.findings {
        writeln!(out, "damaged: {}", f.damage)?;
        if f.cuts.is_empty() {
            writeln!(out, "  repair {verb} cut nothing (nothing left to salvage)")?;
        }
        for c in &f.cuts {
            writeln!(out, "  repair {verb} {c}")?;
        }
    }
    Ok(())
}

pub fn verify(dir: &Path) -> Result<(), CliError> {
    let report = repair::inspect(dir)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    print_findings(&mut out, &report, "would")?;
    if !report.is_clean() {
        return Err(CliError::Damaged(report.findings.len()));
    }
    writeln!(
        out,
        "ok: {} batches in {} segments of {} topics verified",
        report.batches, report.segments, report.topics
    )?;
    Ok(())
}

pub fn repair(dir: &Path) -> Result<(), CliError> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let done = repair::repair_with(dir, |report| {
        print_findings(&mut out, report, "will")?;
        out.flush()
    })?;
    if let Some(saved) = &done.saved_in {
        writeln!(out, "saved what was cut in {}", saved.display())?;
    }
    for d in &done.remaining {
        writeln!(out, "still damaged: {d}")?;
    }
    if !done.remaining.is_empty() {
        return Err(CliError::Damaged(done.remaining.len()));
    }
    writeln!(
        out,
        "ok: {} problem(s) repaired; {} batches in {} segments of {} topics",
        done.report.findings.len(),
        done.report.batches,
        done.report.segments,
        done.report.topics
    )?;
    Ok(())
}

pub fn clean(dir: &Path) -> Result<(), CliError> {
    let log = open(dir)?;
    let stats = log.clean_now()?;
    println!(
        "deleted {} segment(s); compacted {} segment(s), removing {} record(s)",
        stats.segments_deleted, stats.segments_compacted, stats.records_removed
    );
    log.close()?;
    Ok(())
}
