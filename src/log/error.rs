//! Errors of the log layer. Each variant names the object it concerns (topic,
//! partition, file, offset) so that an operator can act on it without reading
//! code. Kafka-level outcomes (duplicate sequence, fenced epoch, out of range)
//! are variants too: the Kafka protocol layer maps them to error codes.

use std::path::PathBuf;

use super::batch::BatchError;

/// Everything that can go wrong in `log/`.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation on a file or directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the data directory's lock file.
    #[error(
        "data directory {path} is locked by another eddy process (lock file {path}/.lock); stop it or use another --data-dir"
    )]
    Locked { path: PathBuf },

    /// A file failed validation somewhere other than a torn tail. Recovery
    /// never skips such data silently.
    #[error("corrupt log file {file} at byte {position} (expected offset {offset}): {reason}")]
    Corrupt {
        file: PathBuf,
        position: u64,
        offset: i64,
        reason: String,
    },

    /// A metadata file (topic config, snapshot, checkpoint) did not parse.
    #[error("corrupt metadata file {file}: {reason}")]
    CorruptMetadata { file: PathBuf, reason: String },

    /// An external Kafka cluster (a connection's brokers) refused or did
    /// not answer.
    #[error("external Kafka cluster {0}")]
    Upstream(String),

    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: i32,
    },

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },

    #[error("invalid partition count {0}: must be between 1 and 10000")]
    InvalidPartitions(i32),

    #[error("invalid value {value:?} for topic config {key:?}: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: String,
    },

    #[error("unknown topic config {0:?}")]
    UnknownConfig(String),

    /// The bytes offered to `append` are not a valid RecordBatch v2 sequence.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    /// Compacted topics need a key on every record (as in Kafka).
    #[error("compacted topic {topic:?} requires a key on every record")]
    MissingKey { topic: String },

    #[error("batch of {size} bytes exceeds max.message.bytes {max} of topic {topic:?}")]
    BatchTooLarge {
        topic: String,
        size: usize,
        max: i64,
    },

    #[error(
        "offset {offset} is out of range for {topic}-{partition} (log start {log_start}, log end {log_end})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        log_start: i64,
        log_end: i64,
    },

    #[error(
        "out of order sequence for producer {producer_id} on {topic}-{partition}: got {got}, expected {expected}"
    )]
    OutOfOrderSequence {
        topic: String,
        partition: i32,
        producer_id: i64,
        got: i32,
        expected: i32,
    },

    #[error(
        "producer {producer_id} epoch {epoch} is fenced on {topic}-{partition} by epoch {current}"
    )]
    InvalidProducerEpoch {
        topic: String,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        current: i16,
    },

    /// An earlier fsync failed. After a failed fsync the kernel may have
    /// dropped dirty pages, so nothing written since can be trusted to be on
    /// disk; the partition refuses writes until eddy restarts and recovers
    /// from what the disk really holds (PostgreSQL's and fjall's rule).
    #[error("{topic}-{partition} is poisoned by a failed fsync; restart eddy to recover")]
    Poisoned { topic: String, partition: i32 },

    /// Recovery found damage with valid data after it (or a damaged
    /// `topic.json`): the partition serves the records before the damage
    /// and refuses appends, so nothing is written over bytes an operator
    /// may want to salvage, until `eddy repair` cuts the damage.
    #[error(
        "{topic}-{partition} is read-only after damage in {file} at byte {position} (offset {offset}): {reason}; stop eddy and run `eddy repair` to cut it"
    )]
    Damaged {
        topic: String,
        partition: i32,
        file: PathBuf,
        position: u64,
        offset: i64,
        reason: String,
    },

    #[error("the log is closed")]
    Closed,
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| LogError::Io {
            path: path.into(),
            source,
        })
    }
}
