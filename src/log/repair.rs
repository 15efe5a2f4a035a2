//! Offline inspection and repair of a data directory (`eddy verify`,
//! `eddy repair`), with the server stopped: both take the directory's lock.
//!
//! [`inspect`] validates every batch of every segment (recovery at open
//! trusts what was fsynced before a clean stop or a roll, and so does not
//! find damage there until a read runs into it), every index entry,
//! producer snapshot, recovery point and `topic.json`, and says for each
//! problem what open does about it and what [`repair`] would cut.
//!
//! [`repair`] cuts it as Kafka's recovery would: a damaged segment is
//! truncated at its first invalid batch and the partition's later segments
//! are removed (the partition then ends where the damage was, appends
//! continue from there); damaged indexes are rebuilt, damaged snapshots
//! dropped, a damaged `topic.json` rewritten from the partition
//! directories. Nothing is deleted: every byte cut and every file removed is
//! moved under `<data>/repair-<ms>/` first, so an operator can still
//! salvage it. Then the log is opened and closed once, which rebuilds what
//! depends on the cut files and leaves a clean shutdown.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::config::TopicConfig;
use super::damage::{Action, Damage};
use super::error::{IoContext, LogError, Result};
use super::index::{Index, sync_dir, write_atomic};
use super::partition::{RECOVERY_POINT, read_checkpoint};
use super::producer::ProducerStates;
use super::segment::{Segment, file_stem};
use super::topic::{META, partition_dirs, read_meta, rewrite_meta};
use super::{Log, LogOptions, now_ms, offsets};

/// One change `repair` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Truncate a segment at `position`: `bytes` bytes go.
    Truncate {
        file: PathBuf,
        position: u64,
        bytes: u64,
    },
    /// Remove a whole segment (with its indexes) that follows the damage.
    RemoveSegment { file: PathBuf, bytes: u64 },
    /// Rewrite a segment's `.index` and `.timeindex` from the log.
    RebuildIndex { file: PathBuf },
    /// Remove a file the log rebuilds or does without (a producer snapshot,
    /// the recovery point).
    Remove { file: PathBuf },
    /// Write `topic.json` anew.
    RewriteTopic {
        file: PathBuf,
        partitions: i32,
        config: BTreeMap<String, String>,
    },
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Truncate {
                file,
                position,
                bytes,
            } => write!(
                f,
                "truncate {} at byte {position} ({bytes} bytes)",
                file.display()
            ),
            Cut::RemoveSegment { file, bytes } => {
                write!(f, "remove segment {} ({bytes} bytes)", file.display())
            }
            Cut::RebuildIndex { file } => write!(f, "rebuild the indexes of {}", file.display()),
            Cut::Remove { file } => write!(f, "remove {}", file.display()),
            Cut::RewriteTopic {
                file,
                partitions,
                config,
            } => {
                let c: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "rewrite {} with {partitions} partition(s) and config {{{}}}",
                    file.display(),
                    c.join(", ")
                )
            }
        }
    }
}

/// A problem and what `repair` does about it (nothing, for problems that
/// only lose what is already gone).
#[derive(Debug, Clone)]
pub struct Finding {
    /// Where, and what open does about it (`action`).
    pub damage: Damage,
    pub cuts: Vec<Cut>,
}

/// What [`inspect`] found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Batches validated.
    pub batches: u64,
    pub segments: u64,
    pub topics: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

struct Ctx<'a> {
    report: &'a mut Report,
    now: i64,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn find(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        file: &Path,
        position: u64,
        offset: i64,
        reason: String,
        action: Action,
        bytes: u64,
        cuts: Vec<Cut>,
    ) {
        self.report.findings.push(Finding {
            damage: Damage {
                topic: topic.to_string(),
                partition,
                file: file.to_path_buf(),
                position,
                offset,
                reason,
                action,
                bytes,
                detected_ms: self.now,
            },
            cuts,
        });
    }
}

/// Validate everything under `dir` without changing anything. Takes the
/// directory's lock (fails with [`LogError::Locked`] while eddy runs).
pub fn inspect(dir: &Path) -> Result<Report> {
    let _lock = super::lock_dir(dir)?;
    inspect_locked(dir)
}

fn inspect_locked(dir: &Path) -> Result<Report> {
    let mut report = Report::default();
    let clean = dir.join(super::CLEAN_SHUTDOWN).exists();
    let topics_dir = dir.join("topics");
    let mut names: Vec<PathBuf> = match fs::read_dir(&topics_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                !n.starts_with(".tmp-") && !n.starts_with(".deleted-")
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).at(&topics_dir),
    };
    names.sort();
    let mut ctx = Ctx {
        report: &mut report,
        now: now_ms(),
    };
    for topic_dir in names {
        inspect_topic(&mut ctx, &topic_dir, clean)?;
    }
    Ok(report)
}

