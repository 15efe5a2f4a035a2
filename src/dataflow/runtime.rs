//! Running dataflows: tables' states, materialized views, and the ticks
//! that advance them together.
//!
//! (About 1,170 lines: one type, `Dataflows`, and the state its one lock
//! guards; the tick, checkpoint and subscription paths all take that lock
//! and are read together when reasoning about epochs.)
//!
//! A tick reads what is new in every table's changelog (applying it to the
//! table's index), then steps every materialized view in creation order
//! (so a view's inputs have already moved when it steps), applying each
//! view's output to its index, and publishes epoch E with its changes. All
//! of this happens under one lock. A query reads every table and view as
//! of the last epoch published before the query started: its scans (one
//! per relation, at different moments while it is planned) undo the changes
//! of epochs published since, kept for a short while, so two views read in
//! one SELECT never disagree. Writes over pgwire run a tick before they are
//! acknowledged (read-your-writes); a timer runs one every
//! [`TICK_INTERVAL`] for records produced by Kafka clients.
//!
//! A tick reads at most [`MAX_RECORDS_PER_TICK`] records per source; a
//! backfill of a long topic therefore takes several epochs, and the lock is
//! released between them.
//!
//! Checkpoints (`dataflow::checkpoint`): every so often, and at a clean
//! shutdown, the state of every table and view after the last tick is
//! written to one file, after the input records it reflects are fsynced.
//! At start, a relation whose definition (catalog version) and plan are
//! those of its checkpoint entry, and whose inputs were all restored too,
//! takes its state from the file and reads on from the saved offsets; any
//! other is rebuilt from the log, as if created then.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use tracing::warn;

use super::checkpoint::{self, CheckpointFile, Entry, Reader, Writer};
use super::decode_errors::DecodeErrors;
use super::index::{Index, Snapshot};
use super::lower::{Input, Lowering, Resolve, ViewOptions};
use super::source::TopicReader;
use super::temporal::Clock;
use super::{
    DataflowError, Delta, Flow, OperatorStats, RowError, StepContext, apply_errors, nullable,
};
use crate::format::record::Layout;
use crate::log::LogStore;

pub const TICK_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_RECORDS_PER_TICK: usize = 1 << 20;

struct TableState {
    name: String,
    reader: TopicReader,
    index: Index,
    /// Catalog version of its definition (None until it is in the catalog:
    /// not checkpointed).
    version: Option<i64>,
    fingerprint: String,
}

struct ViewState {
    name: String,
    root: Flow,
    index: Index,
    inputs: Vec<String>,
    /// Topics its stream leaves read (fsynced before a checkpoint).
    topics: Vec<String>,
    /// Why it stopped being maintained (a bug: an operator failed or
    /// panicked); SELECT reports it.
    failed: Option<String>,
    /// Its row errors (division by zero, overflow, …) with multiplicity:
    /// while any is left, SELECT reports the first.
    row_errors: BTreeMap<RowError, i64>,
    version: Option<i64>,
    /// The plan it was lowered from.
    fingerprint: String,
}

impl TableState {
    fn save(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.reader.save(&mut w);
        self.index.save(&mut w);
        w.into_bytes()
    }

    fn restore(&mut self, state: &[u8], log: &dyn LogStore) -> Result<(), DataflowError> {
        let mut r = Reader::new(state, log);
        self.reader.restore(&mut r)?;
        self.index.restore(&mut r)?;
        done(&r)
    }
}

impl ViewState {
    fn save(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.root.save(&mut w);
        self.index.save(&mut w);
        w.tag("errors");
        w.u64(self.row_errors.len() as u64);
        for (e, n) in &self.row_errors {
            w.bytes(e.code.as_bytes());
            w.bytes(e.message.as_bytes());
            w.i64(*n);
        }
        w.into_bytes()
    }

    fn restore(&mut self, state: &[u8], log: &dyn LogStore) -> Result<(), DataflowError> {
        let mut r = Reader::new(state, log);
        self.root.restore(&mut r)?;
        self.index.restore(&mut r)?;
        r.tag("errors")?;
        self.row_errors.clear();
        for _ in 0..r.len(24)? {
            let code = RowError::intern(&r.string()?);
            let message = r.string()?;
            let n = r.i64()?;
            self.row_errors.insert(RowError { code, message }, n);
        }
        done(&r)
    }

    /// The error a SELECT of it reports, if any.
    fn error(&self) -> Option<RowError> {
        if let Some(e) = &self.failed {
            return Some(RowError {
                code: "XX000",
                message: format!(
                    "materialized view \"{}\" failed and is not maintained: {e}",
                    self.name
                ),
            });
        }
        self.row_errors.keys().next().map(|e| RowError {
            code: e.code,
            message: format!(
                "materialized view \"{}\" is in an error state: {} ({} input row{} raised errors; retract them to recover)",
                self.name,
                e.message,
                self.row_errors.values().sum::<i64>(),
                if self.row_errors.values().sum::<i64>() == 1 { "" } else { "s" }
            ),
        })
    }
}

