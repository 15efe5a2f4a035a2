//! Per-topic configuration, with Kafka's names, meanings and defaults.
//!
//! Only keys eddy acts on are accepted; an unknown key is an error rather
//! than a silently ignored setting. Values are kept as given (strings) for
//! DescribeConfigs and parsed into [`TopicConfig`].

use std::collections::BTreeMap;

use super::error::{LogError, Result};

/// How old data leaves a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampKind {
    CreateTime,
    LogAppendTime,
}

/// Parsed topic configuration. `-1` means "unlimited" where Kafka says so.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `retention.ms`: closed segments whose newest record is older are deleted.
    pub retention_ms: i64,
    /// `retention.bytes`: per partition; oldest closed segments go first.
    pub retention_bytes: i64,
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: i64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: i64,
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact when dirty bytes / total ≥ this.
    pub min_cleanable_dirty_ratio: f64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: i64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampKind,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: i64,
    /// `flush.ms`: fsync the active segment at least this often (default:
    /// never on a timer, as in Kafka; acks=all fsyncs anyway).
    pub flush_ms: i64,
}

/// Every key eddy accepts, with Kafka's default, in DescribeConfigs order.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("delete.retention.ms", "86400000"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
];

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig::from_overrides(&BTreeMap::new()).expect("the built-in defaults are valid")
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> LogError {
    LogError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn int(key: &str, value: &str, min: i64) -> Result<i64> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not an integer"))?;
    if v < min {
        return Err(invalid(key, value, &format!("must be at least {min}")));
    }
    Ok(v)
}

impl TopicConfig {
    /// Validate a set of overrides (keys not given take the defaults).
    pub fn from_overrides(overrides: &BTreeMap<String, String>) -> Result<Self> {
        for key in overrides.keys() {
            if !DEFAULTS.iter().any(|(k, _)| k == key) {
                return Err(LogError::UnknownConfig(key.clone()));
            }
        }
        let get = |key: &str| -> String {
            overrides.get(key).cloned().unwrap_or_else(|| {
                DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            })
        };
        let policy_s = get("cleanup.policy");
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in policy_s.split(',') {
            match part.trim().to_ascii_lowercase().as_str() {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => {
                    return Err(invalid(
                        "cleanup.policy",
                        &policy_s,
                        "expected delete, compact or compact,delete",
                    ));
                }
            }
        }
        let ratio_s = get("min.cleanable.dirty.ratio");
        let ratio: f64 = ratio_s
            .trim()
            .parse()
            .map_err(|_| invalid("min.cleanable.dirty.ratio", &ratio_s, "not a number"))?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid(
                "min.cleanable.dirty.ratio",
                &ratio_s,
                "must be between 0 and 1",
            ));
        }
        let ts_s = get("message.timestamp.type");
        let timestamp_type = match ts_s.as_str() {
            "CreateTime" => TimestampKind::CreateTime,
            "LogAppendTime" => TimestampKind::LogAppendTime,
            _ => {
                return Err(invalid(
                    "message.timestamp.type",
                    &ts_s,
                    "expected CreateTime or LogAppendTime",
                ));
            }
        };
        Ok(TopicConfig {
            retention_ms: int("retention.ms", &get("retention.ms"), -1)?,
            retention_bytes: int("retention.bytes", &get("retention.bytes"), -1)?,
            segment_bytes: int("segment.bytes", &get("segment.bytes"), 1024)?,
            segment_ms: int("segment.ms", &get("segment.ms"), 1)?,
            cleanup_policy: policy,
            delete_retention_ms: int("delete.retention.ms", &get("delete.retention.ms"), 0)?,
            min_cleanable_dirty_ratio: ratio,
            max_message_bytes: int("max.message.bytes", &get("max.message.bytes"), 0)?,
            timestamp_type,
            index_interval_bytes: int("index.interval.bytes", &get("index.interval.bytes"), 0)?,
            flush_ms: int("flush.ms", &get("flush.ms"), 0)?,
        })
    }
}

/// Every key with its effective value and whether it is the default.
pub fn describe(overrides: &BTreeMap<String, String>) -> Vec<(String, String, bool)> {
    DEFAULTS
        .iter()
        .map(|(k, d)| match overrides.get(*k) {
            Some(v) => (k.to_string(), v.clone(), false),
            None => (k.to_string(), d.to_string(), true),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas() {
        let c = TopicConfig::default();
        assert_eq!(c.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: false
            }
        );
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.5);
    }

    #[test]
    fn overrides_and_errors() {
        let mut m = BTreeMap::new();
        m.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        m.insert("retention.ms".to_string(), "1000".to_string());
        let c = TopicConfig::from_overrides(&m).expect("valid");
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.retention_ms, 1000);

        m.insert("retention.ms".to_string(), "soon".to_string());
        assert!(matches!(
            TopicConfig::from_overrides(&m),
            Err(LogError::InvalidConfig { .. })
        ));
        let mut u = BTreeMap::new();
        u.insert("retention.minutes".to_string(), "1".to_string());
        assert!(matches!(
            TopicConfig::from_overrides(&u),
            Err(LogError::UnknownConfig(_))
        ));
    }
}
