//! Transaction blocks (`BEGIN … COMMIT | ROLLBACK`), as Materialize has
//! them: a block that writes holds its INSERTs (into tables and streams)
//! until COMMIT, which appends them to their topics, each partition's
//! records as one record set, before the views tick once; ROLLBACK, or an
//! error in the block, drops them. Until COMMIT nobody sees them —
//! neither other sessions nor the block itself, so a block that has
//! written may only INSERT further (a SELECT there is 25000, as in
//! Materialize), and UPDATE/DELETE (which read what they change) run only
//! outside a block.
//!
//! The INSERT runs through DataFusion as any other; `relation::TopicSink`
//! finds the block's [`Transaction`] among the session config's extensions
//! and adds the encoded records to it instead of appending them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use super::{Engine, EngineError, Result};
use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogError};

type Writes = BTreeMap<(String, i32), Vec<NewRecord>>;
/// How many records each (topic, partition) held at a savepoint.
type Marks = BTreeMap<(String, i32), usize>;

/// What one connection's transaction block holds.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Whether a block is open (BEGIN seen, no COMMIT/ROLLBACK yet).
    open: std::sync::atomic::AtomicBool,
    /// Records to append at COMMIT, by (topic, partition), in order.
    writes: Mutex<Writes>,
    /// Savepoints, oldest first: name and how many records each
    /// (topic, partition) held when it was set.
    savepoints: Mutex<Vec<(String, Marks)>>,
}

impl Transaction {
    /// BEGIN.
    pub fn begin(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a block is open.
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The block ended (COMMIT or ROLLBACK): nothing held, no savepoints.
    pub fn end(&self) {
        self.discard();
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// SAVEPOINT `name` (a name used again hides the older one, as in
    /// PostgreSQL).
    pub fn savepoint(&self, name: &str) {
        let marks = self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), marks));
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rposition(|(n, _)| n == name)
    }

    /// ROLLBACK TO SAVEPOINT `name`: drop what was written since; the
    /// savepoint stays. False if there is no such savepoint.
    pub fn rollback_to(&self, name: &str) -> bool {
        let Some(i) = self.find(name) else {
            return false;
        };
        let mut sp = self.savepoints.lock().unwrap_or_else(|p| p.into_inner());
        sp.truncate(i + 1);
        let marks = &sp[i].1;
        let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.retain(|k, v| match marks.get(k) {
            Some(n) => {
                v.truncate(*n);
                true
            }
            None => false,
        });
        true
    }

    /// RELEASE SAVEPOINT `name` (and those set after it); what was written
    /// stays. False if there is no such savepoint.
    pub fn release(&self, name: &str) -> bool {
        let Some(i) = self.find(name) else {
            return false;
        };
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(i);
        true
    }

    /// Hold `records` for `topic`'s partition until COMMIT.
    pub(crate) fn hold(&self, topic: &str, partition: i32, records: Vec<NewRecord>) {
        let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.entry((topic.to_string(), partition))
            .or_default()
            .extend(records);
    }

    /// Whether the block has written (and so may only INSERT further).
    pub fn has_writes(&self) -> bool {
        !self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Drop what the block wrote (ROLLBACK, or an error in the block).
    pub fn discard(&self) {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.savepoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn take(&self) -> Writes {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// `ctx`'s session with `txn` among its config's extensions (what
/// `relation::TopicSink` looks for).
pub(crate) fn session_in(ctx: &SessionContext, txn: &Arc<Transaction>) -> SessionContext {
    let state = ctx.state();
    let config = state.config().clone().with_extension(Arc::clone(txn));
    SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build(),
    )
}

impl Engine {
    /// COMMIT: append what `txn` holds, each partition's records as one
    /// record set (fsynced), then tick the views once.
    pub async fn commit(&self, txn: &Transaction) -> Result<()> {
        let writes = txn.take();
        if writes.is_empty() {
            return Ok(());
        }
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || -> Result<()> {
            for ((topic, p), records) in writes {
                let mut set = BytesMut::new();
                for chunk in records.chunks(1000) {
                    set.extend_from_slice(&batch::encode(chunk).map_err(LogError::from)?);
                }
                log.append(&topic, p, set, Durability::Fsync)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))??;
        self.tick().await?;
        Ok(())
    }
}
