//! A schema registry: Confluent Schema Registry's model (subjects holding
//! numbered versions of schemas, schemas with global ids, compatibility
//! levels) kept durably in the compacted topic `_schemas` of eddy's own
//! log, in Confluent's record format (JSON keys `{"keytype":"SCHEMA",…}`
//! and `{"keytype":"CONFIG",…}`), so a restart replays it as Confluent's
//! registry replays its topic.
//!
//! The REST API over it is `server/registry.rs`; the Avro format
//! (`format/avro.rs`) asks it for writer schemas by id. Every method here
//! is synchronous and in memory but for writes, which append one record
//! and fsync it before answering (a schema id handed out survives a
//! crash).
//!
//! Compatibility is checked for Avro schemas with apache-avro's schema
//! resolution rules; JSON Schema and Protobuf schemas are stored and served
//! (their ids, versions and subjects work as Confluent's) but not checked.
//!
//! (About 940 lines, 90 of them tests: one model, its durable form and its
//! replay.)

pub mod compat;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogStore, now_ms};

/// The topic the registry keeps its state in (Confluent's default).
pub const TOPIC: &str = "_schemas";

/// A registry error as Confluent reports it: an HTTP status and an
/// `error_code` (`40401` subject not found, `409` incompatible, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(status: u16, code: u32, message: impl Into<String>) -> RegistryError {
        RegistryError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn subject_not_found(subject: &str) -> RegistryError {
        Self::new(404, 40401, format!("Subject '{subject}' not found."))
    }

    fn version_not_found(version: &str, subject: &str) -> RegistryError {
        Self::new(
            404,
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }

    pub fn schema_not_found(what: &str) -> RegistryError {
        Self::new(404, 40403, format!("Schema {what} not found"))
    }

    pub fn invalid_schema(why: impl std::fmt::Display) -> RegistryError {
        Self::new(422, 42201, format!("Invalid schema: {why}"))
    }

    pub fn invalid_version(v: &str) -> RegistryError {
        Self::new(
            422,
            42202,
            format!(
                "The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub fn invalid_level(level: &str) -> RegistryError {
        Self::new(
            422,
            42203,
            format!(
                "Invalid compatibility level: {level}. Valid values are NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE and FULL_TRANSITIVE"
            ),
        )
    }

    pub fn store(e: impl std::fmt::Display) -> RegistryError {
        Self::new(500, 50001, format!("Error in the backend data store: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A schema's language (`schemaType`; AVRO when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    #[default]
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn parse(s: &str) -> Option<SchemaType> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }

    fn is_avro(&self) -> bool {
        *self == SchemaType::Avro
    }
}

/// A reference from a schema to a named type in another subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A compatibility level (Confluent's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    Forward,
    Full,
    BackwardTransitive,
    ForwardTransitive,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
            .map_err(|_| RegistryError::invalid_level(s))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::Forward => "FORWARD",
            Level::Full => "FULL",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(&self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

/// A schema as registered: its text, language and references; an Avro
/// schema also parsed (for the format and compatibility checks).
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u32,
    pub text: String,
    pub kind: SchemaType,
    pub references: Vec<Reference>,
    pub avro: Option<Arc<apache_avro::Schema>>,
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct Version {
    pub subject: String,
    pub version: i32,
    pub id: u32,
    pub deleted: bool,
}

/// A schema as a client sends it.
#[derive(Debug, Clone, Default)]
pub struct NewSchema {
    pub text: String,
    pub kind: SchemaType,
    pub references: Vec<Reference>,
}

#[derive(Default)]
struct State {
    schemas: BTreeMap<u32, Stored>,
    /// (language, normalised text, references) → id: a schema registered
    /// again, under any subject, keeps its id.
    ids: HashMap<(SchemaType, String, Vec<Reference>), u32>,
    /// subject → its versions, ascending (soft-deleted ones kept).
    subjects: BTreeMap<String, Vec<Version>>,
    global: Option<Level>,
    levels: BTreeMap<String, Level>,
    /// The largest id ever handed out, as recorded before a permanent
    /// delete: once compaction has removed a deleted version's record,
    /// its id is still not handed out again.
    floor: u32,
}

impl State {
    /// The id a new schema gets: one past every id known or recorded.
    fn next_id(&self) -> u32 {
        self.schemas
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.floor)
            .saturating_add(1)
    }
}

/// The record key of a subject version or a config (Confluent's
/// `_schemas` keys; field order fixed, so a key's text names one entity).
#[derive(Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
enum Key {
    Schema {
        subject: String,
        version: i32,
        magic: i32,
    },
    Config {
        subject: Option<String>,
        magic: i32,
    },
    /// eddy's own: the largest id handed out (`State::floor`).
    IdFloor {
        magic: i32,
    },
    #[serde(other)]
    Other,
}

#[derive(Serialize, Deserialize)]
struct SchemaValue {
    subject: String,
    version: i32,
    id: u32,
    schema: String,
    #[serde(rename = "schemaType", default, skip_serializing_if = "is_avro")]
    kind: SchemaType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    references: Vec<Reference>,
    #[serde(default)]
    deleted: bool,
}

fn is_avro(t: &SchemaType) -> bool {
    t.is_avro()
}

#[derive(Serialize, Deserialize)]
struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    level: Level,
}

/// The schema registry over one log.
pub struct Registry {
    log: Arc<dyn LogStore>,
    state: RwLock<State>,
    /// One write at a time: an id or version is chosen and written before
    /// the next is chosen.
    write: Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The default level when none is set (Confluent's).
pub const DEFAULT_LEVEL: Level = Level::Backward;

impl Registry {
    /// Open the registry over `log`: create `_schemas` if missing and
    /// replay it. A record that does not parse is skipped with a warning
    /// (another writer's key type, say), never stopping the start.
    pub fn open(log: Arc<dyn LogStore>) -> Result<Registry> {
        let mut state = State::default();
        crate::log::replay_keyed(&*log, TOPIC, |key, _offset, value| {
            if let Err(e) = state.apply(&key, value) {
                tracing::warn!(key, error = %e, "skipping a _schemas record");
            }
        })
        .map_err(RegistryError::store)?;
        Ok(Registry {
            log,
            state: RwLock::new(state),
            write: Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Append a record (fsynced) and apply it.
    fn put(&self, key: &Key, value: Option<Vec<u8>>) -> Result<()> {
        let key = serde_json::to_string(key).map_err(RegistryError::store)?;
        let rec = NewRecord {
            key: Some(Bytes::from(key.clone().into_bytes())),
            value: value.clone().map(Bytes::from),
            timestamp: now_ms(),
            headers: vec![],
        };
        let encoded = batch::encode(&[rec]).map_err(RegistryError::store)?;
        self.log
            .append(TOPIC, 0, encoded, Durability::Fsync)
            .map_err(RegistryError::store)?;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&key, value.as_deref())
            .map_err(RegistryError::store)
    }

    fn put_version(&self, v: &Version, stored: &Stored) -> Result<()> {
        let value = SchemaValue {
            subject: v.subject.clone(),
            version: v.version,
            id: v.id,
            schema: stored.text.clone(),
            kind: stored.kind,
            references: stored.references.clone(),
            deleted: v.deleted,
        };
        self.put(
            &Key::Schema {
                subject: v.subject.clone(),
                version: v.version,
                magic: 1,
            },
            Some(serde_json::to_vec(&value).map_err(RegistryError::store)?),
        )
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Option<Stored> {
        self.read().schemas.get(&id).cloned()
    }

    /// The parsed Avro schema with this id (the Avro decoder's lookup).
    pub fn avro(&self, id: u32) -> Option<Arc<apache_avro::Schema>> {
        self.read().schemas.get(&id).and_then(|s| s.avro.clone())
    }

    /// Subjects with a live version (`deleted`: soft-deleted ones too).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.read()
            .subjects
            .iter()
            .filter(|(_, vs)| vs.iter().any(|v| deleted || !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// A subject's version numbers.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>> {
        let state = self.read();
        let out: Vec<i32> = state
            .subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|v| deleted || !v.deleted)
                    .map(|v| v.version)
                    .collect()
            })
            .unwrap_or_default();
        if out.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(out)
    }

    /// A subject's version by number or `latest` (`-1`).
    pub fn version(&self, subject: &str, version: &str, deleted: bool) -> Result<Version> {
        let state = self.read();
        let vs = state
            .subjects
            .get(subject)
            .filter(|vs| vs.iter().any(|v| deleted || !v.deleted))
            .ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let live = |v: &&Version| deleted || !v.deleted;
        let found = match version {
            "latest" | "-1" => vs.iter().rev().find(live),
            n => {
                let n: i32 = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| RegistryError::invalid_version(n))?;
                vs.iter().find(|v| v.version == n).filter(live)
            }
        };
        found
            .cloned()
            .ok_or_else(|| RegistryError::version_not_found(version, subject))
    }

    /// Every subject's versions (soft-deleted ones too), with their
    /// schemas, by subject and version.
    pub fn all_versions(&self) -> Vec<(Version, Stored)> {
        let state = self.read();
        state
            .subjects
            .values()
            .flatten()
            .filter_map(|v| state.schemas.get(&v.id).map(|s| (v.clone(), s.clone())))
            .collect()
    }

    /// The versions (subject, version) that hold schema `id`.
    pub fn versions_of(&self, id: u32) -> Result<Vec<(String, i32)>> {
        let state = self.read();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::schema_not_found(&id.to_string()));
        }
        Ok(state
            .subjects
            .values()
            .flatten()
            .filter(|v| v.id == id && !v.deleted)
            .map(|v| (v.subject.clone(), v.version))
            .collect())
    }

    /// Parse a schema a client sends (refused with 42201 when invalid).
    fn parse(&self, new: &NewSchema) -> Result<(String, Option<Arc<apache_avro::Schema>>)> {
        match new.kind {
            SchemaType::Avro => {
                let referenced = self.referenced(&new.references)?;
                let schema = if referenced.is_empty() {
                    apache_avro::Schema::parse_str(&new.text)
                } else {
                    let texts: Vec<&str> = referenced
                        .iter()
                        .map(String::as_str)
                        .chain([new.text.as_str()])
                        .collect();
                    apache_avro::Schema::parse_list(&texts)
                        .map(|mut all| all.pop().unwrap_or(apache_avro::Schema::Null))
                }
                .map_err(RegistryError::invalid_schema)?;
                Ok((schema.canonical_form(), Some(Arc::new(schema))))
            }
            SchemaType::Json => {
                let v: serde_json::Value =
                    serde_json::from_str(&new.text).map_err(RegistryError::invalid_schema)?;
                Ok((v.to_string(), None))
            }
            SchemaType::Protobuf => Ok((new.text.trim().to_string(), None)),
        }
    }

    /// The texts of the schemas `refs` name (each must exist).
    fn referenced(&self, refs: &[Reference]) -> Result<Vec<String>> {
        refs.iter()
            .map(|r| {
                let v = self.version(&r.subject, &r.version.to_string(), false)?;
                self.schema(v.id)
                    .map(|s| s.text)
                    .ok_or_else(|| RegistryError::schema_not_found(&v.id.to_string()))
            })
            .collect()
    }

    /// The version of `subject` holding this schema, if any (the lookup
    /// `POST /subjects/{subject}`).
    pub fn lookup(&self, subject: &str, new: &NewSchema, deleted: bool) -> Result<Version> {
        let (normal, _) = self.parse(new)?;
        let state = self.read();
        let vs = state
            .subjects
            .get(subject)
            .filter(|vs| vs.iter().any(|v| deleted || !v.deleted))
            .ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let id = state
            .ids
            .get(&(new.kind, normal, new.references.clone()))
            .copied();
        vs.iter()
            .rev()
            .find(|v| Some(v.id) == id && (deleted || !v.deleted))
            .cloned()
            .ok_or_else(|| RegistryError::schema_not_found("(the one given)"))
    }

    /// The level a subject is checked at.
    pub fn level(&self, subject: Option<&str>) -> Level {
        let state = self.read();
        subject
            .and_then(|s| state.levels.get(s).copied())
            .or(state.global)
            .unwrap_or(DEFAULT_LEVEL)
    }

    /// A subject's own level (`None`: it follows the global one).
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.read().levels.get(subject).copied()
    }

    /// Set the global level (`subject` None) or a subject's.
    pub fn set_level(&self, subject: Option<&str>, level: Level) -> Result<()> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let value = serde_json::to_vec(&ConfigValue { level }).map_err(RegistryError::store)?;
        self.put(
            &Key::Config {
                subject: subject.map(str::to_string),
                magic: 0,
            },
            Some(value),
        )
    }

    /// Remove a subject's own level; returns what it was.
    pub fn delete_level(&self, subject: &str) -> Result<Level> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let was = self.subject_level(subject).ok_or_else(|| {
            RegistryError::new(
                404,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            )
        })?;
        self.put(
            &Key::Config {
                subject: Some(subject.to_string()),
                magic: 0,
            },
            None,
        )?;
        Ok(was)
    }

    /// Whether `new` is compatible with `subject`'s versions at its level
    /// (against `version` only when given): the reasons it is not.
    pub fn check(
        &self,
        subject: &str,
        new: &NewSchema,
        version: Option<&str>,
    ) -> Result<Vec<String>> {
        let (_, avro) = self.parse(new)?;
        let level = self.level(Some(subject));
        let against: Vec<Arc<apache_avro::Schema>> = match version {
            Some(v) => {
                let v = self.version(subject, v, false)?;
                self.avro(v.id).into_iter().collect()
            }
            None => self.live_avro(subject, level),
        };
        Ok(match (&avro, new.kind) {
            (Some(schema), SchemaType::Avro) => compat::check(level, schema, &against),
            _ => vec![],
        })
    }

    /// The Avro schemas a new version of `subject` is checked against at
    /// `level`: the latest live one, or all live ones when transitive.
    fn live_avro(&self, subject: &str, level: Level) -> Vec<Arc<apache_avro::Schema>> {
        let state = self.read();
        let live: Vec<&Version> = state
            .subjects
            .get(subject)
            .map(|vs| vs.iter().filter(|v| !v.deleted).collect())
            .unwrap_or_default();
        let ids: Vec<u32> = match level.transitive() {
            true => live.iter().map(|v| v.id).collect(),
            false => live.last().map(|v| v.id).into_iter().collect(),
        };
        ids.iter()
            .filter_map(|id| state.schemas.get(id).and_then(|s| s.avro.clone()))
            .collect()
    }

    /// Register `new` under `subject`: its id (the same id when the schema
    /// is known, under this subject or another). A schema the subject's
    /// level refuses is 409.
    pub fn register(&self, subject: &str, new: &NewSchema) -> Result<u32> {
        if subject.is_empty() || subject.chars().any(char::is_control) {
            return Err(RegistryError::new(
                422,
                42208,
                format!("The specified subject '{subject}' is not valid."),
            ));
        }
        let (normal, avro) = self.parse(new)?;
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let (known, next_version) = {
            let state = self.read();
            let known = state
                .ids
                .get(&(new.kind, normal.clone(), new.references.clone()))
                .copied();
            let vs = state.subjects.get(subject);
            if let (Some(id), Some(vs)) = (known, vs)
                && vs.iter().any(|v| v.id == id && !v.deleted)
            {
                return Ok(id);
            }
            let next = vs
                .and_then(|vs| vs.last())
                .map_or(1, |v| v.version.saturating_add(1));
            (known, next)
        };
        if let Some(schema) = &avro {
            let level = self.level(Some(subject));
            let against = self.live_avro(subject, level);
            let problems = compat::check(level, schema, &against);
            if !problems.is_empty() {
                return Err(RegistryError::new(
                    409,
                    409,
                    format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                        problems.join(", ")
                    ),
                ));
            }
        }
        let id = known.unwrap_or_else(|| self.read().next_id());
        let stored = Stored {
            id,
            text: new.text.clone(),
            kind: new.kind,
            references: new.references.clone(),
            avro,
        };
        let version = Version {
            subject: subject.to_string(),
            version: next_version,
            id,
            deleted: false,
        };
        self.put_version(&version, &stored)?;
        Ok(id)
    }

    /// Delete a subject's versions (`version` None: all of them). Soft
    /// first: a permanent delete takes versions already soft-deleted
    /// (40405 otherwise), as Confluent's does. Returns the versions.
    pub fn delete(
        &self,
        subject: &str,
        version: Option<&str>,
        permanent: bool,
    ) -> Result<Vec<i32>> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let targets: Vec<Version> = match version {
            Some(v) => vec![self.version(subject, v, permanent)?],
            None => {
                let state = self.read();
                let vs = state
                    .subjects
                    .get(subject)
                    .filter(|vs| !vs.is_empty())
                    .ok_or_else(|| RegistryError::subject_not_found(subject))?;
                if !permanent && vs.iter().all(|v| v.deleted) {
                    return Err(RegistryError::new(
                        404,
                        40404,
                        format!(
                            "Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
                        ),
                    ));
                }
                vs.iter()
                    .filter(|v| permanent || !v.deleted)
                    .cloned()
                    .collect()
            }
        };
        for t in &targets {
            if permanent {
                if !t.deleted {
                    return Err(RegistryError::new(
                        404,
                        40405,
                        format!(
                            "Subject '{subject}' Version {} was not deleted first before being permanently deleted",
                            t.version
                        ),
                    ));
                }
            } else if t.deleted {
                return Err(RegistryError::new(
                    404,
                    40406,
                    format!(
                        "Subject '{subject}' Version {} was soft deleted. Set permanent=true to delete permanently",
                        t.version
                    ),
                ));
            }
        }
        if permanent && !targets.is_empty() {
            // Record the largest id before the versions' records can be
            // compacted away (Confluent's registry keeps a counter).
            let largest = self.read().next_id().saturating_sub(1);
            let value = serde_json::to_vec(&serde_json::json!({ "id": largest }))
                .map_err(RegistryError::store)?;
            self.put(&Key::IdFloor { magic: 0 }, Some(value))?;
        }
        for t in &targets {
            let key = Key::Schema {
                subject: subject.to_string(),
                version: t.version,
                magic: 1,
            };
            if permanent {
                self.put(&key, None)?;
            } else {
                let stored = self
                    .schema(t.id)
                    .ok_or_else(|| RegistryError::schema_not_found(&t.id.to_string()))?;
                let deleted = Version {
                    deleted: true,
                    ..t.clone()
                };
                self.put_version(&deleted, &stored)?;
            }
        }
        if version.is_none() && permanent {
            // Its level goes with it.
            if self.subject_level(subject).is_some() {
                self.put(
                    &Key::Config {
                        subject: Some(subject.to_string()),
                        magic: 0,
                    },
                    None,
                )?;
            }
        }
        Ok(targets.iter().map(|t| t.version).collect())
    }
}

