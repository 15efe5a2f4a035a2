//! The group coordinator: Kafka's classic consumer-group protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), committed offsets
//! (OffsetCommit, OffsetFetch), group listings and FindCoordinator, for the
//! single node eddy is.
//!
//! `group.rs` is the state machine of one group, pure. This file owns the
//! [`Coordinator`] the dispatcher calls, the map of groups behind one mutex
//! (never held across an `.await`: every operation is a short, I/O-free
//! state change, and waiting requests wait on oneshot channels outside it),
//! and the clock: a background tick that applies session timeouts and
//! rebalance deadlines. Each API has its own file translating between the
//! versioned messages and the state machine. Committed offsets live in the
//! log (`__consumer_offsets`), so they survive restarts; group membership is
//! in memory only, as after a Kafka coordinator failover without the group
//! metadata: members find out through UNKNOWN_MEMBER_ID and rejoin.

mod delete_groups;
mod describe_groups;
mod find_coordinator;
mod group;
mod heartbeat;
mod join_group;
mod leave_group;
mod list_groups;
mod offset_commit;
mod offset_fetch;
mod sync_group;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::log::Log;
use group::Group;

/// Timing and limits of the coordinator (Kafka's broker settings of the
/// same meaning, with defaults suited to a single local node).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka's `group.initial.rebalance.delay.ms` (3 s there): how long the
    /// first rebalance of an empty group waits for more members, so
    /// consumers started together land in one generation. Shorter here:
    /// eddy is mostly one machine where consumers start within moments.
    pub initial_rebalance_delay: Duration,
    /// Kafka's `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    /// The minimum is far below Kafka's 6 s so tests and local tools may
    /// use short sessions.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// Kafka's `offset.metadata.max.bytes`.
    pub max_metadata_bytes: usize,
    /// How often deadlines (sessions, rebalances) are checked: the
    /// precision of every timeout.
    pub tick: Duration,
    /// How long a group nobody is in is remembered in memory (its committed
    /// offsets stay in the log regardless).
    pub vacant_group_retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            initial_rebalance_delay: Duration::from_millis(300),
            min_session_timeout: Duration::from_millis(1),
            max_session_timeout: Duration::from_secs(30 * 60),
            max_metadata_bytes: 4096,
            tick: Duration::from_millis(50),
            vacant_group_retention: Duration::from_secs(10 * 60),
        }
    }
}

/// What the API files and the tick share.
struct Shared {
    log: Arc<Log>,
    settings: Settings,
    groups: Mutex<HashMap<String, Group>>,
}

impl Shared {
    fn groups(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // A panic while holding the lock leaves at worst one group in an odd
        // state; refusing every group operation from then on would be worse.
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tick(&self, now: Instant) {
        let retention = self.settings.vacant_group_retention;
        let mut groups = self.groups();
        for g in groups.values_mut() {
            g.tick(now);
        }
        groups.retain(|_, g| {
            g.state() != group::GroupState::Dead
                && g.vacant_since().is_none_or(|since| now < since + retention)
        });
    }
}

pub struct Coordinator {
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coordinator({} groups)", self.shared.groups().len())
    }
}

impl Coordinator {
    pub fn new(log: Arc<Log>) -> Coordinator {
        Coordinator::with_settings(log, Settings::default())
    }

    pub fn with_settings(log: Arc<Log>, settings: Settings) -> Coordinator {
        let c = Coordinator {
            shared: Arc::new(Shared {
                log,
                settings,
                groups: Mutex::new(HashMap::new()),
            }),
            ticker: Mutex::new(None),
        };
        c.ensure_ticker();
        c
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn log(&self) -> &Arc<Log> {
        &self.shared.log
    }

    /// Start the tick if it is not running. `new` may run outside a tokio
    /// runtime (and a runtime may end before the coordinator does), so every
    /// API call checks; the task holds only a weak reference and ends with
    /// the coordinator.
    fn ensure_ticker(&self) {
        let mut slot = self.ticker.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        let every = self.shared.settings.tick;
        *slot = Some(runtime.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.tick(Instant::now());
            }
        }));
    }

    /// Apply every passed deadline now, without waiting for the tick.
    pub fn tick(&self) {
        self.shared.tick(Instant::now());
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(h) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// A member id as Kafka makes them: `{client id or instance id}-{uuid}`.
fn new_member_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process and perturbed per
    // instance: with a counter it yields unique, unguessable-enough ids
    // without a random-number dependency.
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    };
    let (hi, lo) = (word(), word());
    // Shaped as a version-4 UUID.
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests;
