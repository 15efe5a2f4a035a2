//! One group's membership state machine: Kafka's classic group protocol as
//! its `GroupMetadata` and the rebalance logic of its `GroupCoordinator`
//! define it (states Empty → PreparingRebalance → CompletingRebalance →
//! Stable, generations, leader, protocol selection, static members).
//!
//! (About 1,270 lines, 210 of them tests: one state machine, whose
//! transitions are easier to check against Kafka's `GroupCoordinator` in
//! one file than spread over several.)
//!
//! Pure: no I/O and no clock of its own. Every operation is given `now`;
//! answers that must wait (a JoinGroup until the rebalance completes, a
//! SyncGroup until the leader's assignment arrives) are sent through the
//! oneshot channels the waiting members hold. Results are version-free; the
//! API files turn them into versioned responses.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A Kafka error code; 0 is success.
pub type ErrorCode = i16;

pub const NONE: ErrorCode = 0;

/// Kafka's `group.new.member.join.timeout.ms`: a member that joined during
/// a rebalance and whose JoinGroup is still unanswered this long is dropped
/// (its client is most likely gone).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How much longer than the group's own deadlines a waiting request may
/// wait before it gives up: only a bug could need it.
const WAIT_MARGIN: Duration = Duration::from_secs(10);

/// Whether a commit claims group membership (and must be checked against
/// the members) rather than being a simple commit.
fn is_member_commit(member_id: &str, instance: Option<&str>, generation_id: i32) -> bool {
    generation_id >= 0 || !member_id.is_empty() || instance.is_some()
}

/// An OffsetCommit for a group the coordinator has no members of in
/// memory: as Kafka, a simple commit is allowed, a generation means a
/// member of a generation that is gone, and a member id is unknown.
pub fn validate_commit_without_group(
    member_id: &str,
    instance: Option<&str>,
    generation_id: i32,
) -> ErrorCode {
    if generation_id >= 0 {
        ResponseError::IllegalGeneration.code()
    } else if is_member_commit(member_id, instance, generation_id) {
        ResponseError::UnknownMemberId.code()
    } else {
        NONE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups / ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, for the
    /// leader only (it computes the assignment); empty for followers.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(member_id: &str, error: ResponseError) -> JoinResult {
        JoinResult {
            error: error.code(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_string(),
            members: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: error.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// The answer to a request: now, or later through `rx`. `within` bounds the
/// wait (a safety net; the group answers before it in every path).
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Wait {
        rx: oneshot::Receiver<T>,
        within: Duration,
    },
}

/// A JoinGroup, version-free.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a dynamic member joining without an id is
    /// first handed one and must rejoin with it, so a client that times out
    /// and retries does not leave a ghost member behind.
    pub require_known_member_id: bool,
}

/// A SyncGroup, version-free.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol, while Stable (Kafka reports "" otherwise).
    pub protocol_data: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug)]
struct Member {
    id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    /// Joined during the current rebalance (not yet part of a generation).
    is_new: bool,
    awaiting_join: Option<oneshot::Sender<JoinResult>>,
    awaiting_sync: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(p, _)| p == protocol)
    }

    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|want| self.protocols.iter().find(|(p, _)| p == want))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Kafka's `shouldKeepAlive`: a member waiting on the coordinator is not
    /// expected to heartbeat (the rebalance and sync deadlines bound those
    /// waits instead).
    fn keep_alive(&self, now: Instant) -> bool {
        if self.awaiting_join.is_some() {
            !self.is_new || now < self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT
        } else if self.awaiting_sync.is_some() {
            true
        } else {
            now < self.last_heartbeat + self.session_timeout
        }
    }

    fn fail_waiters(&mut self, error: ResponseError) {
        if let Some(tx) = self.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(&self.id, error));
        }
        if let Some(tx) = self.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(error));
        }
    }
}

#[derive(Debug)]
struct Rebalance {
    /// The join phase ends at this instant even if members are missing.
    deadline: Instant,
    /// While a group that was Empty waits out the initial delay: how far
    /// new arrivals may push the deadline (the rebalance timeout).
    initial_cap: Option<Instant>,
}

#[derive(Debug)]
pub struct Group {
    initial_delay: Duration,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    /// In join order: the first is the leader unless it leaves.
    members: Vec<Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the instant they lapse
    /// if the client does not rejoin with them.
    pending_members: HashMap<String, Instant>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    sync_deadline: Option<Instant>,
    rebalance: Option<Rebalance>,
    empty_since: Option<Instant>,
}