/// The config `repair` gives a topic whose `topic.json` is lost: what eddy
/// creates it with for its own offsets topic; for any other, the defaults
/// but time retention off, so that nothing is deleted before an operator
/// has set the real config again.
fn recovered_config(name: &str) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    if name == offsets::TOPIC {
        c.insert("cleanup.policy".into(), "compact".into());
        c.insert("segment.bytes".into(), (100 * 1024 * 1024).to_string());
    } else {
        c.insert("retention.ms".into(), "-1".into());
    }
    c
}

fn inspect_topic(ctx: &mut Ctx, dir: &Path, clean: bool) -> Result<()> {
    ctx.report.topics += 1;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let meta_path = dir.join(META);
    let found = partition_dirs(dir)?;
    let meta = read_meta(&meta_path, &name).and_then(|m| {
        match found.iter().find(|(p, data)| **p >= m.partitions && **data) {
            Some((p, _)) => Err(format!(
                "says {} partition(s) but partition {p} holds records",
                m.partitions
            )),
            None => Ok(m),
        }
    });
    let (partitions, config) = match meta {
        Ok(m) => (m.partitions, m.config),
        Err(reason) => {
            let Some(last) = found.keys().next_back().copied() else {
                ctx.find(
                    &name,
                    None,
                    &meta_path,
                    0,
                    -1,
                    format!("{reason}; no partition directories: not a topic"),
                    Action::Reported,
                    0,
                    vec![],
                );
                return Ok(());
            };
            let config = recovered_config(&name);
            ctx.find(
                &name,
                None,
                &meta_path,
                0,
                -1,
                reason,
                Action::Fenced,
                0,
                vec![Cut::RewriteTopic {
                    file: meta_path.clone(),
                    partitions: last + 1,
                    config: config.clone(),
                }],
            );
            (last + 1, config)
        }
    };
    let config = TopicConfig::from_overrides(&config).unwrap_or_default();
    for p in 0..partitions {
        let pdir = dir.join(p.to_string());
        if !pdir.is_dir() {
            ctx.find(
                &name,
                Some(p),
                &pdir,
                0,
                0,
                "partition directory missing (open recreates it empty)".into(),
                Action::Reported,
                0,
                vec![],
            );
            continue;
        }
        inspect_partition(ctx, &name, p, &pdir, &config, clean)?;
    }
    Ok(())
}

