//! The catalog: streams, tables and views, persisted as records in the
//! compacted internal topic `__eddy_catalog` (key: object name, value: the
//! object as JSON; a null value drops it) and replayed at start. A
//! half-written entry after a crash is a torn tail of that topic, which the
//! log's recovery truncates; an entry that does not parse is reported and
//! skipped, so one bad entry never makes the database unreadable.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogError, LogStore, now_ms};

pub const TOPIC: &str = "__eddy_catalog";

/// A column as declared: name and the SQL type text it was declared with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Column {
    pub name: String,
    pub sql_type: String,
    /// A stream's `KEY` column (ksqlDB's `id INT KEY`): read from and
    /// written to the record key, not the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    /// A stream's `rowtime` read from this value column instead of the
    /// record timestamp (ksqlDB's `TIMESTAMP = 'col'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_from: Option<String>,
    /// A stream's event-time column with its watermark's delay
    /// (microseconds): RisingWave's `WATERMARK FOR col AS col - INTERVAL …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// On a stream's event-time column: a partition without a new record
    /// for this long (milliseconds) stops holding the watermark back
    /// (Flink's `scan.watermark.idle-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<i64>,
}

/// Record value formats.
pub use crate::format::Format;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Object {
    /// Append-only relation over a topic.
    Stream {
        name: String,
        topic: String,
        format: Format,
        columns: Vec<Column>,
        /// The CREATE statement as written (SHOW CREATE).
        sql: String,
        /// An Avro stream's schema in the registry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avro: Option<AvroSpec>,
        /// Record keys in Avro (`KEY_FORMAT = 'AVRO'`): their schema's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_avro: Option<u32>,
        /// Record keys in `KEY_FORMAT = 'KAFKA'` or `'JSON'` (else text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_format: Option<crate::format::key::KeyFormat>,
    },
    /// Mutable relation backed by a changelog topic.
    Table {
        name: String,
        topic: String,
        columns: Vec<Column>,
        primary_key: Vec<String>,
        sql: String,
    },
    /// A named query, inlined where used.
    View { name: String, sql: String },
    /// A query kept up to date by a dataflow; its state is rebuilt from the
    /// log at start.
    #[serde(rename = "materialized view")]
    MaterializedView {
        name: String,
        query: String,
        sql: String,
        /// Made by a ksqlDB persistent query (`CREATE STREAM|TABLE … AS
        /// SELECT`): dropped as that stream or table, with its sink.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ksql: Option<Ksql>,
        /// How its windows close by event time (a WINDOW clause's GRACE
        /// PERIOD, EMIT FINAL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<crate::dataflow::aggregate::WindowClose>,
        /// A stream-stream join's WITHIN window (its state trimmed by it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<crate::dataflow::join::JoinWindow>,
    },
    /// Changes of a table or materialized view written into a topic.
    Sink {
        name: String,
        from: String,
        topic: String,
        sql: String,
        #[serde(default)]
        envelope: Envelope,
        /// Values (and keys) in Avro with these registered schemas (else
        /// JSON values and text keys).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avro: Option<SinkAvro>,
        /// Keys in `KEY_FORMAT = 'KAFKA'` or `'JSON'` (else text, or Avro).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_format: Option<crate::format::key::KeyFormat>,
    },
    /// An arrangement of a table's or materialized view's rows by
    /// `columns` (`CREATE INDEX`), kept by the dataflow that keeps it.
    Index {
        name: String,
        on: String,
        columns: Vec<String>,
        sql: String,
    },
    /// Materialize's named Kafka connection, which sources and sinks
    /// name: eddy's own log, or an external cluster (`log::routed`).
    Connection {
        name: String,
        broker: String,
        sql: String,
        /// Its brokers are another cluster than this server (their
        /// cluster id is not this server's); absent in catalogs written
        /// before external clusters, whose connections were eddy's own.
        #[serde(default)]
        external: bool,
        /// librdkafka properties for the cluster (`security.protocol`,
        /// `sasl.*`, …).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        properties: BTreeMap<String, String>,
    },
}

/// The registered schema an Avro (or JSON_SR) stream writes with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AvroSpec {
    /// Its id in the schema registry.
    pub id: u32,
    /// The stream's columns came from it: writers' schemas are resolved
    /// to it (Avro's defaults and promotions) before the columns are read.
    #[serde(default)]
    pub resolve: bool,
}

/// The registered schemas an Avro sink writes with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkAvro {
    /// The values' schema id.
    pub value: u32,
    /// The keys' (a keyed sink's key columns; None: keys are text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
}

