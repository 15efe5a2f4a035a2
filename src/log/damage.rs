//! Damage found in the log's files, and what was done about it.
//!
//! Recovery never refuses to open a data directory because of what a file
//! holds. What it finds is recorded here (and logged with `warn!`), one entry
//! per damaged file and position, so an operator can see it in
//! `eddy_catalog.log_damage` or with `eddy verify`, and act with
//! `eddy repair`:
//!
//! | damage                                          | action      |
//! |-------------------------------------------------|-------------|
//! | invalid bytes at the end of a partition's last segment, nothing valid after them | [`Action::Truncated`] at open, as Kafka's recovery does |
//! | an invalid batch with valid data after it (mid-segment, or in an older segment) | [`Action::Fenced`]: the partition serves what precedes the damage and refuses appends until `eddy repair` cuts it |
//! | a damaged `topic.json`                          | [`Action::Fenced`]: the topic opens from its partition directories, with default config, read-only and never cleaned |
//! | damage a read runs into in a segment open trusted (not rescanned) | [`Action::Fenced`], from then on |
//! | index, time index, producer snapshot            | [`Action::Rebuilt`] from the log |
//! | records missing between segments or below the recovery point, a stray file | [`Action::Reported`] |
//!
//! Nothing here is ever deleted by recovery except a tail that holds no valid
//! batch (as a crash leaves it); fenced bytes stay on disk for salvage.

use std::path::PathBuf;
use std::sync::Mutex;

/// What recovery did about a piece of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The invalid tail of the last segment was cut (it held no valid batch).
    Truncated,
    /// The partition (or every partition of the topic) serves only what
    /// precedes the damage and refuses appends until `eddy repair`.
    Fenced,
    /// A derived file (index, time index, producer snapshot) was rebuilt
    /// from the log.
    Rebuilt,
    /// Found and reported; nothing to cut (records are missing between
    /// segments or below the recovery point, a file is not the log's).
    Reported,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Truncated => "truncated",
            Action::Fenced => "fenced",
            Action::Rebuilt => "rebuilt",
            Action::Reported => "reported",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub topic: String,
    /// `None` for damage to the topic itself (`topic.json`).
    pub partition: Option<i32>,
    pub file: PathBuf,
    /// Byte position of the damage in `file` (0 for a whole-file problem).
    pub position: u64,
    /// The offset the damaged batch should have had (the partition serves
    /// everything below it), or -1 when it does not concern an offset.
    pub offset: i64,
    pub reason: String,
    pub action: Action,
    /// Bytes cut (truncated) or fenced off (from the damage to the end of
    /// the partition's files); 0 otherwise.
    pub bytes: u64,
    /// Wall-clock ms when it was found.
    pub detected_ms: i64,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{}-{p}", self.topic)?,
            None => write!(f, "{}", self.topic)?,
        }
        write!(
            f,
            ": {} {} at byte {}",
            self.action,
            self.file.display(),
            self.position
        )?;
        if self.offset >= 0 {
            write!(f, " (offset {})", self.offset)?;
        }
        if self.bytes > 0 {
            write!(f, ", {} bytes", self.bytes)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The damage found since the log was opened, shared by its topics and
/// partitions. Entries are unique by (file, position, action): a read that
/// keeps hitting the same bad batch reports it once.
#[derive(Debug, Default)]
pub struct DamageLog {
    entries: Mutex<Vec<Damage>>,
}

impl DamageLog {
    /// Record `d` (and log it) unless the same damage is already known.
    pub fn record(&self, d: Damage) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries
            .iter()
            .any(|e| e.file == d.file && e.position == d.position && e.action == d.action)
        {
            return;
        }
        tracing::warn!(
            topic = %d.topic,
            partition = d.partition.unwrap_or(-1),
            file = %d.file.display(),
            position = d.position,
            offset = d.offset,
            action = %d.action,
            bytes = d.bytes,
            reason = %d.reason,
            "damaged log file"
        );
        entries.push(d);
    }

    pub fn snapshot(&self) -> Vec<Damage> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damage(position: u64, action: Action) -> Damage {
        Damage {
            topic: "t".into(),
            partition: Some(0),
            file: PathBuf::from("t/0/00000000000000000000.log"),
            position,
            offset: 7,
            reason: "CRC-32C mismatch".into(),
            action,
            bytes: 0,
            detected_ms: 1,
        }
    }

    #[test]
    fn the_same_damage_is_recorded_once() {
        let log = DamageLog::default();
        log.record(damage(100, Action::Reported));
        log.record(damage(100, Action::Reported));
        log.record(damage(100, Action::Fenced));
        log.record(damage(200, Action::Reported));
        let got = log.snapshot();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1].to_string(),
            "t-0: fenced t/0/00000000000000000000.log at byte 100 (offset 7): CRC-32C mismatch"
        );
    }
}