fn inspect_partition(
    ctx: &mut Ctx,
    topic: &str,
    id: i32,
    dir: &Path,
    config: &TopicConfig,
    clean: bool,
) -> Result<()> {
    let mut bases = Vec::new();
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let n = entry.file_name().to_string_lossy().to_string();
        if let Some(stem) = n.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(b) if b >= 0 && stem.len() == 20 => bases.push(b),
                _ => ctx.find(
                    topic,
                    Some(id),
                    &entry.path(),
                    0,
                    -1,
                    "not a segment file name (20-digit offset); ignored".into(),
                    Action::Reported,
                    0,
                    vec![],
                ),
            }
        } else if let Some(stem) = n.strip_suffix(".snapshot")
            && let Ok(off) = stem.parse::<i64>()
        {
            snapshots.push((off, entry.path()));
        }
    }
    bases.sort_unstable();
    let rp = dir.join(RECOVERY_POINT);
    if rp.exists() && read_checkpoint(&rp).is_none() {
        ctx.find(
            topic,
            Some(id),
            &rp,
            0,
            -1,
            "recovery point does not parse (open rescans every segment)".into(),
            Action::Rebuilt,
            0,
            vec![Cut::Remove { file: rp.clone() }],
        );
    }
    let interval = config.index_interval_bytes as u64;
    let now = ctx.now;
    let mut prev_end: Option<i64> = None;
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        let last = i + 1 == bases.len();
        let below = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        let (seg, stop) = Segment::open_with(dir, base, false, interval, now, last, below)?;
        ctx.report.segments += 1;
        let file_len = fs::metadata(seg.log_path()).at(seg.log_path())?.len();
        // Everything after segment `i` goes with a cut there.
        let later = |from: usize| -> Result<Vec<Cut>> {
            bases[from..]
                .iter()
                .map(|b| {
                    let f = dir.join(format!("{}.log", file_stem(*b)));
                    let bytes = fs::metadata(&f).at(&f)?.len();
                    Ok(Cut::RemoveSegment { file: f, bytes })
                })
                .collect()
        };
        let later_bytes = |cuts: &[Cut]| -> u64 {
            cuts.iter()
                .map(|c| match c {
                    Cut::RemoveSegment { bytes, .. } => *bytes,
                    _ => 0,
                })
                .sum()
        };
        if let Some(pe) = prev_end {
            if pe > base {
                let cuts = later(i)?;
                let bytes = later_bytes(&cuts);
                ctx.find(
                    topic,
                    Some(id),
                    seg.log_path(),
                    0,
                    pe,
                    format!(
                        "segment starts at {base} but the previous one ends at {}",
                        pe - 1
                    ),
                    Action::Fenced,
                    bytes,
                    cuts,
                );
                break;
            }
            if pe < base && !config.cleanup_policy.compact {
                ctx.find(
                    topic,
                    Some(id),
                    seg.log_path(),
                    0,
                    pe,
                    format!(
                        "offsets {pe} to {} are missing (a segment file deleted or cut short?)",
                        base - 1
                    ),
                    Action::Reported,
                    0,
                    vec![],
                );
            }
        }
        let batches = seg.headers_from(base).map(|h| h.len()).unwrap_or(0);
        ctx.report.batches += batches as u64;
        if let Some(stop) = stop {
            let cut = file_len - stop.position;
            let mut cuts = vec![Cut::Truncate {
                file: seg.log_path().to_path_buf(),
                position: stop.position,
                bytes: cut,
            }];
            let removed = later(i + 1)?;
            let action = if last && stop.at_tail() {
                Action::Truncated
            } else {
                Action::Fenced
            };
            let reason = match stop.resume {
                Some((pos, off)) => format!(
                    "{}; valid batches follow from byte {pos} (offset {off})",
                    stop.error
                ),
                None => format!("{}; no valid batch follows in this segment", stop.error),
            };
            let bytes = cut + later_bytes(&removed);
            cuts.extend(removed);
            ctx.find(
                topic,
                Some(id),
                seg.log_path(),
                stop.position,
                seg.next_offset(),
                reason,
                action,
                bytes,
                cuts,
            );
            break;
        }
        // Index files: checked only where open relies on them (every
        // segment but the last, which has none of its own until a clean
        // stop writes them).
        if (!last || clean) && file_len > 0 {
            let (ix, tix) = seg.index_paths();
            let problem = match Index::load_files(ix, tix, file_len) {
                None => Some("index files missing or not matching the log".to_string()),
                Some(loaded) => seg.check_index(&loaded)?,
            };
            if let Some(reason) = problem {
                ctx.find(
                    topic,
                    Some(id),
                    ix,
                    0,
                    base,
                    reason,
                    Action::Rebuilt,
                    0,
                    vec![Cut::RebuildIndex {
                        file: seg.log_path().to_path_buf(),
                    }],
                );
            }
        }
        prev_end = Some(seg.next_offset());
        i += 1;
    }
    snapshots.sort();
    for (off, path) in snapshots {
        if let Err(e) = ProducerStates::read_snapshot(&path) {
            ctx.find(
                topic,
                Some(id),
                &path,
                0,
                off,
                format!("{e}; producer state is rebuilt from the log"),
                Action::Rebuilt,
                0,
                vec![Cut::Remove { file: path.clone() }],
            );
        }
    }
    Ok(())
}

/// What [`repair`] did.
#[derive(Debug)]
pub struct Repaired {
    /// What was found and cut.
    pub report: Report,
    /// Where the cut bytes and removed files were moved (None: nothing cut).
    pub saved_in: Option<PathBuf>,
    /// Damage the log still reports when opened after the repair (none,
    /// unless something changed under it).
    pub remaining: Vec<Damage>,
}

/// Inspect, cut everything [`inspect`] finds, then open and close the log
/// once (rebuilding what depends on the cut files). Takes the directory's
/// lock.
pub fn repair(dir: &Path) -> Result<Repaired> {
    repair_with(dir, |_| Ok(()))
}

/// As [`repair`], showing the plan to `before` first (the CLI prints it):
/// nothing is cut if it fails.
pub fn repair_with(
    dir: &Path,
    before: impl FnOnce(&Report) -> std::io::Result<()>,
) -> Result<Repaired> {
    let (report, saved_in) = {
        let _lock = super::lock_dir(dir)?;
        let report = inspect_locked(dir)?;
        before(&report).at(dir)?;
        let saved_in = if report.is_clean() {
            None
        } else {
            let save = dir.join(format!("repair-{}", now_ms()));
            for f in &report.findings {
                for c in &f.cuts {
                    apply(dir, &save, c)?;
                }
            }
            Some(save)
        };
        (report, saved_in)
    };
    let log = Log::open(
        dir,
        LogOptions {
            cleaner_interval: None,
        },
    )?;
    let remaining = log.damage();
    log.close()?;
    Ok(Repaired {
        report,
        saved_in,
        remaining,
    })
}