impl Group {
    /// `initial_delay` is Kafka's `group.initial.rebalance.delay.ms`: how
    /// long the first rebalance of an empty group waits for more members.
    pub fn new(initial_delay: Duration, now: Instant) -> Group {
        Group {
            initial_delay,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            sync_deadline: None,
            rebalance: None,
            empty_since: Some(now),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    #[cfg(test)]
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    #[cfg(test)]
    pub fn member_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// No members, none about to join: the group only remembers offsets.
    pub fn is_vacant(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    /// Since when the group has been Empty and vacant, if it is.
    pub fn vacant_since(&self) -> Option<Instant> {
        if self.state == GroupState::Empty && self.is_vacant() {
            self.empty_since
        } else {
            None
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn has_member(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    fn is_leader(&self, id: &str) -> bool {
        self.leader_id.as_deref() == Some(id)
    }

    fn static_member_id(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }

    /// A static member whose instance id now belongs to another member id:
    /// an older incarnation of the same consumer, which must stop.
    fn is_static_member_fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.static_member_id(i))
            .is_some_and(|current| current != member_id)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// How long a request answered later may wait at most.
    fn wait_bound(&self) -> Duration {
        self.max_rebalance_timeout() + self.initial_delay + WAIT_MARGIN
    }

    /// Kafka's `supportsProtocols`: a joiner must share the group's protocol
    /// type and at least one protocol every current member supports.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(p, _)| self.members.iter().all(|m| m.supports(p)))
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports,
    /// each member votes for the one it prefers most; most votes wins (ties
    /// to the one listed first by the longest-standing member).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| self.members.iter().all(|m| m.supports(p)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| c == p))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, n) in votes.iter().enumerate() {
            if best.is_none_or(|(_, top)| *n > top) {
                best = Some((i, *n));
            }
        }
        best.map(|(i, _)| candidates[i].to_string())
    }

    // ---- JoinGroup ----

    /// `fresh_id` is the member id to hand out if this join needs a new one.
    pub fn join(&mut self, req: JoinRequest, fresh_id: String, now: Instant) -> Reply<JoinResult> {
        if self.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                &req.member_id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResult::error(
                &req.member_id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        if req.member_id.is_empty() {
            self.join_new_member(req, fresh_id, now)
        } else {
            self.join_known_member(req, now)
        }
    }

    fn join_new_member(&mut self, req: JoinRequest, id: String, now: Instant) -> Reply<JoinResult> {
        if let Some(instance) = req.group_instance_id.as_deref() {
            // Static members skip MEMBER_ID_REQUIRED: their instance id
            // already identifies them across restarts.
            if let Some(old) = self.static_member_id(instance).map(str::to_string) {
                return self.replace_static_member(&old, id, req, now);
            }
            return self.add_member_and_rebalance(id, req, now);
        }
        if req.require_known_member_id {
            self.pending_members
                .insert(id.clone(), now + req.session_timeout);
            return Reply::Now(JoinResult::error(&id, ResponseError::MemberIdRequired));
        }
        self.add_member_and_rebalance(id, req, now)
    }

    fn join_known_member(&mut self, req: JoinRequest, now: Instant) -> Reply<JoinResult> {
        let id = req.member_id.clone();
        if self.pending_members.contains_key(&id) {
            return self.add_member_and_rebalance(id, req, now);
        }
        let instance = req.group_instance_id.as_deref();
        if self.is_static_member_fenced(&id, instance) {
            return Reply::Now(JoinResult::error(&id, ResponseError::FencedInstanceId));
        }
        let instance_unknown = instance.is_some_and(|i| self.static_member_id(i).is_none());
        if !self.has_member(&id) || instance_unknown {
            return Reply::Now(JoinResult::error(&id, ResponseError::UnknownMemberId));
        }
        let unchanged = self.member(&id).is_some_and(|m| m.matches(&req.protocols));
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(req, now),
            // A retried JoinGroup whose response was lost: answer with the
            // generation it already belongs to.
            GroupState::CompletingRebalance if unchanged => {
                let leader = self.is_leader(&id);
                Reply::Now(self.current_join_result(&id, leader))
            }
            GroupState::CompletingRebalance => self.update_member_and_rebalance(req, now),
            // The leader rejoining means it wants a new assignment (e.g.
            // topic metadata changed); a follower with unchanged metadata
            // only needs to be told the current generation.
            GroupState::Stable if unchanged && !self.is_leader(&id) => {
                Reply::Now(self.current_join_result(&id, false))
            }
            GroupState::Stable => self.update_member_and_rebalance(req, now),
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResult::error(&id, ResponseError::UnknownMemberId))
            }
        }
    }

    fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        JoinResult {
            error: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.joined_members()
            } else {
                vec![]
            },
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        self.members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(self.protocol_name.as_deref()),
            })
            .collect()
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.pending_members.remove(&id);
        if self.leader_id.is_none() {
            self.leader_id = Some(id.clone());
        }
        self.members.push(Member {
            id,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: req.protocols,
            assignment: Bytes::new(),
            last_heartbeat: now,
            is_new: true,
            awaiting_join: Some(tx),
            awaiting_sync: None,
        });
        // Every newcomer during the initial delay buys the others another
        // delay, so consumers started together share the first generation.
        if self.state == GroupState::PreparingRebalance
            && let Some(r) = self.rebalance.as_mut()
            && let Some(cap) = r.initial_cap
        {
            r.deadline = (now + self.initial_delay).min(cap);
        }
        self.maybe_prepare_rebalance(now);
        self.try_complete_join(now);
        Reply::Wait {
            rx,
            within: self.wait_bound(),
        }
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now: Instant) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.member_mut(&req.member_id) {
            m.protocols = req.protocols;
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.last_heartbeat = now;
            // A second JoinGroup from the same member replaces the first:
            // its client gave up on that one.
            m.awaiting_join = Some(tx);
        }
        self.maybe_prepare_rebalance(now);
        self.try_complete_join(now);
        Reply::Wait {
            rx,
            within: self.wait_bound(),
        }
    }

    /// A static member restarted (it joins without a member id but with a
    /// known instance id): the new incarnation takes over the old one's
    /// place, and a Stable group keeps its assignment when it can.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        now: Instant,
    ) -> Reply<JoinResult> {
        let previous_leader = self.leader_id.clone().unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        let Some(m) = self.member_mut(old_id) else {
            return self.add_member_and_rebalance(new_id, req, now);
        };
        m.fail_waiters(ResponseError::FencedInstanceId);
        m.id = new_id.clone();
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.last_heartbeat = now;
        m.awaiting_join = Some(tx);
        if self.is_leader(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                // The previous leader id goes back, so a restarted leader
                // does not compute an assignment a Stable group would never
                // hand out; it syncs and gets its old assignment back.
                let mut result = self.current_join_result(&new_id, false);
                result.leader_id = previous_leader;
                if let Some(tx) = self
                    .member_mut(&new_id)
                    .and_then(|m| m.awaiting_join.take())
                {
                    let _ = tx.send(result);
                }
            }
            _ => {
                self.maybe_prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
        Reply::Wait {
            rx,
            within: self.wait_bound(),
        }
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now);
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being completed is void: members waiting in
            // SyncGroup must rejoin.
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.max_rebalance_timeout();
        self.rebalance = Some(if self.state == GroupState::Empty {
            Rebalance {
                deadline: now + self.initial_delay.min(timeout),
                initial_cap: Some(now + timeout),
            }
        } else {
            Rebalance {
                deadline: now + timeout,
                initial_cap: None,
            }
        });
        self.state = GroupState::PreparingRebalance;
        self.empty_since = None;
    }

    /// End the join phase once every member has rejoined (and nobody holds
    /// a MEMBER_ID_REQUIRED id still to come back), or at the deadline.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let (deadline, initial) = match &self.rebalance {
            Some(r) => (r.deadline, r.initial_cap.is_some()),
            None => (now, false),
        };
        let everyone_in = !initial
            && self.pending_members.is_empty()
            && self.members.iter().all(|m| m.awaiting_join.is_some());
        if everyone_in || self.is_vacant() || now >= deadline {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out.
        let (joined, gone): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.awaiting_join.is_some());
        for mut m in gone {
            m.fail_waiters(ResponseError::UnknownMemberId);
        }
        self.members = joined;
        if !self
            .leader_id
            .as_deref()
            .is_some_and(|l| self.has_member(l))
        {
            self.leader_id = self.members.first().map(|m| m.id.clone());
        }
        self.rebalance = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            self.empty_since = Some(now);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let everyone = self.joined_members();
        let leader = self.leader_id.clone().unwrap_or_default();
        for m in &mut self.members {
            m.is_new = false;
            m.last_heartbeat = now;
            let result = JoinResult {
                error: NONE,
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader_id: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader {
                    everyone.clone()
                } else {
                    vec![]
                },
            };
            if let Some(tx) = m.awaiting_join.take() {
                // A client that disconnected meanwhile never syncs; the sync
                // deadline removes it.
                let _ = tx.send(result);
            }
        }
        self.pending_sync = self.members.iter().map(|m| m.id.clone()).collect();
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
    }

    // ---- SyncGroup ----

    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> Reply<SyncResult> {
        let err = |e| Reply::Now(SyncResult::error(e));
        if self.state == GroupState::Dead {
            return err(ResponseError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(&req.member_id, req.group_instance_id.as_deref()) {
            return err(ResponseError::FencedInstanceId);
        }
        if !self.has_member(&req.member_id) {
            return err(ResponseError::UnknownMemberId);
        }
        if req.generation_id != self.generation_id {
            return err(ResponseError::IllegalGeneration);
        }
        if req
            .protocol_type
            .as_deref()
            .is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || req
                .protocol_name
                .as_deref()
                .is_some_and(|n| self.protocol_name.as_deref() != Some(n))
        {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.pending_sync.remove(&req.member_id);
                if let Some(m) = self.member_mut(&req.member_id) {
                    m.awaiting_sync = Some(tx);
                    m.last_heartbeat = now;
                }
                if self.is_leader(&req.member_id) {
                    self.apply_assignment(req.assignments);
                }
                Reply::Wait {
                    rx,
                    within: self.wait_bound(),
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let result = self.member_mut(&req.member_id).map(|m| {
                    m.last_heartbeat = now;
                    m.assignment.clone()
                });
                Reply::Now(self.sync_result(result.unwrap_or_default()))
            }
        }
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// The leader's SyncGroup: every member gets its part (members the
    /// leader left out get an empty one, as in Kafka), and the group is
    /// Stable.
    fn apply_assignment(&mut self, assignments: Vec<(String, Bytes)>) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in &mut self.members {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        let (protocol_type, protocol_name) =
            (self.protocol_type.clone(), self.protocol_name.clone());
        for m in &mut self.members {
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncResult {
                    error: NONE,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
    }

    // ---- Heartbeat ----

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if self.is_static_member_fenced(member_id, instance) {
            return ResponseError::FencedInstanceId.code();
        }
        if !self.has_member(member_id) {
            return ResponseError::UnknownMemberId.code();
        }
        if generation_id != self.generation_id {
            return ResponseError::IllegalGeneration.code();
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
            state => {
                if let Some(m) = self.member_mut(member_id) {
                    m.last_heartbeat = now;
                }
                if state == GroupState::PreparingRebalance {
                    // How members learn they must rejoin.
                    ResponseError::RebalanceInProgress.code()
                } else {
                    NONE
                }
            }
        }
    }

    // ---- LeaveGroup ----

    /// One leaving member. An empty `member_id` with an instance id is an
    /// administrative removal of that static member (KIP-345).
    pub fn leave(&mut self, member_id: &str, instance: Option<&str>, now: Instant) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if member_id.is_empty() {
            return match instance
                .and_then(|i| self.static_member_id(i))
                .map(str::to_string)
            {
                Some(current) => {
                    self.remove_member_and_update(&current, now);
                    NONE
                }
                None => ResponseError::UnknownMemberId.code(),
            };
        }
        if self.pending_members.remove(member_id).is_some() {
            self.try_complete_join(now);
            return NONE;
        }
        if self.is_static_member_fenced(member_id, instance) {
            return ResponseError::FencedInstanceId.code();
        }
        if self.has_member(member_id) {
            self.remove_member_and_update(member_id, now);
            return NONE;
        }
        ResponseError::UnknownMemberId.code()
    }

    /// Take a member out without reacting to it; true if it was there.
    fn detach_member(&mut self, id: &str) -> bool {
        let Some(pos) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        let mut m = self.members.remove(pos);
        m.fail_waiters(ResponseError::UnknownMemberId);
        self.pending_sync.remove(id);
        if self.is_leader(id) {
            self.leader_id = self.members.first().map(|m| m.id.clone());
        }
        true
    }

    fn remove_member_and_update(&mut self, id: &str, now: Instant) {
        if !self.detach_member(id) {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- OffsetCommit ----

    /// Whether this committer may commit offsets now (Kafka's
    /// `validateOffsetCommit`). A commit without generation, member id or
    /// instance id is a "simple" commit from a consumer that assigns itself
    /// partitions: fine while the group is Empty, refused while the group
    /// has members, which alone own its offsets then.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if is_member_commit(member_id, instance, generation_id) {
            if self.is_static_member_fenced(member_id, instance) {
                return ResponseError::FencedInstanceId.code();
            }
            if !self.has_member(member_id) {
                return ResponseError::UnknownMemberId.code();
            }
            if generation_id != self.generation_id {
                return ResponseError::IllegalGeneration.code();
            }
        } else if self.state != GroupState::Empty {
            return ResponseError::UnknownMemberId.code();
        }
        match self.state {
            GroupState::Empty => NONE,
            GroupState::Stable | GroupState::PreparingRebalance => {
                // Heartbeats tell members of a rebalance; their commits
                // still count until then.
                if let Some(m) = self.member_mut(member_id) {
                    m.last_heartbeat = now;
                }
                NONE
            }
            // The member has its JoinGroup answer but not its assignment yet.
            GroupState::CompletingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::Dead => ResponseError::CoordinatorNotAvailable.code(),
        }
    }

    // ---- time ----

    /// Apply every deadline that has passed: lapsed MEMBER_ID_REQUIRED ids,
    /// expired sessions, members that never sent SyncGroup, the end of the
    /// join phase.
    pub fn tick(&mut self, now: Instant) {
        let lapsed: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lapsed {
            self.pending_members.remove(id);
        }

        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.keep_alive(now))
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member_and_update(id, now);
        }

        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && !self.pending_sync.is_empty()
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            let laggards: Vec<String> = self.pending_sync.drain().collect();
            for id in &laggards {
                self.detach_member(id);
            }
            self.maybe_prepare_rebalance(now);
        }

        self.try_complete_join(now);
    }

    // ---- DescribeGroups ----

    pub fn summary(&self) -> GroupSummary {
        // Kafka shows metadata and assignments only for a Stable group:
        // in the other states they are in flux.
        let stable = self.state == GroupState::Stable;
        GroupSummary {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable {
                self.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: self
                .members
                .iter()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(self.protocol_name.as_deref())
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn req(member_id: &str, protocols: &[(&str, &str)]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: 10 * SECOND,
            rebalance_timeout: 30 * SECOND,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), Bytes::from(m.to_string())))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn waiting(r: Reply<JoinResult>) -> oneshot::Receiver<JoinResult> {
        match r {
            Reply::Wait { rx, .. } => rx,
            Reply::Now(r) => panic!("answered at once: {r:?}"),
        }
    }

    fn now_result<T: std::fmt::Debug>(r: Reply<T>) -> T {
        match r {
            Reply::Now(r) => r,
            Reply::Wait { .. } => panic!("expected an immediate answer"),
        }
    }

    #[test]
    fn protocol_chosen_by_votes_among_common_ones() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::from_millis(100), t0);
        let mut a = waiting(g.join(
            req("", &[("range", "a1"), ("roundrobin", "a2")]),
            "a".into(),
            t0,
        ));
        let mut b = waiting(g.join(
            req(
                "",
                &[("roundrobin", "b2"), ("sticky", "b3"), ("range", "b1")],
            ),
            "b".into(),
            t0,
        ));
        let mut c = waiting(g.join(
            req("", &[("roundrobin", "c2"), ("range", "c1")]),
            "c".into(),
            t0,
        ));
        // A protocol not every member supports cannot be joined with.
        let r = now_result(g.join(req("", &[("sticky", "d")]), "d".into(), t0));
        assert_eq!(r.error, ResponseError::InconsistentGroupProtocol.code());
        assert!(a.try_recv().is_err(), "initial delay still running");

        g.tick(t0 + Duration::from_millis(150));
        let (a, b, c) = (
            a.try_recv().expect("a answered"),
            b.try_recv().expect("b answered"),
            c.try_recv().expect("c answered"),
        );
        for r in [&a, &b, &c] {
            assert_eq!(r.error, NONE);
            assert_eq!(r.generation_id, 1);
            assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
            assert_eq!(r.leader_id, "a");
        }
        assert_eq!(a.members.len(), 3);
        assert_eq!(a.members[1].metadata, Bytes::from("b2"));
        assert!(b.members.is_empty() && c.members.is_empty());
        assert_eq!(g.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn initial_delay_is_extended_by_newcomers_up_to_the_rebalance_timeout() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(100);
        let mut g = Group::new(delay, t0);
        let mut r1 = req("", &[("range", "")]);
        r1.rebalance_timeout = Duration::from_millis(250);
        let mut a = waiting(g.join(r1.clone(), "a".into(), t0));
        let t1 = t0 + Duration::from_millis(90);
        let _b = waiting(g.join(r1.clone(), "b".into(), t1));
        g.tick(t0 + Duration::from_millis(120));
        assert!(a.try_recv().is_err(), "b's arrival extended the delay");
        let _c = waiting(g.join(r1, "c".into(), t0 + Duration::from_millis(180)));
        // Capped at the rebalance timeout (250 ms), not 180 + 100.
        g.tick(t0 + Duration::from_millis(251));
        let a = a.try_recv().expect("completed at the cap");
        assert_eq!(a.members.len(), 3);
    }

    #[test]
    fn static_member_restart_keeps_a_stable_assignment() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::ZERO, t0);
        let mut r = req("", &[("range", "m")]);
        r.group_instance_id = Some("i1".into());
        let mut a = waiting(g.join(r.clone(), "i1-x".into(), t0));
        g.tick(t0);
        let joined = a.try_recv().expect("joined");
        assert_eq!(joined.leader_id, "i1-x");
        let mut s = match g.sync(
            SyncRequest {
                member_id: "i1-x".into(),
                group_instance_id: Some("i1".into()),
                generation_id: 1,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![("i1-x".into(), Bytes::from("p0"))],
            },
            t0,
        ) {
            Reply::Wait { rx, .. } => rx,
            Reply::Now(r) => panic!("{r:?}"),
        };
        assert_eq!(s.try_recv().expect("synced").assignment, Bytes::from("p0"));

        // The restarted instance replaces the old member id, no rebalance.
        let mut again = waiting(g.join(r, "i1-y".into(), t0));
        let again = again.try_recv().expect("answered without a rebalance");
        assert_eq!(again.member_id, "i1-y");
        assert_eq!(again.generation_id, 1);
        assert_eq!(again.leader_id, "i1-x", "old leader id: no reassignment");
        assert_eq!(g.state(), GroupState::Stable);
        // The old incarnation is fenced.
        assert_eq!(
            g.heartbeat("i1-x", Some("i1"), 1, t0),
            ResponseError::FencedInstanceId.code()
        );
        let s = now_result(g.sync(
            SyncRequest {
                member_id: "i1-y".into(),
                group_instance_id: Some("i1".into()),
                generation_id: 1,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments: vec![],
            },
            t0,
        ));
        assert_eq!(s.assignment, Bytes::from("p0"));
    }

    #[test]
    fn members_that_never_sync_are_removed_at_the_sync_deadline() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::from_millis(10), t0);
        let mut a = waiting(g.join(req("", &[("range", "")]), "a".into(), t0));
        let mut b = waiting(g.join(req("", &[("range", "")]), "b".into(), t0));
        g.tick(t0 + Duration::from_millis(10));
        a.try_recv().expect("a joined");
        b.try_recv().expect("b joined");
        // Only b syncs; the leader a never does.
        let mut sb = match g.sync(
            SyncRequest {
                member_id: "b".into(),
                group_instance_id: None,
                generation_id: 1,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![],
            },
            t0,
        ) {
            Reply::Wait { rx, .. } => rx,
            Reply::Now(r) => panic!("{r:?}"),
        };
        g.tick(t0 + 31 * SECOND);
        assert_eq!(
            sb.try_recv().expect("b told").error,
            ResponseError::RebalanceInProgress.code()
        );
        assert_eq!(g.member_ids(), vec!["b".to_string()]);
        assert_eq!(g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn last_member_leaving_empties_the_group() {
        let t0 = Instant::now();
        let mut g = Group::new(Duration::ZERO, t0);
        let mut a = waiting(g.join(req("", &[("range", "")]), "a".into(), t0));
        g.tick(t0);
        assert_eq!(a.try_recv().expect("joined").generation_id, 1);
        assert_eq!(g.leave("a", None, t0), NONE);
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.generation_id(), 2);
        assert!(g.is_vacant());
        assert_eq!(
            g.leave("a", None, t0),
            ResponseError::UnknownMemberId.code()
        );
        // Simple commits are fine on an Empty group, member commits not.
        assert_eq!(g.validate_commit("", None, -1, t0), NONE);
        assert_eq!(
            g.validate_commit("a", None, 1, t0),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            g.validate_commit("a", None, -1, t0),
            ResponseError::UnknownMemberId.code()
        );
    }
}
