//! The transaction coordinator: Kafka transactions (KIP-98) for the single
//! node eddy is, so confluent-kafka's (librdkafka's) and the Java client's
//! transactional producers, and exactly-once consume-transform-produce,
//! work unchanged.
//!
//! A transactional id maps to a producer id and epoch (InitProducerId
//! bumps the epoch, fencing the previous instance, and aborts what that
//! instance left open). A transaction collects its partitions
//! (AddPartitionsToTxn), its consumer groups (AddOffsetsToTxn) and their
//! offsets (TxnOffsetCommit); EndTxn ends it as Kafka's coordinator does, in
//! two phases: the PrepareCommit/PrepareAbort state (with the pending
//! offsets) is made durable first, then a marker is written (fsynced) into
//! every partition, the offsets are committed, and the Complete state is
//! written. A restart completes a transaction found prepared, aborts one
//! left open past its timeout, and aborts any open transaction a partition
//! holds that no transaction here accounts for, so none hangs the last
//! stable offset.
//!
//! State lives in the compacted internal topic `__transaction_state`
//! (key: the transactional id; value: the state as JSON; made by the first
//! transactional id), fsynced before any answer depends on it. Markers and the last stable offset they move
//! are the partitions' (`log/producer.rs`); read_committed readers (Kafka
//! consumers asking for it, and all of eddy's own readers) stop at that
//! offset and drop aborted records.
//!
//! One mutex orders every change; EndTxn holds it while it writes its
//! markers, so a transaction's end is never observed half done by another
//! request of the same transactional id.

mod add_offsets;
mod add_partitions;
mod end_txn;
mod txn_offset_commit;

pub use add_offsets::handle as add_offsets;
pub use add_partitions::handle as add_partitions;
pub use end_txn::handle as end_txn;
pub use txn_offset_commit::handle as txn_offset_commit;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::log::batch::{self, Marker, NewRecord};
use crate::log::{CommittedOffset, Durability, Log, LogError, LogStore, now_ms};

/// The internal topic holding every transactional id's state.
pub const TOPIC: &str = "__transaction_state";

/// Kafka's `transaction.max.timeout.ms` (15 minutes).
pub const MAX_TIMEOUT_MS: i32 = 15 * 60 * 1000;

/// How often open transactions are checked against their timeouts.
const REAP_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// An offset a transaction will commit for a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// One transactional id's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: Status,
    /// Partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Consumer groups whose offsets it commits, with the offsets.
    pub groups: BTreeMap<String, Vec<PendingOffset>>,
    /// When the open transaction began (its timeout runs from here).
    pub started_ms: i64,
}

impl Txn {
    fn is_ending(&self) -> bool {
        matches!(self.status, Status::PrepareCommit | Status::PrepareAbort)
    }
}

#[derive(Default)]
struct State {
    txns: HashMap<String, Txn>,
}

pub struct Transactions {
    shared: Arc<Shared>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    log: Arc<Log>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions").finish_non_exhaustive()
    }
}

/// Why a request about a transactional id is refused.
pub(crate) fn refuse(e: ResponseError) -> i16 {
    e.code()
}

impl Transactions {
    /// Load the state from `__transaction_state` and finish what a stop
    /// left: prepared transactions are completed, and open transactions of
    /// partitions that no transactional id accounts for are aborted.
    pub fn open(log: Arc<Log>) -> Transactions {
        let mut state = State::default();
        // The topic is made by the first transactional id, as Kafka makes
        // it: a server that never saw a transaction has none.
        let exists = LogStore::topic_info(&*log, TOPIC).is_ok();
        if exists
            && let Err(e) = crate::log::replay_keyed(&*log, TOPIC, |id, _offset, value| match value
            {
                None => {
                    state.txns.remove(&id);
                }
                Some(v) => match serde_json::from_slice::<Txn>(v) {
                    Ok(t) => {
                        state.txns.insert(id, t);
                    }
                    Err(e) => {
                        warn!(transactional_id = %id, error = %e, "skipping a __transaction_state record")
                    }
                },
            })
        {
            warn!(error = %e, "could not read __transaction_state; transactions start empty");
        }
        let shared = Arc::new(Shared {
            log,
            state: Mutex::new(state),
        });
        shared.recover();
        let t = Transactions {
            shared,
            reaper: Mutex::new(None),
        };
        t.ensure_reaper();
        t
    }