/// What a ksqlDB persistent query made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ksql {
    /// A table (else a stream).
    pub table: bool,
    /// The sink writing its rows into its topic.
    pub sink: String,
    /// That topic (kept when the query is terminated: `DROP … DELETE
    /// TOPIC` still finds it).
    #[serde(default)]
    pub topic: String,
    /// An `INSERT INTO stream SELECT …` query: the view is the query's
    /// rows, the topic another stream's; terminating it drops the view.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insert: bool,
}

/// How a sink writes a relation's changes into its topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Envelope {
    /// `{"before": …, "after": …}` per change (Materialize's Kafka sinks).
    #[default]
    Debezium,
    /// Each inserted row a record: its `key` columns the record key, the
    /// rest the JSON value (a ksqlDB stream's topic); retractions are
    /// not written.
    Append { key: Vec<String> },
    /// An upsert changelog (a ksqlDB table's topic): the row's `key`
    /// columns the record key, the rest the JSON value; a key whose row
    /// went away a tombstone (null value).
    Upsert { key: Vec<String> },
}

impl Object {
    pub fn name(&self) -> &str {
        match self {
            Object::Stream { name, .. }
            | Object::Table { name, .. }
            | Object::View { name, .. }
            | Object::MaterializedView { name, .. }
            | Object::Sink { name, .. }
            | Object::Index { name, .. }
            | Object::Connection { name, .. } => name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Object::Stream { .. } => "stream",
            Object::Table { .. } => "table",
            Object::View { .. } => "view",
            Object::MaterializedView { .. } => "materialized view",
            Object::Sink { .. } => "sink",
            Object::Index { .. } => "index",
            Object::Connection { .. } => "connection",
        }
    }

    pub fn sql(&self) -> &str {
        match self {
            Object::Stream { sql, .. }
            | Object::Table { sql, .. }
            | Object::View { sql, .. }
            | Object::MaterializedView { sql, .. }
            | Object::Sink { sql, .. }
            | Object::Index { sql, .. }
            | Object::Connection { sql, .. } => sql,
        }
    }
}

/// The catalog in memory, mirrored to its topic.
pub struct Catalog {
    log: Arc<dyn LogStore>,
    objects: BTreeMap<String, Object>,
    /// Each object's version: the offset of its definition in the catalog
    /// topic. Redefining an object (even identically) gives a new one.
    versions: BTreeMap<String, i64>,
}

impl Catalog {
    /// Open (creating the topic if needed) and replay every entry in order.
    pub fn open(log: Arc<dyn LogStore>) -> Result<Catalog, LogError> {
        let mut objects = BTreeMap::new();
        let mut versions = BTreeMap::new();
        crate::log::replay_keyed(&*log, TOPIC, |name, offset, value| match value {
            None => {
                objects.remove(&name);
                versions.remove(&name);
            }
            Some(v) => match serde_json::from_slice::<Object>(v) {
                Ok(o) => {
                    versions.insert(name.clone(), offset);
                    objects.insert(name, o);
                }
                Err(e) => warn!(object = %name, offset, error = %e,
                    "skipping catalog entry that does not parse"),
            },
        })?;
        Ok(Catalog {
            log,
            objects,
            versions,
        })
    }

    /// Write an entry; returns its offset.
    fn write(&self, name: &str, value: Option<Bytes>) -> Result<i64, LogError> {
        let rec = NewRecord {
            key: Some(Bytes::copy_from_slice(name.as_bytes())),
            value,
            timestamp: now_ms(),
            headers: vec![],
        };
        // Durable before the DDL is acknowledged.
        let info = self
            .log
            .append(TOPIC, 0, batch::encode(&[rec])?, Durability::Fsync)?;
        Ok(info.base_offset)
    }

    /// The version of an object's definition (see `versions`).
    pub fn version(&self, name: &str) -> Option<i64> {
        self.versions.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&Object> {
        self.objects.get(name)
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Add or replace an object; returns its new version.
    pub fn insert(&mut self, o: Object) -> Result<i64, LogError> {
        let json = serde_json::to_vec(&o).map_err(|e| LogError::CorruptMetadata {
            file: TOPIC.into(),
            reason: e.to_string(),
        })?;
        let version = self.write(o.name(), Some(Bytes::from(json)))?;
        self.versions.insert(o.name().to_string(), version);
        self.objects.insert(o.name().to_string(), o);
        Ok(version)
    }

    pub fn remove(&mut self, name: &str) -> Result<Option<Object>, LogError> {
        if !self.objects.contains_key(name) {
            return Ok(None);
        }
        self.write(name, None)?;
        self.versions.remove(name);
        Ok(self.objects.remove(name))
    }
}
