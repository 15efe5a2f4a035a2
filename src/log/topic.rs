//! A topic: its configuration and its partitions, in
//! `<data>/topics/<name>/` with `topic.json` and one directory per partition.
//!
//! Creation is atomic: everything is built in `topics/.tmp-<name>`, fsynced,
//! and renamed into place, so a crash leaves either no topic or a whole one.
//! Deletion renames to `topics/.deleted-<name>-<ms>` first, then removes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::config::TopicConfig;
use super::damage::{Action, Damage, DamageLog};
use super::error::{IoContext, LogError, Result};
use super::index::{sync_dir, write_atomic};
use super::partition::Partition;

pub(crate) const META: &str = "topic.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: i32,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub created_ms: i64,
}

#[derive(Debug)]
pub struct Topic {
    name: String,
    dir: PathBuf,
    meta: RwLock<TopicMeta>,
    config: Arc<RwLock<TopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// `topic.json` was damaged at open: the topic was opened from its
    /// partition directories with the default config, read-only.
    damaged: Option<Damage>,
    damage: Arc<DamageLog>,
}

/// Kafka's rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| LogError::InvalidTopicName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 249 {
        return Err(bad("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not allowed"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn partition_dir(dir: &Path, p: i32) -> PathBuf {
    dir.join(p.to_string())
}

impl Topic {
    /// Create a topic under `topics_dir` atomically.
    pub fn create(
        topics_dir: &Path,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        now_ms: i64,
        damage: &Arc<DamageLog>,
    ) -> Result<Topic> {
        validate_name(name)?;
        if !(1..=10_000).contains(&partitions) {
            return Err(LogError::InvalidPartitions(partitions));
        }
        let config = TopicConfig::from_overrides(&overrides)?;
        let dir = topics_dir.join(name);
        if dir.exists() {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let tmp = topics_dir.join(format!(".tmp-{name}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir_all(&tmp).at(&tmp)?;
        let meta = TopicMeta {
            name: name.to_string(),
            partitions,
            config: overrides,
            created_ms: now_ms,
        };
        let config = Arc::new(RwLock::new(config));
        for p in 0..partitions {
            // Created in the temp dir only to lay out the files; reopened
            // below from the final path.
            Partition::create(
                name,
                p,
                &partition_dir(&tmp, p),
                Arc::clone(&config),
                Arc::clone(damage),
            )?;
        }
        write_meta(&tmp, &meta)?;
        sync_dir(&tmp)?;
        // The rename publishes the complete topic; fsyncing the parent makes
        // the publication itself durable before we report success.
        fs::rename(&tmp, &dir).at(&dir)?;
        sync_dir(topics_dir)?;
        Self::open(&dir, true, damage)?.ok_or_else(|| LogError::CorruptMetadata {
            file: dir.join(META),
            reason: "created topic does not open".into(),
        })
    }

    /// Open a topic directory (see `Partition::open` for `clean`). A
    /// `topic.json` that is missing, does not parse or does not fit the
    /// directory (another name, fewer partitions than hold data, an invalid
    /// config) does not stop the log from opening: the topic opens from its
    /// partition directories with the default config, every partition
    /// fenced (read-only) and never cleaned, since its retention and
    /// cleanup policy are unknown; `eddy repair` rewrites the file. `None`:
    /// the directory holds no topic (no `topic.json`, no partition).
    pub fn open(dir: &Path, clean: bool, damage: &Arc<DamageLog>) -> Result<Option<Topic>> {
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let meta_path = dir.join(META);
        let found = partition_dirs(dir)?;
        let meta = match read_meta(&meta_path, &dir_name) {
            Ok(meta) => match found
                .iter()
                .find(|(p, data)| **p >= meta.partitions && **data)
            {
                Some((p, _)) => Err(format!(
                    "says {} partition(s) but partition {p} holds records",
                    meta.partitions
                )),
                None => Ok(meta),
            },
            Err(e) => Err(e),
        };
        let (meta, damaged) = match meta {
            Ok(meta) => {
                // Partition directories past the recorded count belong to an
                // interrupted CreatePartitions that never committed (they
                // hold no records: checked above).
                for p in found.keys().filter(|p| **p >= meta.partitions) {
                    let path = partition_dir(dir, *p);
                    fs::remove_dir_all(&path).at(&path)?;
                }
                (meta, None)
            }
            Err(reason) => {
                let Some(last) = found.keys().next_back() else {
                    damage.record(Damage {
                        topic: dir_name.clone(),
                        partition: None,
                        file: meta_path,
                        position: 0,
                        offset: -1,
                        reason: format!("{reason}; no partition directories: not a topic, ignored"),
                        action: Action::Reported,
                        bytes: 0,
                        detected_ms: super::now_ms(),
                    });
                    return Ok(None);
                };
                let d = Damage {
                    topic: dir_name.clone(),
                    partition: None,
                    file: meta_path,
                    position: 0,
                    offset: -1,
                    reason: format!(
                        "{reason}; opened from its {} partition directories with the default config",
                        last + 1
                    ),
                    action: Action::Fenced,
                    bytes: 0,
                    detected_ms: super::now_ms(),
                };
                damage.record(d.clone());
                let meta = TopicMeta {
                    name: dir_name.clone(),
                    partitions: last + 1,
                    config: BTreeMap::new(),
                    created_ms: 0,
                };
                (meta, Some(d))
            }
        };
        let config = Arc::new(RwLock::new(
            TopicConfig::from_overrides(&meta.config).unwrap_or_default(),
        ));
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let part = Partition::open(
                &meta.name,
                p,
                &partition_dir(dir, p),
                Arc::clone(&config),
                clean,
                Arc::clone(damage),
            )?;
            if let Some(d) = &damaged {
                part.fence(Damage {
                    partition: Some(p),
                    ..d.clone()
                });
            }
            partitions.push(Arc::new(part));
        }
        Ok(Some(Topic {
            name: meta.name.clone(),
            dir: dir.to_path_buf(),
            meta: RwLock::new(meta),
            config,
            partitions: RwLock::new(partitions),
            damaged,
            damage: Arc::clone(damage),
        }))
    }

    /// The damage to `topic.json` found at open, if any.
    pub fn damaged(&self) -> Option<&Damage> {
        self.damaged.as_ref()
    }

    fn check_writable(&self) -> Result<()> {
        match &self.damaged {
            Some(d) => Err(LogError::Damaged {
                topic: self.name.clone(),
                partition: -1,
                file: d.file.clone(),
                position: 0,
                offset: -1,
                reason: d.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().map(|p| p.len() as i32).unwrap_or(0)
    }

    pub fn partition(&self, p: i32) -> Result<Arc<Partition>> {
        let parts = self.partitions.read().map_err(|_| LogError::Closed)?;
        usize::try_from(p)
            .ok()
            .and_then(|i| parts.get(i))
            .cloned()
            .ok_or(LogError::UnknownPartition {
                topic: self.name.clone(),
                partition: p,
                count: parts.len() as i32,
            })
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The explicitly set configuration keys.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.meta
            .read()
            .map(|m| m.config.clone())
            .unwrap_or_default()
    }

    pub fn created_ms(&self) -> i64 {
        self.meta.read().map(|m| m.created_ms).unwrap_or(0)
    }

    /// Set (or with `None`, reset to default) configuration keys.
    pub fn alter_config(&self, changes: &BTreeMap<String, Option<String>>) -> Result<()> {
        self.check_writable()?;
        let mut meta = self.meta.write().map_err(|_| LogError::Closed)?;
        let mut next = meta.clone();
        for (k, v) in changes {
            match v {
                Some(v) => next.config.insert(k.clone(), v.clone()),
                None => next.config.remove(k),
            };
        }
        let parsed = TopicConfig::from_overrides(&next.config)?;
        write_meta(&self.dir, &next)?;
        sync_dir(&self.dir)?;
        *self.config.write().map_err(|_| LogError::Closed)? = parsed;
        *meta = next;
        Ok(())
    }

    /// Grow the topic to `count` partitions (Kafka never shrinks them).
    pub fn create_partitions(&self, count: i32) -> Result<()> {
        self.check_writable()?;
        let mut meta = self.meta.write().map_err(|_| LogError::Closed)?;
        if count <= meta.partitions || count > 10_000 {
            return Err(LogError::InvalidPartitions(count));
        }
        let mut new = Vec::new();
        for p in meta.partitions..count {
            new.push(Arc::new(Partition::create(
                &self.name,
                p,
                &partition_dir(&self.dir, p),
                Arc::clone(&self.config),
                Arc::clone(&self.damage),
            )?));
        }
        sync_dir(&self.dir)?;
        let mut next = meta.clone();
        next.partitions = count;
        // Until this rename lands, the new directories are ignored (and
        // removed) at open: the change commits here.
        write_meta(&self.dir, &next)?;
        sync_dir(&self.dir)?;
        *meta = next;
        self.partitions
            .write()
            .map_err(|_| LogError::Closed)?
            .extend(new);
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
        for p in self.partitions() {
            p.close()?;
        }
        Ok(())
    }
}

/// `topic.json`, checked against the directory it is in.
pub(crate) fn read_meta(path: &Path, dir_name: &str) -> std::result::Result<TopicMeta, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(e.to_string()),
    };
    let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if meta.name != dir_name {
        return Err(format!(
            "names topic {:?} but is in directory {dir_name:?}",
            meta.name
        ));
    }
    if !(1..=10_000).contains(&meta.partitions) {
        return Err(format!("invalid partition count {}", meta.partitions));
    }
    TopicConfig::from_overrides(&meta.config).map_err(|e| e.to_string())?;
    Ok(meta)
}

/// Whether a partition directory holds any record bytes.
/// A topic directory's partition directories (named by their number, as
/// written), and whether each holds any record bytes.
pub(crate) fn partition_dirs(dir: &Path) -> Result<BTreeMap<i32, bool>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Ok(p) = name.parse::<i32>()
            && p >= 0
            && p.to_string() == name
            && entry.path().is_dir()
        {
            found.insert(p, holds_records(&entry.path()));
        }
    }
    Ok(found)
}

pub(crate) fn holds_records(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                e.file_name().to_string_lossy().ends_with(".log")
                    && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Rewrite `topic.json` for a topic opened from its directories (`eddy
/// repair`): `partitions` and `config` as given, fsynced.
pub fn rewrite_meta(
    dir: &Path,
    name: &str,
    partitions: i32,
    config: BTreeMap<String, String>,
) -> Result<()> {
    let meta = TopicMeta {
        name: name.to_string(),
        partitions,
        config,
        created_ms: super::now_ms(),
    };
    write_meta(dir, &meta)?;
    sync_dir(dir)
}

fn write_meta(dir: &Path, meta: &TopicMeta) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| LogError::CorruptMetadata {
        file: dir.join(META),
        reason: e.to_string(),
    })?;
    write_atomic(&dir.join(META), &json)
}