    /// The largest producer id a transactional id holds (ids handed out
    /// after a restart must not collide with them).
    pub fn max_producer_id(&self) -> i64 {
        self.shared
            .lock()
            .txns
            .values()
            .map(|t| t.producer_id)
            .max()
            .unwrap_or(-1)
    }

    /// Start the timeout check if it is not running (`open` may run
    /// outside a runtime; every request calls this, as the group
    /// coordinator does for its tick).
    pub(crate) fn ensure_reaper(&self) {
        let mut slot = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        *slot = Some(runtime.spawn(async move {
            let mut interval = tokio::time::interval(REAP_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                // Marker writes fsync: off the async workers.
                let _ = tokio::task::spawn_blocking(move || shared.reap(now_ms())).await;
            }
        }));
    }

    /// Abort every open transaction past its timeout now.
    pub fn reap(&self) {
        self.shared.reap(now_ms());
    }

    /// InitProducerId with a transactional id: the id's producer id with
    /// its epoch bumped (a new id the first time), after aborting what the
    /// previous instance left open. `expected` is KIP-360's (producer id,
    /// epoch) a producer re-initialising itself names.
    pub fn init_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        allocate: impl FnOnce() -> i64,
    ) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(refuse(ResponseError::InvalidTransactionTimeout));
        }
        let mut state = self.shared.lock();
        let current = state.txns.get(transactional_id).cloned();
        let mut txn = match current {
            None => {
                if expected.is_some() {
                    return Err(refuse(ResponseError::InvalidProducerIdMapping));
                }
                Txn {
                    producer_id: allocate(),
                    epoch: 0,
                    timeout_ms,
                    status: Status::Empty,
                    partitions: BTreeSet::new(),
                    groups: BTreeMap::new(),
                    started_ms: 0,
                }
            }
            Some(mut t) => {
                if let Some((pid, epoch)) = expected
                    && (pid != t.producer_id || epoch != t.epoch)
                {
                    return Err(refuse(ResponseError::ProducerFenced));
                }
                if t.is_ending() {
                    self.shared.complete(&mut state, transactional_id, &mut t)?;
                }
                let open = t.status == Status::Ongoing;
                match t.epoch.checked_add(1) {
                    Some(e) if e < i16::MAX => t.epoch = e,
                    // Epoch exhausted: a fresh producer id, as Kafka does.
                    _ => {
                        t.producer_id = allocate();
                        t.epoch = 0;
                    }
                }
                t.timeout_ms = timeout_ms;
                if open {
                    // The previous instance's transaction is aborted under
                    // the new epoch, which fences that instance everywhere.
                    self.shared
                        .end(&mut state, transactional_id, &mut t, Marker::Abort)?;
                }
                t.status = Status::Empty;
                t
            }
        };
        txn.partitions.clear();
        txn.groups.clear();
        self.shared.put(&mut state, transactional_id, txn.clone())?;
        Ok((txn.producer_id, txn.epoch))
    }

    /// Whether a transactional batch of `producer_id`/`epoch` may go into
    /// `topic`/`partition`: only inside an open transaction that added the
    /// partition (Kafka's produce-side verification, KIP-890), so no batch
    /// can open a transaction its coordinator will never end.
    pub fn admits(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), i16> {
        let state = self.shared.lock();
        let Some(t) = state.txns.values().find(|t| t.producer_id == producer_id) else {
            return Err(refuse(ResponseError::InvalidTxnState));
        };
        if epoch < t.epoch {
            return Err(refuse(ResponseError::InvalidProducerEpoch));
        }
        if epoch != t.epoch
            || t.status != Status::Ongoing
            || !t.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(refuse(ResponseError::InvalidTxnState));
        }
        Ok(())
    }

    /// Every transactional id with its state, for system tables and tests.
    pub fn list(&self) -> Vec<(String, Txn)> {
        let mut v: Vec<_> = self
            .shared
            .lock()
            .txns
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Transactions {
    fn drop(&mut self) {
        if let Some(h) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transaction `id` names, checked against the producer id and
    /// epoch a request carries.
    fn checked(
        &self,
        state: &State,
        id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Txn, ResponseError> {
        let t = state
            .txns
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if t.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if t.epoch != epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(t.clone())
    }

    /// Write `txn` durably as `id`'s state, then apply it.
    fn put(&self, state: &mut State, id: &str, txn: Txn) -> Result<(), i16> {
        let value =
            serde_json::to_vec(&txn).map_err(|_| refuse(ResponseError::UnknownServerError))?;
        let rec = NewRecord {
            key: Some(Bytes::from(id.to_string().into_bytes())),
            value: Some(Bytes::from(value)),
            timestamp: now_ms(),
            headers: vec![],
        };
        let encoded =
            batch::encode(&[rec]).map_err(|_| refuse(ResponseError::UnknownServerError))?;
        if LogStore::topic_info(&*self.log, TOPIC).is_err() {
            let mut cfg = BTreeMap::new();
            cfg.insert("cleanup.policy".to_string(), "compact".to_string());
            match LogStore::create_topic(&*self.log, TOPIC, 1, cfg) {
                Ok(_) | Err(LogError::TopicExists(_)) => {}
                Err(e) => return Err(super::error_code(&e)),
            }
        }
        self.log
            .append(TOPIC, 0, encoded, Durability::Fsync)
            .map_err(|e| {
                warn!(transactional_id = id, error = %e, "could not write __transaction_state");
                super::error_code(&e)
            })?;
        state.txns.insert(id.to_string(), txn);
        Ok(())
    }

    /// End `txn` with `marker`: prepare (durable), markers into every
    /// partition, offsets committed on commit, complete (durable). On
    /// return `txn` is the completed state.
    fn end(&self, state: &mut State, id: &str, txn: &mut Txn, marker: Marker) -> Result<(), i16> {
        txn.status = match marker {
            Marker::Commit => Status::PrepareCommit,
            Marker::Abort => Status::PrepareAbort,
        };
        self.put(state, id, txn.clone())?;
        self.complete(state, id, txn)
    }

    /// Finish a prepared transaction: write its markers and (on commit)
    /// its offsets, then record it complete. Safe to repeat: a marker for a
    /// producer with nothing open in a partition changes nothing there, and
    /// committing the same offsets twice leaves them as they are.
    fn complete(&self, state: &mut State, id: &str, txn: &mut Txn) -> Result<(), i16> {
        let (marker, done) = match txn.status {
            Status::PrepareCommit => (Marker::Commit, Status::CompleteCommit),
            Status::PrepareAbort => (Marker::Abort, Status::CompleteAbort),
            _ => return Ok(()),
        };
        for (topic, partition) in &txn.partitions {
            match self
                .log
                .partition(topic, *partition)
                .and_then(|p| p.write_marker(txn.producer_id, txn.epoch, marker))
            {
                Ok(_) => {}
                // The topic was dropped meanwhile: nothing to end there.
                Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {}
                Err(e) => {
                    warn!(transactional_id = id, topic, partition, error = %e, "could not write a transaction marker; retried by the timeout check");
                    return Err(super::error_code(&e));
                }
            }
        }
        if marker == Marker::Commit {
            for (group, offsets) in &txn.groups {
                let now = now_ms();
                let batch: Vec<(String, i32, CommittedOffset)> = offsets
                    .iter()
                    .map(|o| {
                        (
                            o.topic.clone(),
                            o.partition,
                            CommittedOffset {
                                offset: o.offset,
                                leader_epoch: o.leader_epoch,
                                metadata: o.metadata.clone(),
                                commit_timestamp: now,
                            },
                        )
                    })
                    .collect();
                if !batch.is_empty() {
                    self.log
                        .offset_store()
                        .commit(group, &batch)
                        .map_err(|e| super::error_code(&e))?;
                }
            }
        }
        txn.status = done;
        txn.partitions.clear();
        txn.groups.clear();
        self.put(state, id, txn.clone())
    }

    /// Abort every open transaction older than its timeout, and retry any
    /// whose end was interrupted.
    fn reap(&self, now: i64) {
        let mut state = self.lock();
        let due: Vec<(String, Txn)> = state
            .txns
            .iter()
            .filter(|(_, t)| {
                t.is_ending()
                    || (t.status == Status::Ongoing
                        && now.saturating_sub(t.started_ms) > t.timeout_ms as i64)
            })
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (id, mut t) in due {
            let outcome = if t.is_ending() {
                self.complete(&mut state, &id, &mut t)
            } else {
                info!(transactional_id = %id, producer_id = t.producer_id, "transaction timed out; aborting it");
                self.end(&mut state, &id, &mut t, Marker::Abort)
            };
            if let Err(code) = outcome {
                warn!(transactional_id = %id, code, "ending a transaction failed; will retry");
            }
        }
    }

    /// At open: complete prepared transactions, then abort the open
    /// transactions partitions hold for producers no open transaction here
    /// accounts for (their coordinator state was lost, or the transaction
    /// was ended before the partition's marker was written).
    fn recover(&self) {
        let mut state = self.lock();
        let ending: Vec<(String, Txn)> = state
            .txns
            .iter()
            .filter(|(_, t)| t.is_ending())
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for (id, mut t) in ending {
            if let Err(code) = self.complete(&mut state, &id, &mut t) {
                warn!(transactional_id = %id, code, "could not complete a prepared transaction at start");
            }
        }
        let open: BTreeSet<(i64, String, i32)> = state
            .txns
            .values()
            .filter(|t| t.status == Status::Ongoing)
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |(topic, p)| (t.producer_id, topic.clone(), *p))
            })
            .collect();
        let epochs: HashMap<i64, i16> = state
            .txns
            .values()
            .map(|t| (t.producer_id, t.epoch))
            .collect();
        drop(state);
        for name in self.log.topic_names() {
            let Ok(topic) = self.log.topic(&name) else {
                continue;
            };
            for p in topic.partitions() {
                let Ok(open_here) = p.open_transactions() else {
                    continue;
                };
                let producer_epochs = p.producer_epochs();
                for (pid, _first) in open_here {
                    if open.contains(&(pid, name.clone(), p.id())) {
                        continue;
                    }
                    let epoch = epochs
                        .get(&pid)
                        .copied()
                        .or_else(|| producer_epochs.get(&pid).copied())
                        .unwrap_or(0);
                    info!(topic = %name, partition = p.id(), producer_id = pid, "aborting a transaction no coordinator state accounts for");
                    if let Err(e) = p.write_marker(pid, epoch, Marker::Abort) {
                        warn!(topic = %name, partition = p.id(), error = %e, "could not abort a hanging transaction");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::log::LogOptions;

    fn log(dir: &std::path::Path) -> Arc<Log> {
        Log::open(
            dir,
            LogOptions {
                cleaner_interval: None,
            },
        )
        .unwrap()
    }

    /// A transactional batch of one record from `pid`.
    fn txn_record(log: &Log, topic: &str, pid: i64, value: &str) {
        let r = NewRecord {
            value: Some(Bytes::from(value.to_string())),
            timestamp: now_ms(),
            ..Default::default()
        };
        log.append(
            topic,
            0,
            batch::encode_transactional(pid, 0, 0, &[r]).unwrap(),
            Durability::Os,
        )
        .unwrap();
    }

    /// The values eddy's readers see.
    fn visible(log: &Log, topic: &str) -> Vec<String> {
        let (start, end) = log.offsets(topic, 0).unwrap();
        crate::log::records(log, topic, 0, start, end, 1 << 20)
            .flat_map(|r| r.unwrap())
            .map(|r| String::from_utf8_lossy(&r.value.unwrap()).to_string())
            .collect()
    }

    fn write_state(log: &Log, id: &str, txn: &Txn) {
        let rec = NewRecord {
            key: Some(Bytes::from(id.to_string())),
            value: Some(Bytes::from(serde_json::to_vec(txn).unwrap())),
            timestamp: now_ms(),
            headers: vec![],
        };
        if log.topic_info(TOPIC).is_err() {
            let mut cfg = BTreeMap::new();
            cfg.insert("cleanup.policy".to_string(), "compact".to_string());
            log.create_topic(TOPIC, 1, cfg).unwrap();
        }
        log.append(TOPIC, 0, batch::encode(&[rec]).unwrap(), Durability::Os)
            .unwrap();
    }

    fn txn(pid: i64, status: Status, started_ms: i64) -> Txn {
        Txn {
            producer_id: pid,
            epoch: 0,
            timeout_ms: 60_000,
            status,
            partitions: [("t".to_string(), 0)].into_iter().collect(),
            groups: BTreeMap::new(),
            started_ms,
        }
    }

    /// A partition holding an open transaction no transactional id
    /// accounts for (its state lost) is aborted at open: it cannot hang
    /// the last stable offset forever.
    #[test]
    fn a_hanging_transaction_is_aborted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        log.create_topic("t", 1, BTreeMap::new()).unwrap();
        txn_record(&log, "t", 42, "lost");
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.stable_end(), 0);
        let _t = Transactions::open(Arc::clone(&log));
        assert_eq!(p.stable_end(), p.log_end());
        assert!(visible(&log, "t").is_empty());
    }

    /// A transaction found PrepareCommit at open (the coordinator stopped
    /// between its durable decision and its markers) is completed: its
    /// records become visible and its group offsets are committed.
    #[test]
    fn a_prepared_commit_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        log.create_topic("t", 1, BTreeMap::new()).unwrap();
        txn_record(&log, "t", 7, "kept");
        let mut t = txn(7, Status::PrepareCommit, now_ms());
        t.groups.insert(
            "g".into(),
            vec![PendingOffset {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        );
        write_state(&log, "app", &t);
        let txns = Transactions::open(Arc::clone(&log));
        assert_eq!(visible(&log, "t"), vec!["kept"]);
        assert_eq!(log.committed_offset("g", "t", 0).unwrap().offset, 5);
        let (_, now) = txns.list().into_iter().next().unwrap();
        assert_eq!(now.status, Status::CompleteCommit);
        assert!(now.partitions.is_empty() && now.groups.is_empty());
    }

    /// An open transaction past its timeout is aborted by the timeout
    /// check (and one within it is left alone); the state survives a
    /// reopen of the coordinator.
    #[test]
    fn open_transactions_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        log.create_topic("t", 1, BTreeMap::new()).unwrap();
        txn_record(&log, "t", 7, "old");
        write_state(&log, "old", &txn(7, Status::Ongoing, now_ms() - 120_000));
        let txns = Transactions::open(Arc::clone(&log));
        // Still open: it is accounted for.
        assert_eq!(log.partition("t", 0).unwrap().stable_end(), 0);
        txns.reap();
        assert!(visible(&log, "t").is_empty());
        assert_eq!(
            log.partition("t", 0).unwrap().stable_end(),
            log.partition("t", 0).unwrap().log_end()
        );
        drop(txns);
        let again = Transactions::open(Arc::clone(&log));
        assert_eq!(again.list()[0].1.status, Status::CompleteAbort);
        // InitProducerId bumps the epoch of the same producer id.
        assert_eq!(again.init_producer("old", 1000, None, || 99), Ok((7, 1)));
        assert_eq!(
            again.init_producer("old", 1000, Some((7, 0)), || 99),
            Err(ResponseError::ProducerFenced.code())
        );
        assert_eq!(again.init_producer("new", 1000, None, || 99), Ok((99, 0)));
    }
}