fn done(r: &Reader<'_>) -> Result<(), DataflowError> {
    if r.is_done() {
        Ok(())
    } else {
        Err(DataflowError::Checkpoint(
            "state left over: another dataflow".into(),
        ))
    }
}

fn table_fingerprint(topic: &str, layout: &Layout) -> String {
    format!("{topic} keyed={} {:?}", layout.is_keyed(), layout.schema())
}

/// Every table's and view's contents as of one epoch: what queries read,
/// without the state lock. Snapshots share their unchanged parts with the
/// live state and with other versions.
pub struct Version {
    pub epoch: u64,
    pub at: DateTime<Utc>,
    /// Rows the epoch changed (how much older versions may be kept).
    rows: usize,
    relations: HashMap<String, Published>,
}

/// One relation in a [`Version`].
#[derive(Clone)]
pub enum Published {
    Table(Arc<Snapshot>),
    View(Arc<Snapshot>),
    /// A view in an error state: what a SELECT of it reports.
    Failed(RowError),
}

/// Versions are kept this long, and while the epochs after them changed at
/// most [`HISTORY_ROWS`] rows: a query's scans all happen while it is
/// planned, within milliseconds of its start.
const HISTORY_AGE: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
const HISTORY_ROWS: usize = 1 << 20;

#[derive(Default)]
struct State {
    tables: Vec<TableState>,
    views: Vec<ViewState>,
    /// Checkpoint entries not yet claimed by a relation (at start).
    restore: HashMap<String, Entry>,
    /// Relations restored from the checkpoint: a view may be restored only
    /// when all its table and view inputs were.
    restored: HashSet<String>,
    /// Bumped by every change of state (ticks with changes, DDL): a
    /// checkpoint is written only when it moved.
    generation: u64,
    /// What the last checkpoint written (or loaded at start) holds.
    last_checkpoint: Vec<CheckpointRow>,
}

/// One relation in the last checkpoint, for `eddy_catalog.checkpoints`.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub relation: String,
    pub kind: &'static str,
    pub epoch: u64,
    pub written_ms: i64,
    pub bytes: usize,
}

fn checkpoint_rows(file: &CheckpointFile) -> Vec<CheckpointRow> {
    file.entries
        .iter()
        .map(|e| CheckpointRow {
            relation: e.name.clone(),
            kind: match e.kind {
                checkpoint::Kind::Table => "table",
                checkpoint::Kind::View => "materialized view",
            },
            epoch: file.epoch,
            written_ms: file.written_ms,
            bytes: e.state.len(),
        })
        .collect()
}

pub struct Dataflows {
    log: Arc<dyn LogStore>,
    /// Where checkpoints are written.
    state_dir: std::path::PathBuf,
    errors: Arc<DecodeErrors>,
    state: Mutex<State>,
    /// Published versions, oldest first: reads take one without the state
    /// lock (written only under it).
    versions: RwLock<VecDeque<Arc<Version>>>,
    epoch: AtomicU64,
    /// The generation last checkpointed; held while writing one.
    saved: Mutex<u64>,
    /// The time temporal filters read (`mz_now()`).
    clock: Clock,
    /// Each published tick's changes, for SUBSCRIBE.
    published: tokio::sync::broadcast::Sender<Arc<TickChanges>>,
    /// Signalled when records arrive that no write path ticked for (a
    /// Kafka produce): the timer ticks at once instead of at its next turn.
    arrived: Arc<tokio::sync::Notify>,
    /// Views behind their inputs after the last pass of a tick that had
    /// more to read: name → (records read, records to read). Kept apart
    /// from the state, which a long catch-up holds pass after pass.
    catching_up: Mutex<HashMap<String, (i64, i64)>>,
}

/// The changes one tick published, by relation.
pub struct TickChanges {
    pub epoch: u64,
    /// When it was published (milliseconds since the epoch).
    pub at_ms: i64,
    pub changes: Arc<HashMap<String, Arc<Delta>>>,
    /// Relations that stopped being maintained (dropped or replaced).
    pub removed: Vec<String>,
}

/// A SUBSCRIBE's start: the relation's contents at `epoch`, and the
/// changes of every tick published after it.
pub struct Subscription {
    pub snapshot: RecordBatch,
    pub epoch: u64,
    pub at_ms: i64,
    pub changes: tokio::sync::broadcast::Receiver<Arc<TickChanges>>,
}

/// Why a subscription to a relation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// The relation was dropped or replaced.
    Removed,
    /// The subscriber fell this many ticks behind.
    Lagged(u64),
    /// The runtime stopped.
    Closed,
}