impl State {
    /// Apply one `_schemas` record.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) -> std::result::Result<(), String> {
        let key: Key = serde_json::from_str(key).map_err(|e| e.to_string())?;
        match key {
            Key::Schema {
                subject, version, ..
            } => {
                let Some(value) = value else {
                    // Permanently deleted.
                    if let Some(vs) = self.subjects.get_mut(&subject) {
                        vs.retain(|v| v.version != version);
                        if vs.is_empty() {
                            self.subjects.remove(&subject);
                        }
                    }
                    return Ok(());
                };
                let v: SchemaValue = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                if !self.schemas.contains_key(&v.id) {
                    let avro = match v.kind {
                        SchemaType::Avro => {
                            Some(Arc::new(self.parse_avro(&v.schema, &v.references)?))
                        }
                        _ => None,
                    };
                    let normal = match &avro {
                        Some(a) => a.canonical_form(),
                        None if v.kind == SchemaType::Json => {
                            serde_json::from_str::<serde_json::Value>(&v.schema)
                                .map(|j| j.to_string())
                                .unwrap_or_else(|_| v.schema.clone())
                        }
                        None => v.schema.trim().to_string(),
                    };
                    self.ids
                        .insert((v.kind, normal, v.references.clone()), v.id);
                    self.schemas.insert(
                        v.id,
                        Stored {
                            id: v.id,
                            text: v.schema.clone(),
                            kind: v.kind,
                            references: v.references.clone(),
                            avro,
                        },
                    );
                }
                let vs = self.subjects.entry(v.subject.clone()).or_default();
                let version = Version {
                    subject: v.subject,
                    version: v.version,
                    id: v.id,
                    deleted: v.deleted,
                };
                match vs.binary_search_by_key(&version.version, |x| x.version) {
                    Ok(i) => vs[i] = version,
                    Err(i) => vs.insert(i, version),
                }
            }
            Key::Config { subject, .. } => {
                let level = value
                    .map(|v| serde_json::from_slice::<ConfigValue>(v).map(|c| c.level))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                match (subject, level) {
                    (None, l) => self.global = l,
                    (Some(s), Some(l)) => {
                        self.levels.insert(s, l);
                    }
                    (Some(s), None) => {
                        self.levels.remove(&s);
                    }
                }
            }
            Key::IdFloor { .. } => {
                if let Some(v) = value {
                    let v: serde_json::Value =
                        serde_json::from_slice(v).map_err(|e| e.to_string())?;
                    let id = v.get("id").and_then(serde_json::Value::as_u64).unwrap_or(0);
                    self.floor = self.floor.max(u32::try_from(id).unwrap_or(u32::MAX));
                }
            }
            Key::Other => {}
        }
        Ok(())
    }

    fn parse_avro(
        &self,
        text: &str,
        refs: &[Reference],
    ) -> std::result::Result<apache_avro::Schema, String> {
        if refs.is_empty() {
            return apache_avro::Schema::parse_str(text).map_err(|e| e.to_string());
        }
        let mut texts = Vec::new();
        for r in refs {
            let id = self
                .subjects
                .get(&r.subject)
                .and_then(|vs| vs.iter().find(|v| v.version == r.version))
                .map(|v| v.id)
                .ok_or_else(|| format!("reference {} not found", r.subject))?;
            texts.push(
                self.schemas
                    .get(&id)
                    .map(|s| s.text.as_str())
                    .ok_or_else(|| format!("schema {id} not found"))?,
            );
        }
        texts.push(text);
        apache_avro::Schema::parse_list(&texts)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "no schema".to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn open(dir: &std::path::Path) -> (Arc<crate::log::Log>, Registry) {
        let log = crate::log::Log::open(
            dir,
            crate::log::LogOptions {
                cleaner_interval: None,
            },
        )
        .unwrap();
        let store: Arc<dyn LogStore> = Arc::clone(&log) as Arc<dyn LogStore>;
        (log, Registry::open(store).unwrap())
    }

    fn avro(text: &str) -> NewSchema {
        NewSchema {
            text: text.into(),
            ..Default::default()
        }
    }

    const V1: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#;
    const V2: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    const BAD: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"}]}"#;

    #[test]
    fn a_recorded_floor_keeps_ids_from_coming_back() {
        // As after compaction: the floor record left, the versions gone.
        let mut state = State::default();
        state
            .apply(r#"{"keytype":"ID_FLOOR","magic":0}"#, Some(br#"{"id":7}"#))
            .unwrap();
        assert_eq!(state.next_id(), 8);
        assert_eq!(State::default().next_id(), 1);
    }

    #[test]
    fn state_survives_a_restart_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, r) = open(dir.path());
            assert_eq!(r.register("s-value", &avro(V1)).unwrap(), 1);
            // The same schema: the same id, under any subject; written
            // differently (whitespace) it is still the same schema.
            assert_eq!(r.register("s-value", &avro(V1)).unwrap(), 1);
            let spaced = V1.replace(',', " , ");
            assert_eq!(r.register("t-value", &avro(&spaced)).unwrap(), 1);
            assert_eq!(r.register("s-value", &avro(V2)).unwrap(), 2);
            let e = r.register("s-value", &avro(BAD)).unwrap_err();
            assert_eq!((e.status, e.code), (409, 409));
            let e = r.register("s-value", &avro("{not json")).unwrap_err();
            assert_eq!(e.code, 42201);
            r.set_level(Some("t-value"), Level::None).unwrap();
            assert_eq!(r.register("t-value", &avro(BAD)).unwrap(), 3);
            // Soft, then permanent delete of t-value.
            assert_eq!(r.delete("t-value", None, true).unwrap_err().code, 40405);
            assert_eq!(r.delete("t-value", None, false).unwrap(), vec![1, 2]);
            assert_eq!(r.delete("t-value", None, true).unwrap(), vec![1, 2]);
            log.close().unwrap();
        }
        let (_log, r) = open(dir.path());
        assert_eq!(r.subjects(true), vec!["s-value".to_string()]);
        assert_eq!(r.versions("s-value", false).unwrap(), vec![1, 2]);
        assert_eq!(r.version("s-value", "latest", false).unwrap().id, 2);
        assert!(r.schema(3).is_some(), "a schema outlives its subject");
        assert_eq!(r.subject_level("t-value"), None);
        assert_eq!(r.versions("t-value", true).unwrap_err().code, 40401);
        // The next new schema takes a new id.
        let v3 = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"c","type":"long","default":0}]}"#;
        assert_eq!(r.register("s-value", &avro(v3)).unwrap(), 4);
        assert_eq!(r.version("s-value", "3", false).unwrap().id, 4);
    }

    #[test]
    fn compatibility_levels_apply_to_registration() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, r) = open(dir.path());
        r.register("s", &avro(V1)).unwrap();
        // FORWARD: old readers must read the new schema's data; adding a
        // field without a default is fine, changing a type is not.
        r.set_level(Some("s"), Level::Forward).unwrap();
        let added = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"z","type":"int"}]}"#;
        assert!(r.check("s", &avro(added), None).unwrap().is_empty());
        assert!(!r.check("s", &avro(BAD), None).unwrap().is_empty());
        r.register("s", &avro(added)).unwrap();
        // Transitive levels check every live version.
        r.set_level(Some("s"), Level::BackwardTransitive).unwrap();
        let dropped_z = V1;
        // Reads both v1 (no z) and v2: V1 itself is compatible.
        assert!(r.check("s", &avro(dropped_z), None).unwrap().is_empty());
        // JSON Schema and Protobuf are stored, not checked.
        let json = NewSchema {
            text: r#"{"type":"object"}"#.into(),
            kind: SchemaType::Json,
            references: vec![],
        };
        let id = r.register("j", &json).unwrap();
        assert_eq!(r.schema(id).unwrap().kind, SchemaType::Json);
    }
}