/// Where under `save` a file of the data directory `dir` is kept.
fn saved_path(dir: &Path, save: &Path, file: &Path) -> Result<PathBuf> {
    let rel = file.strip_prefix(dir).unwrap_or(file);
    let to = save.join(rel.strip_prefix("topics").unwrap_or(rel));
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    Ok(to)
}

/// Move `file` under `save` (rename; same file system).
fn move_aside(dir: &Path, save: &Path, file: &Path) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    let to = saved_path(dir, save, file)?;
    fs::rename(file, &to).at(&to)?;
    Ok(())
}

fn apply(dir: &Path, save: &Path, cut: &Cut) -> Result<()> {
    match cut {
        Cut::Truncate { file, position, .. } => {
            // The cut bytes are saved (and fsynced) before the segment loses
            // them.
            let to = saved_path(dir, save, file)?;
            let to = to.with_file_name(format!(
                "{}.from-byte-{position}",
                to.file_name().unwrap_or_default().to_string_lossy()
            ));
            let mut src = File::open(file).at(file)?;
            src.seek(SeekFrom::Start(*position)).at(file)?;
            let mut tail = Vec::new();
            src.read_to_end(&mut tail).at(file)?;
            let mut out = File::create(&to).at(&to)?;
            out.write_all(&tail).at(&to)?;
            out.sync_all().at(&to)?;
            let seg_dir = file.parent().unwrap_or(dir);
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let base: i64 = stem.parse().map_err(|_| LogError::CorruptMetadata {
                file: file.clone(),
                reason: "segment file name is not an offset".into(),
            })?;
            let (seg, _) = Segment::open_with(seg_dir, base, false, 0, now_ms(), false, i64::MAX)?;
            seg.truncate_to(*position)?;
            rebuild_index(seg_dir, base)?;
            // The recovery point may not claim what was cut.
            let rp = seg_dir.join(RECOVERY_POINT);
            if let Some(point) = read_checkpoint(&rp)
                && point > seg.next_offset()
            {
                write_atomic(&rp, seg.next_offset().to_string().as_bytes())?;
            }
            sync_dir(seg_dir)?;
        }
        Cut::RemoveSegment { file, .. } => {
            // The .log first, as retention deletes: an interruption leaves
            // orphan indexes, which open removes.
            move_aside(dir, save, file)?;
            move_aside(dir, save, &file.with_extension("index"))?;
            move_aside(dir, save, &file.with_extension("timeindex"))?;
            if let Some(parent) = file.parent() {
                // The recovery point may not claim what was removed.
                let base: Option<i64> = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok());
                let rp = parent.join(RECOVERY_POINT);
                if let (Some(point), Some(base)) = (read_checkpoint(&rp), base)
                    && point > base
                {
                    write_atomic(&rp, base.to_string().as_bytes())?;
                }
                sync_dir(parent)?;
            }
        }
        Cut::RebuildIndex { file } => {
            let seg_dir = file.parent().unwrap_or(dir);
            let base: i64 = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            rebuild_index(seg_dir, base)?;
            sync_dir(seg_dir)?;
        }
        Cut::Remove { file } => {
            move_aside(dir, save, file)?;
            if let Some(parent) = file.parent() {
                sync_dir(parent)?;
            }
        }
        Cut::RewriteTopic {
            file,
            partitions,
            config,
        } => {
            let topic_dir = file.parent().unwrap_or(dir);
            let name = topic_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if file.exists() {
                let to = saved_path(dir, save, file)?;
                fs::copy(file, &to).at(&to)?;
            }
            rewrite_meta(topic_dir, &name, *partitions, config.clone())?;
        }
    }
    Ok(())
}

/// Rewrite a segment's index files from a full scan of its log, with the
/// topic's index interval.
fn rebuild_index(seg_dir: &Path, base: i64) -> Result<()> {
    let interval = seg_dir
        .parent()
        .and_then(|t| {
            let name = t.file_name()?.to_string_lossy().to_string();
            read_meta(&t.join(META), &name).ok()
        })
        .and_then(|m| TopicConfig::from_overrides(&m.config).ok())
        .unwrap_or_default()
        .index_interval_bytes as u64;
    let (seg, _) = Segment::open_with(seg_dir, base, false, interval, now_ms(), false, i64::MAX)?;
    seg.write_index_files()
}