impl Subscription {
    /// The next tick after the snapshot that changed `name`: (its changed
    /// rows, their diffs, the tick's time in ms). Cancel-safe (the
    /// position is the receiver's), so it can race a client going away.
    pub async fn next_change(
        &mut self,
        name: &str,
    ) -> Result<(RecordBatch, Vec<i64>, i64), SubscriptionEnd> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.changes.recv().await {
                Ok(tick) if tick.removed.iter().any(|r| r == name) => {
                    return Err(SubscriptionEnd::Removed);
                }
                Ok(tick) if tick.epoch > self.epoch => {
                    if let Some(d) = tick.changes.get(name) {
                        return Ok((d.batch.clone(), d.diffs.clone(), tick.at_ms));
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => return Err(SubscriptionEnd::Lagged(n)),
                Err(RecvError::Closed) => return Err(SubscriptionEnd::Closed),
            }
        }
    }
}

/// Ticks a subscriber may fall behind before it is cut off.
const SUBSCRIBE_BACKLOG: usize = 4096;

/// What a checkpoint wrote.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointInfo {
    pub epoch: u64,
    pub relations: usize,
    pub bytes: usize,
}

/// One row of `SHOW MATERIALIZED VIEWS`.
pub struct ViewInfo {
    pub name: String,
    pub rows: u64,
    /// Records read and records present in the view's stream inputs.
    pub read: i64,
    pub total: i64,
    pub failed: Option<String>,
    /// Its first row error (and how many input rows raise errors).
    pub error: Option<String>,
}

impl fmt::Debug for Dataflows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dataflows(epoch {})", self.epoch())
    }
}

impl Dataflows {
    pub fn new(
        log: Arc<dyn LogStore>,
        state_dir: std::path::PathBuf,
        errors: Arc<DecodeErrors>,
        clock: Clock,
    ) -> Arc<Dataflows> {
        Arc::new(Dataflows {
            log,
            state_dir,
            errors,
            state: Mutex::new(State::default()),
            versions: RwLock::new(VecDeque::from([Arc::new(Version {
                epoch: 0,
                at: Utc::now(),
                rows: 0,
                relations: HashMap::new(),
            })])),
            epoch: AtomicU64::new(0),
            saved: Mutex::new(0),
            clock,
            published: tokio::sync::broadcast::channel(SUBSCRIBE_BACKLOG).0,
            arrived: Arc::new(tokio::sync::Notify::new()),
            catching_up: Mutex::new(HashMap::new()),
        })
    }

    /// The state. Operators run under `catch_unwind` (a panic fails only
    /// its view), so the lock is not expected to be poisoned; if a panic
    /// elsewhere did poison it, the state is still whole between ticks and
    /// the poison is cleared rather than failing every later statement.
    fn lock(&self) -> Result<MutexGuard<'_, State>, DataflowError> {
        Ok(self.state.lock().unwrap_or_else(|poisoned| {
            tracing::error!("dataflow state lock was poisoned by a panic; continuing");
            self.state.clear_poison();
            poisoned.into_inner()
        }))
    }

    /// What to signal when records arrive by a path that does not tick
    /// itself (the Kafka front end's produce): the next tick starts at once.
    pub fn arrivals(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.arrived)
    }

    /// The last published epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Run ticks every [`TICK_INTERVAL`], and a checkpoint every
    /// `checkpoint_interval` (if any), until the dataflows are dropped or the
    /// log closes.
    pub fn start_timer(self: &Arc<Self>, checkpoint_interval: Option<Duration>) {
        if let Some(every) = checkpoint_interval {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(d) = weak.upgrade() else { break };
                    if d.log.is_closed() {
                        break;
                    }
                    let r = tokio::task::spawn_blocking(move || d.checkpoint()).await;
                    if let Ok(Err(e)) = r {
                        warn!(error = %e, "checkpoint failed; the previous one stays");
                    }
                }
            });
        }
        let weak = Arc::downgrade(self);
        let arrived = Arc::clone(&self.arrived);
        tokio::spawn(async move {
            loop {
                // A tick at least every TICK_INTERVAL (temporal filters
                // move with time), and at once when records arrive (a
                // permit stored while a tick runs starts the next).
                tokio::select! {
                    _ = tokio::time::sleep(TICK_INTERVAL) => {}
                    _ = arrived.notified() => {}
                }
                let Some(d) = weak.upgrade() else { break };
                if d.log.is_closed() {
                    break;
                }
                let r = tokio::task::spawn_blocking(move || d.tick()).await;
                if let Ok(Err(e)) = r {
                    tracing::debug!(error = %e, "tick failed");
                }
            }
        });
    }

    /// Maintain a table: its state is its changelog's contents (an upsert
    /// changelog for a keyed `layout`).
    /// `version`: the catalog version of its definition, when known (at
    /// start); a checkpointed state of that version is restored.
    pub fn add_table(
        &self,
        name: &str,
        topic: &str,
        layout: Layout,
        version: Option<i64>,
    ) -> Result<(), DataflowError> {
        let schema = Arc::clone(layout.schema());
        let fresh = || -> Result<TableState, DataflowError> {
            let mut index = Index::new(Arc::clone(&schema))?;
            index.add_key(layout.key())?;
            Ok(TableState {
                name: name.to_string(),
                reader: TopicReader::new(name, topic, layout.clone())?,
                index,
                version,
                fingerprint: table_fingerprint(topic, &layout),
            })
        };
        let mut table = fresh()?;
        let mut st = self.lock()?;
        st.tables.retain(|t| t.name != name);
        st.restored.remove(name);
        st.generation += 1;
        if let Some(e) = claim(
            &mut st,
            name,
            checkpoint::Kind::Table,
            version,
            &table.fingerprint,
        ) {
            match table.restore(&e.state, &*self.log) {
                Ok(()) => {
                    st.restored.insert(name.to_string());
                }
                Err(err) => {
                    warn!(table = name, error = %err, "checkpoint not used; rebuilding from the log");
                    table = fresh()?;
                }
            }
        }
        st.tables.push(table);
        self.publish(&mut st, 0);
        Ok(())
    }

    /// Record the catalog version a relation was just stored under (after
    /// it was created), so checkpoints include it.
    pub fn set_version(&self, name: &str, version: i64) -> Result<(), DataflowError> {
        let mut st = self.lock()?;
        st.generation += 1;
        if let Some(t) = st.tables.iter_mut().find(|t| t.name == name) {
            t.version = Some(version);
        }
        if let Some(v) = st.views.iter_mut().find(|v| v.name == name) {
            v.version = Some(version);
        }
        Ok(())
    }

    /// Offer a checkpoint's entries to the relations created at start.
    pub fn begin_restore(&self, file: CheckpointFile) -> Result<(), DataflowError> {
        let mut st = self.lock()?;
        st.last_checkpoint = checkpoint_rows(&file);
        st.restore = file
            .entries
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        Ok(())
    }

    /// Forget what was not claimed; returns the relations restored.
    pub fn end_restore(&self) -> Result<Vec<String>, DataflowError> {
        let mut st = self.lock()?;
        st.restore.clear();
        let mut names: Vec<String> = st.restored.iter().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// Write a checkpoint of every table and view (those stored in the
    /// catalog and not failed), unless nothing changed since the last one.
    /// The input records the state reflects are fsynced first, so a
    /// checkpoint never holds records a crash could take from the log.
    pub fn checkpoint(&self) -> Result<Option<CheckpointInfo>, DataflowError> {
        let started = std::time::Instant::now();
        let written = self.checkpoint_untimed()?;
        if written.is_some()
            && let Some(m) = crate::metrics::metrics()
        {
            m.checkpoint_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(written)
    }

    fn checkpoint_untimed(&self) -> Result<Option<CheckpointInfo>, DataflowError> {
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| DataflowError::Other("checkpoint lock poisoned".into()))?;
        let (file, generation, ends) = {
            let st = self.lock()?;
            if st.generation == *saved {
                return Ok(None);
            }
            let mut entries = Vec::new();
            let mut topics: Vec<&str> = Vec::new();
            for t in &st.tables {
                let Some(version) = t.version else { continue };
                topics.push(t.reader.topic());
                entries.push(Entry {
                    kind: checkpoint::Kind::Table,
                    name: t.name.clone(),
                    version,
                    fingerprint: t.fingerprint.clone(),
                    state: t.save(),
                });
            }
            for v in &st.views {
                let (Some(version), None) = (v.version, &v.failed) else {
                    continue;
                };
                topics.extend(v.topics.iter().map(String::as_str));
                entries.push(Entry {
                    kind: checkpoint::Kind::View,
                    name: v.name.clone(),
                    version,
                    fingerprint: v.fingerprint.clone(),
                    state: v.save(),
                });
            }
            // Everything read so far is below these ends (no tick runs
            // while the lock is held).
            topics.sort_unstable();
            topics.dedup();
            let mut ends = Vec::new();
            for topic in topics {
                if let Ok(t) = self.log.topic_info(topic) {
                    for p in 0..t.partitions {
                        if let Ok((_, end)) = self.log.offsets(topic, p) {
                            ends.push((topic.to_string(), p, end));
                        }
                    }
                }
            }
            let file = CheckpointFile {
                epoch: self.epoch(),
                written_ms: crate::log::now_ms(),
                entries,
            };
            (file, st.generation, ends)
        };
        for (topic, p, end) in ends {
            self.log.sync_to(&topic, p, end)?;
        }
        file.write(&self.state_dir)?;
        *saved = generation;
        self.lock()?.last_checkpoint = checkpoint_rows(&file);
        let bytes = file.entries.iter().map(|e| e.state.len()).sum();
        tracing::debug!(
            epoch = file.epoch,
            relations = file.entries.len(),
            bytes,
            "checkpoint written"
        );
        Ok(Some(CheckpointInfo {
            epoch: file.epoch,
            relations: file.entries.len(),
            bytes,
        }))
    }

    /// Stop maintaining a table or view.
    pub fn remove(&self, name: &str) -> Result<(), DataflowError> {
        let mut st = self.lock()?;
        if self.published.receiver_count() > 0 {
            // Subscribers to it end (none subscribed: the error is that).
            let _ = self.published.send(Arc::new(TickChanges {
                epoch: self.epoch(),
                at_ms: Utc::now().timestamp_millis(),
                changes: Arc::default(),
                removed: vec![name.to_string()],
            }));
        }
        st.tables.retain(|t| t.name != name);
        st.views.retain(|v| v.name != name);
        st.restored.remove(name);
        st.generation += 1;
        self.publish(&mut st, 0);
        Ok(())
    }

    /// Arrange table or view `name` by `columns` too (`CREATE INDEX`):
    /// built from its rows now, kept by every tick after, and published
    /// at once so the next read can look up by them.
    pub fn add_index(&self, name: &str, columns: &[usize]) -> Result<(), DataflowError> {
        let mut st = self.lock()?;
        index_of(&mut st, name)?.add_named(columns)?;
        self.publish(&mut st, 0);
        Ok(())
    }

    /// An index on `name` by `columns` was dropped.
    pub fn drop_index(&self, name: &str, columns: &[usize]) -> Result<(), DataflowError> {
        let mut st = self.lock()?;
        index_of(&mut st, name)?.drop_named(columns);
        self.publish(&mut st, 0);
        Ok(())
    }

    /// Whether `name` is a table or materialized view kept here.
    pub fn maintains(&self, name: &str) -> bool {
        self.version(None).contains(name)
    }

    pub fn is_view(&self, name: &str) -> bool {
        self.version(None).views().any(|v| v == name)
    }

    /// Names of the materialized views.
    pub fn view_names(&self) -> Vec<String> {
        self.version(None).views().map(str::to_string).collect()
    }

    /// Views reading `name` directly.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.lock()
            .map(|st| {
                st.views
                    .iter()
                    .filter(|v| v.inputs.iter().any(|i| i == name))
                    .map(|v| v.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The version a query that started at `as_of` reads: the last one
    /// published at or before it (the oldest kept if it started earlier),
    /// the newest when `None`. Every scan of one query passes the same
    /// `as_of`, so a query reading several relations sees them all at one
    /// epoch even if ticks land between its scans. Never waits for a tick
    /// or a checkpoint.
    pub fn version(&self, as_of: Option<DateTime<Utc>>) -> Arc<Version> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let chosen = match as_of {
            Some(t) => versions
                .iter()
                .rev()
                .find(|v| v.at <= t)
                .or_else(|| versions.front()),
            None => versions.back(),
        };
        match chosen {
            Some(v) => Arc::clone(v),
            None => Arc::new(Version {
                epoch: 0,
                at: Utc::now(),
                rows: 0,
                relations: HashMap::new(),
            }),
        }
    }

    /// The contents of a table or view as of [`Dataflows::version`]`(as_of)`.
    pub fn snapshot(
        &self,
        name: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Arc<Snapshot>, DataflowError> {
        self.version(as_of).get(name)
    }

    /// Start a SUBSCRIBE to table or view `name`: its contents now and the
    /// changes of every later tick (both under the lock, so no tick's
    /// changes are missed or seen twice).
    pub fn subscribe(&self, name: &str) -> Result<Subscription, DataflowError> {
        let mut st = self.lock()?;
        let changes = self.published.subscribe();
        let epoch = self.epoch();
        let snapshot = published(&mut st, name)
            .ok_or_else(|| not_maintained(name))?
            .snapshot()?
            .batch()?;
        Ok(Subscription {
            snapshot,
            epoch,
            at_ms: Utc::now().timestamp_millis(),
            changes,
        })
    }

    /// Publish the state as a new version (after a tick that changed it,
    /// or a relation added or removed). `rows`: rows the epoch changed.
    fn publish(&self, st: &mut State, rows: usize) {
        let mut relations = HashMap::with_capacity(st.tables.len() + st.views.len());
        let names: Vec<String> = st
            .tables
            .iter()
            .map(|t| t.name.clone())
            .chain(st.views.iter().map(|v| v.name.clone()))
            .collect();
        for name in names {
            if let Some(p) = published(st, &name) {
                relations.insert(name, p);
            }
        }
        let now = Utc::now();
        let version = Arc::new(Version {
            epoch: self.epoch(),
            at: now,
            rows,
            relations,
        });
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.push_back(version);
        // Older versions go once they are old, or once the epochs after
        // them changed many rows (each holds its own copy of what changed).
        let mut newer: usize = versions.iter().skip(1).map(|v| v.rows).sum();
        while versions.len() > 1 {
            let old = &versions[0];
            if newer > HISTORY_ROWS || now - old.at > HISTORY_AGE {
                versions.pop_front();
                newer -= versions[0].rows;
            } else {
                break;
            }
        }
    }
}

impl Version {
    /// Relation `name` in this version.
    pub fn get(&self, name: &str) -> Result<Arc<Snapshot>, DataflowError> {
        match self.relations.get(name) {
            Some(p) => p.snapshot(),
            None => Err(not_maintained(name)),
        }
    }

    /// Whether `name` is a table or view in this version.
    pub fn contains(&self, name: &str) -> bool {
        self.relations.contains_key(name)
    }

    /// Names of the materialized views in this version.
    pub fn views(&self) -> impl Iterator<Item = &str> {
        self.relations
            .iter()
            .filter(|(_, p)| !matches!(p, Published::Table(_)))
            .map(|(n, _)| n.as_str())
    }
}

impl Published {
    /// Its contents, or the error a SELECT of it reports.
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, DataflowError> {
        match self {
            Published::Table(s) | Published::View(s) => Ok(Arc::clone(s)),
            Published::Failed(e) => Err(DataflowError::Row(e.clone())),
        }
    }
}

fn not_maintained(name: &str) -> DataflowError {
    DataflowError::Other(format!("\"{name}\" is not maintained"))
}

/// The index of table or view `name`.
fn index_of<'a>(st: &'a mut State, name: &str) -> Result<&'a mut Index, DataflowError> {
    if let Some(t) = st.tables.iter_mut().find(|t| t.name == name) {
        return Ok(&mut t.index);
    }
    match st.views.iter_mut().find(|v| v.name == name) {
        Some(v) => Ok(&mut v.index),
        None => Err(not_maintained(name)),
    }
}

/// Table or view `name` as it is now.
fn published(st: &mut State, name: &str) -> Option<Published> {
    if let Some(t) = st.tables.iter_mut().find(|t| t.name == name) {
        return Some(Published::Table(t.index.snapshot()));
    }
    let v = st.views.iter_mut().find(|v| v.name == name)?;
    Some(match v.error() {
        Some(e) => Published::Failed(e),
        None => Published::View(v.index.snapshot()),
    })
}

impl Dataflows {
    /// Lower `plan` and install it as view `name`. Tables and views it reads
    /// start from their contents now (backfill), streams from their start.
    /// `streams`: the catalog's streams (name → topic, schema).
    /// `version`: the catalog version of its definition, when known (at
    /// start); a checkpointed state of that version and plan is restored
    /// when every table and view it reads was restored too.
    pub fn install(
        &self,
        name: &str,
        plan: &LogicalPlan,
        session: &SessionState,
        streams: &HashMap<String, (String, Layout)>,
        version: Option<i64>,
        options: ViewOptions,
    ) -> Result<SchemaRef, DataflowError> {
        let mut st = self.lock()?;
        let schema = nullable(plan.schema().as_arrow());
        let mut fingerprint = plan.display_indent_schema().to_string();
        if options != ViewOptions::default() {
            fingerprint.push_str(&format!("\n{options:?}"));
        }
        let low = Low {
            plan,
            session,
            streams,
            schema: &schema,
            options,
        };
        let mut view = lower_view(&mut st, name, &low)?;
        view.version = version;
        view.fingerprint = fingerprint;
        st.views.retain(|v| v.name != name);
        st.restored.remove(name);
        st.generation += 1;
        let inputs_restored = view
            .inputs
            .iter()
            .all(|i| streams.contains_key(i) || st.restored.contains(i));
        let entry = claim(
            &mut st,
            name,
            checkpoint::Kind::View,
            version,
            &view.fingerprint,
        );
        if let (Some(e), true) = (entry, inputs_restored) {
            match view.restore(&e.state, &*self.log) {
                Ok(()) => {
                    st.restored.insert(name.to_string());
                }
                Err(err) => {
                    warn!(view = name, error = %err, "checkpoint not used; rebuilding from the log");
                    let fingerprint = std::mem::take(&mut view.fingerprint);
                    view = lower_view(&mut st, name, &low)?;
                    view.version = version;
                    view.fingerprint = fingerprint;
                }
            }
        }
        st.views.push(view);
        self.publish(&mut st, 0);
        Ok(schema)
    }

    /// Advance every table and view to the current end of their inputs;
    /// returns the epoch published. Timed into
    /// `eddy_dataflow_tick_duration_seconds`.
    pub fn tick(&self) -> Result<u64, DataflowError> {
        let out = crate::metrics::timed(|m| &m.tick_seconds, || self.tick_untimed());
        if let Some(m) = crate::metrics::metrics() {
            m.last_tick.set(crate::log::now_ms() / 1000);
        }
        out
    }

    fn tick_untimed(&self) -> Result<u64, DataflowError> {
        loop {
            let mut st = self.lock()?;
            let mut changes: HashMap<String, Arc<Delta>> = HashMap::new();
            let mut error_changes: HashMap<String, Arc<Vec<(RowError, i64)>>> = HashMap::new();
            let mut more = false;
            let mut read = false;
            for t in st.tables.iter_mut() {
                let stepped = catch_unwind(AssertUnwindSafe(|| {
                    let read = t
                        .reader
                        .read(&*self.log, &self.errors, MAX_RECORDS_PER_TICK)?;
                    t.index.apply(&read.delta)?;
                    Ok::<_, DataflowError>(read)
                }));
                match stepped {
                    Ok(Ok(read)) => {
                        more |= read.more;
                        if !read.delta.is_empty() {
                            changes.insert(t.name.clone(), Arc::new(read.delta));
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(table = %t.name, error = %e, "table changelog read failed")
                    }
                    Err(panic) => tracing::error!(
                        table = %t.name,
                        panic = panic_message(&panic),
                        "reading a table's changelog panicked (a bug)"
                    ),
                }
            }
            let log = Arc::clone(&self.log);
            let errors = Arc::clone(&self.errors);
            // One time for every view of the pass.
            let now_us = self.clock.now_us();
            let mut st_changed = false;
            for v in st.views.iter_mut() {
                if v.failed.is_some() {
                    continue;
                }
                let mut cx = StepContext {
                    error_changes: &error_changes,
                    errors: Vec::new(),
                    changes: &changes,
                    log: &log,
                    decode_errors: &errors,
                    max_records: MAX_RECORDS_PER_TICK,
                    more: false,
                    read: 0,
                    now_us,
                };
                // A panic in an operator (a bug) fails this view alone: its
                // state may be half-updated, so it is not stepped again.
                let stepped = catch_unwind(AssertUnwindSafe(|| {
                    v.root
                        .step(&mut cx)
                        .and_then(|d| v.index.apply(&d).map(|_| d))
                }));
                more |= cx.more;
                read |= cx.read > 0;
                if !cx.errors.is_empty() {
                    apply_errors(&mut v.row_errors, &cx.errors);
                    error_changes.insert(v.name.clone(), Arc::new(std::mem::take(&mut cx.errors)));
                    st_changed = true;
                }
                match stepped {
                    Ok(Ok(d)) => {
                        if !d.is_empty() {
                            changes.insert(v.name.clone(), Arc::new(d));
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(view = %v.name, error = %e, "materialized view failed");
                        v.failed = Some(e.to_string());
                        st_changed = true;
                    }
                    Err(panic) => {
                        let m = panic_message(&panic);
                        tracing::error!(view = %v.name, panic = %m, "materialized view panicked (a bug); it is no longer maintained");
                        v.failed = Some(format!("internal error: {m}"));
                        st_changed = true;
                    }
                }
            }
            let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            if !changes.is_empty() || read || st_changed {
                st.generation += 1;
            }
            if !changes.is_empty() {
                let now = Utc::now();
                let rows = changes.values().map(|d| d.len()).sum();
                let changes = Arc::new(changes);
                if self.published.receiver_count() > 0 {
                    // No receiver: nobody subscribes (the error is that).
                    let _ = self.published.send(Arc::new(TickChanges {
                        epoch,
                        at_ms: now.timestamp_millis(),
                        changes: Arc::clone(&changes),
                        removed: vec![],
                    }));
                }
                self.publish(&mut st, rows);
            } else if st_changed {
                self.publish(&mut st, 0);
            }
            let behind: HashMap<String, (i64, i64)> = match more {
                false => HashMap::new(),
                true => st
                    .views
                    .iter()
                    .filter_map(|v| {
                        let mut p = Vec::new();
                        v.root.progress(&mut p);
                        let read: i64 = p.iter().map(|x| x.1).sum();
                        let total: i64 = p.iter().map(|x| x.2).sum();
                        (total > read).then(|| (v.name.clone(), (read, total)))
                    })
                    .collect(),
            };
            drop(st);
            if let Ok(mut c) = self.catching_up.lock() {
                *c = behind;
            }
            if !more {
                return Ok(epoch);
            }
        }
    }

    /// The views a running catch-up has not brought level with their
    /// inputs yet: name → (records read, records to read). Read without
    /// waiting for the tick.
    pub fn catching_up(&self) -> HashMap<String, (i64, i64)> {
        self.catching_up
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// The relations in the last checkpoint written or loaded.
    pub fn last_checkpoint(&self) -> Vec<CheckpointRow> {
        self.lock()
            .map(|st| st.last_checkpoint.clone())
            .unwrap_or_default()
    }

    pub fn views(&self) -> Vec<ViewInfo> {
        let Ok(st) = self.lock() else {
            return vec![];
        };
        st.views
            .iter()
            .map(|v| {
                let mut p = Vec::new();
                v.root.progress(&mut p);
                ViewInfo {
                    name: v.name.clone(),
                    rows: v.index.len(),
                    read: p.iter().map(|x| x.1).sum(),
                    total: p.iter().map(|x| x.2).sum(),
                    failed: v.failed.clone(),
                    error: v.row_errors.keys().next().map(|e| {
                        format!(
                            "{} ({} rows)",
                            e.message,
                            v.row_errors.values().sum::<i64>()
                        )
                    }),
                }
            })
            .collect()
    }

    /// Operators of every view: (view, operator counters), root first.
    pub fn operators(&self) -> Vec<(String, OperatorStats)> {
        let Ok(st) = self.lock() else {
            return vec![];
        };
        let mut out = Vec::new();
        for v in &st.views {
            let mut ops = vec![OperatorStats {
                operator: "index".into(),
                rows_in: 0,
                rows_out: 0,
                state_rows: v.index.len(),
                state_bytes: v.index.bytes(),
                errors: v.index.negative + u64::from(v.failed.is_some()),
                ..Default::default()
            }];
            v.root.stats(&mut ops);
            out.extend(ops.into_iter().map(|o| (v.name.clone(), o)));
        }
        for t in &st.tables {
            out.push((
                t.name.clone(),
                OperatorStats {
                    operator: "table index".into(),
                    state_rows: t.index.len(),
                    state_bytes: t.index.bytes(),
                    errors: t.index.negative,
                    ..Default::default()
                },
            ));
        }
        out
    }
}

/// The text of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Take the checkpoint entry for `name` if it was written for this
/// definition and plan.
fn claim(
    st: &mut State,
    name: &str,
    kind: checkpoint::Kind,
    version: Option<i64>,
    fingerprint: &str,
) -> Option<Entry> {
    let e = st.restore.remove(name)?;
    (e.kind == kind && Some(e.version) == version && e.fingerprint == fingerprint).then_some(e)
}

/// What a view is lowered from.
struct Low<'a> {
    plan: &'a LogicalPlan,
    session: &'a SessionState,
    streams: &'a HashMap<String, (String, Layout)>,
    schema: &'a SchemaRef,
    options: ViewOptions,
}

/// A fresh view lowered from `plan`: inputs start from their contents now.
fn lower_view(st: &mut State, name: &str, low: &Low<'_>) -> Result<ViewState, DataflowError> {
    let (plan, schema) = (low.plan, low.schema);
    let mut resolver = Resolver {
        state: st,
        streams: low.streams,
        topics: Vec::new(),
    };
    let mut lowering = Lowering::new(low.session, &mut resolver);
    lowering.window = low.options.window;
    lowering.lookup_joins = low.options.lookup_joins;
    lowering.within = low.options.within;
    let root = lowering.lower(plan)?;
    let mut inputs = lowering.inputs;
    inputs.sort();
    inputs.dedup();
    let mut topics = resolver.topics;
    topics.sort();
    topics.dedup();
    let mut index = Index::new(Arc::clone(schema))?;
    if let Some(key) = super::lower::output_key(plan) {
        index.add_key(&key)?;
    }
    Ok(ViewState {
        name: name.to_string(),
        root,
        index,
        inputs,
        topics,
        failed: None,
        row_errors: BTreeMap::new(),
        version: None,
        fingerprint: String::new(),
    })
}

struct Resolver<'a> {
    state: &'a mut State,
    streams: &'a HashMap<String, (String, Layout)>,
    /// Topics of the streams resolved.
    topics: Vec<String>,
}

impl Resolve for Resolver<'_> {
    fn input(&mut self, name: &str) -> Result<(String, Input), DataflowError> {
        if let Some((key, (topic, layout))) = self.streams.iter().find(|(k, _)| k.as_str() == name)
        {
            self.topics.push(topic.clone());
            return Ok((
                key.clone(),
                Input::Stream {
                    topic: topic.clone(),
                    layout: layout.clone(),
                },
            ));
        }
        if let Some(t) = self.state.tables.iter_mut().find(|t| t.name == name) {
            return Ok((
                t.name.clone(),
                Input::Changes {
                    schema: t.index.schema(),
                    backfill: t.index.as_delta()?,
                    errors: vec![],
                },
            ));
        }
        if let Some(v) = self.state.views.iter_mut().find(|v| v.name == name) {
            return Ok((
                v.name.clone(),
                Input::Changes {
                    schema: v.index.schema(),
                    backfill: v.index.as_delta()?,
                    errors: v.row_errors.iter().map(|(e, n)| (e.clone(), *n)).collect(),
                },
            ));
        }
        Err(DataflowError::Unsupported(format!(
            "reading \"{name}\" (only streams, tables and materialized views can feed a materialized view)"
        )))
    }
}
