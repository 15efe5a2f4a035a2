//! Tests of the coordinator through the methods the dispatcher calls, with
//! request structs as decoded from the wire, on a real log in a temporary
//! directory. Every response produced is also encoded at the version it
//! was produced for, which is what a client would receive.
//!
//! (About 980 lines: tests only, one scenario of the group protocol each.)

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use tempfile::TempDir;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::{Coordinator, Settings};
use crate::kafka::{BrokerConfig, RequestContext, SUPPORTED, str_bytes};
use crate::log::{Log, LogOptions, LogStore};

const OK: i16 = 0;

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn fast() -> Settings {
    Settings {
        initial_rebalance_delay: Duration::from_millis(50),
        tick: Duration::from_millis(10),
        ..Settings::default()
    }
}

struct Fixture {
    dir: TempDir,
    log: Arc<Log>,
    c: Arc<Coordinator>,
}

fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        LogOptions {
            cleaner_interval: None,
        },
    )
    .expect("open log");
    log.create_topic("orders", 3, Default::default())
        .expect("create topic");
    let c = Arc::new(Coordinator::with_settings(Arc::clone(&log), fast()));
    Fixture { dir, log, c }
}

fn ctx(client: &str, v: i16) -> RequestContext {
    RequestContext {
        client_id: client.to_string(),
        client_host: "127.0.0.1".to_string(),
        api_version: v,
        principal: None,
    }
}

/// What a client would be sent: encoding must not fail.
fn encoded<T: Encodable + std::fmt::Debug>(msg: &T, v: i16) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, v)
        .unwrap_or_else(|e| panic!("encoding at v{v} failed: {e}: {msg:?}"));
}

fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, lo, hi) = SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .expect("advertised");
    *lo..=*hi
}

fn join_req(
    group: &str,
    member_id: &str,
    client: &str,
    v: i16,
    session_ms: i32,
    rebalance_ms: i32,
) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default()
        .with_group_id(str_bytes(group).into())
        .with_session_timeout_ms(session_ms)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(str_bytes("range"))
                .with_metadata(Bytes::from(format!("meta-{client}"))),
        ]);
    if v >= 1 {
        r.rebalance_timeout_ms = rebalance_ms;
    }
    r
}

/// A consumer's join, the MEMBER_ID_REQUIRED round trip (v4+) included.
async fn join(
    c: &Coordinator,
    group: &str,
    client: &str,
    member_id: &str,
    v: i16,
    session_ms: i32,
    rebalance_ms: i32,
) -> JoinGroupResponse {
    let ctx = ctx(client, v);
    let req = join_req(group, member_id, client, v, session_ms, rebalance_ms);
    let mut resp = c.join_group(req, &ctx).await;
    encoded(&resp, v);
    if resp.error_code == code(ResponseError::MemberIdRequired) {
        assert!(v >= 4, "MEMBER_ID_REQUIRED only for v4+");
        assert!(resp.member_id.starts_with(&format!("{client}-")));
        let id = resp.member_id.to_string();
        let req = join_req(group, &id, client, v, session_ms, rebalance_ms);
        resp = c.join_group(req, &ctx).await;
        encoded(&resp, v);
    }
    resp
}

/// `clients` join together; their final responses, in `clients` order.
async fn join_all(
    c: &Arc<Coordinator>,
    group: &str,
    clients: &[&str],
    v: i16,
    session_ms: i32,
    rebalance_ms: i32,
) -> Vec<JoinGroupResponse> {
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let (c, group, client) = (Arc::clone(c), group.to_string(), client.to_string());
        set.spawn(async move {
            let r = join(&c, &group, &client, "", v, session_ms, rebalance_ms).await;
            (i, r)
        });
    }
    let mut out: Vec<Option<JoinGroupResponse>> = clients.iter().map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (i, r) = done.expect("join task");
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.expect("answered")).collect()
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    v: i16,
    assignments: &[(String, Bytes)],
) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default()
        .with_group_id(str_bytes(group).into())
        .with_generation_id(generation)
        .with_member_id(str_bytes(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(m))
                        .with_assignment(a.clone())
                })
                .collect(),
        );
    if v >= 5 {
        r.protocol_type = Some(str_bytes("consumer"));
        r.protocol_name = Some(str_bytes("range"));
    }
    r
}

async fn sync(
    c: &Coordinator,
    group: &str,
    member: &str,
    generation: i32,
    v: i16,
    assignments: &[(String, Bytes)],
) -> SyncGroupResponse {
    let resp = c
        .sync_group(
            sync_req(group, member, generation, v, assignments),
            &ctx("t", v),
        )
        .await;
    encoded(&resp, v);
    resp
}

fn assignment_for(member: &str) -> Bytes {
    Bytes::from(format!("to-{member}"))
}

/// Every member syncs (followers first, the leader last, as happens when
/// the leader is busy computing); returns each member's assignment.
async fn sync_all(
    c: &Arc<Coordinator>,
    group: &str,
    joined: &[JoinGroupResponse],
    v: i16,
) -> Vec<Bytes> {
    let leader = joined
        .iter()
        .find(|r| r.member_id == r.leader)
        .expect("a leader");
    let plan: Vec<(String, Bytes)> = leader
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), assignment_for(&m.member_id)))
        .collect();
    let mut set = JoinSet::new();
    for (i, r) in joined.iter().enumerate() {
        let is_leader = r.member_id == r.leader;
        let (c, group, member, generation) = (
            Arc::clone(c),
            group.to_string(),
            r.member_id.to_string(),
            r.generation_id,
        );
        let plan = if is_leader { plan.clone() } else { vec![] };
        set.spawn(async move {
            if is_leader {
                sleep(Duration::from_millis(30)).await;
            }
            (i, sync(&c, &group, &member, generation, v, &plan).await)
        });
    }
    let mut out: Vec<Bytes> = joined.iter().map(|_| Bytes::new()).collect();
    while let Some(done) = set.join_next().await {
        let (i, r) = done.expect("sync task");
        assert_eq!(r.error_code, OK, "sync of member {i}");
        out[i] = r.assignment;
    }
    out
}

fn heartbeat(c: &Coordinator, group: &str, member: &str, generation: i32, v: i16) -> i16 {
    let r = HeartbeatRequest::default()
        .with_group_id(str_bytes(group).into())
        .with_generation_id(generation)
        .with_member_id(str_bytes(member));
    let resp = c.heartbeat(r, &ctx("t", v));
    encoded(&resp, v);
    resp.error_code
}

fn describe(c: &Coordinator, group: &str, v: i16) -> describe_groups_response::DescribedGroup {
    let r = DescribeGroupsRequest::default().with_groups(vec![str_bytes(group).into()]);
    let resp = c.describe_groups(r, &ctx("t", v));
    encoded(&resp, v);
    resp.groups.into_iter().next().expect("one group")
}

fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_metadata(Some(str_bytes(&format!("m{o}"))));
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(str_bytes(t).into())
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(str_bytes(group).into())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member))
        .with_topics(topics)
}

/// Every partition's error code, in request order.
fn commit(c: &Coordinator, r: OffsetCommitRequest, v: i16) -> Vec<i16> {
    let resp = c.offset_commit(r, &ctx("t", v));
    encoded(&resp, v);
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

fn fetch(
    c: &Coordinator,
    group: &str,
    topics: Option<&[(&str, &[i32])]>,
    v: i16,
) -> Vec<(String, i32, i64, String)> {
    let r = OffsetFetchRequest::default()
        .with_group_id(str_bytes(group).into())
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(str_bytes(t).into())
                        .with_partition_indexes(ps.to_vec())
                })
                .collect()
        }));
    let resp = c.offset_fetch(r, &ctx("t", v));
    encoded(&resp, v);
    assert_eq!(resp.error_code, OK);
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                assert_eq!(p.error_code, OK);
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

fn leave(c: &Coordinator, group: &str, members: &[&str], v: i16) -> LeaveGroupResponse {
    let mut r = LeaveGroupRequest::default().with_group_id(str_bytes(group).into());
    if v >= 3 {
        r.members = members
            .iter()
            .map(|m| MemberIdentity::default().with_member_id(str_bytes(m)))
            .collect();
    } else {
        r.member_id = str_bytes(members[0]);
    }
    let resp = c.leave_group(r, &ctx("t", v));
    encoded(&resp, v);
    resp
}

#[tokio::test]
async fn two_members_share_one_generation_and_one_leader() {
    let f = setup();
    let r = join_all(&f.c, "g", &["alice", "bob"], 7, 10_000, 5_000).await;
    let (a, b) = (&r[0], &r[1]);
    for x in [a, b] {
        assert_eq!(x.error_code, OK);
        assert_eq!(x.generation_id, 1);
        assert_eq!(x.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(x.protocol_name.as_deref(), Some("range"));
    }
    assert_eq!(a.leader, b.leader);
    assert_eq!(a.leader, a.member_id, "the first to join leads");
    assert_ne!(a.member_id, b.member_id);
    assert_eq!(a.members.len(), 2, "the leader sees every member");
    assert!(b.members.is_empty(), "followers see none");
    let metas: Vec<&[u8]> = a.members.iter().map(|m| m.metadata.as_ref()).collect();
    assert_eq!(metas, vec![b"meta-alice".as_ref(), b"meta-bob".as_ref()]);
    assert_eq!(
        describe(&f.c, "g", 5).group_state.as_str(),
        "CompletingRebalance"
    );
}

#[tokio::test]
async fn sync_hands_out_the_leaders_assignment() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice", "bob"], 5, 10_000, 5_000).await;
    let got = sync_all(&f.c, "g", &joined, 5).await;
    assert_eq!(got[0], assignment_for(&joined[0].member_id));
    assert_eq!(got[1], assignment_for(&joined[1].member_id));

    let d = describe(&f.c, "g", 5);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert_eq!(d.protocol_data.as_str(), "range");
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[1].member_assignment, got[1]);
    assert_eq!(d.members[1].client_id.as_str(), "bob");
    assert_eq!(d.members[1].member_metadata.as_ref(), b"meta-bob");

    // A repeated SyncGroup in a Stable group gets the same assignment.
    let again = sync(&f.c, "g", &joined[1].member_id, 1, 5, &[]).await;
    assert_eq!(again.assignment, got[1]);
    assert_eq!(again.protocol_name.as_deref(), Some("range"));
    // Wrong generation / unknown member.
    let stale = sync(&f.c, "g", &joined[1].member_id, 0, 3, &[]).await;
    assert_eq!(stale.error_code, code(ResponseError::IllegalGeneration));
    let stranger = sync(&f.c, "g", "nobody", 1, 3, &[]).await;
    assert_eq!(stranger.error_code, code(ResponseError::UnknownMemberId));
    let no_group = sync(&f.c, "other", "nobody", 1, 0, &[]).await;
    assert_eq!(no_group.error_code, code(ResponseError::UnknownMemberId));
}

#[tokio::test]
async fn heartbeat_during_a_rebalance_asks_members_to_rejoin() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice", "bob"], 7, 10_000, 5_000).await;
    sync_all(&f.c, "g", &joined, 5).await;
    let (a, b) = (
        joined[0].member_id.to_string(),
        joined[1].member_id.to_string(),
    );
    assert_eq!(heartbeat(&f.c, "g", &a, 1, 4), OK);

    // A third consumer arrives: its join waits for the others to rejoin.
    let c = Arc::clone(&f.c);
    let carol = tokio::spawn(async move { join(&c, "g", "carol", "", 7, 10_000, 5_000).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while describe(&f.c, "g", 5).group_state.as_str() != "PreparingRebalance" {
        assert!(
            Instant::now() < deadline,
            "carol's join did not start a rebalance"
        );
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        heartbeat(&f.c, "g", &a, 1, 4),
        code(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        heartbeat(&f.c, "g", &b, 1, 0),
        code(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        heartbeat(&f.c, "g", &b, 7, 2),
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        heartbeat(&f.c, "g", "ghost", 1, 2),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        heartbeat(&f.c, "nope", &a, 1, 2),
        code(ResponseError::UnknownMemberId)
    );

    let (ra, rb) = tokio::join!(
        join(&f.c, "g", "alice", &a, 7, 10_000, 5_000),
        join(&f.c, "g", "bob", &b, 7, 10_000, 5_000)
    );
    let rc = carol.await.expect("carol");
    for r in [&ra, &rb, &rc] {
        assert_eq!(r.error_code, OK);
        assert_eq!(r.generation_id, 2);
        assert_eq!(
            r.leader.as_str(),
            a,
            "the leader stays while it is a member"
        );
    }
    assert_eq!(ra.members.len(), 3);
    // Generation 2 is being completed: heartbeats are fine.
    assert_eq!(heartbeat(&f.c, "g", &b, 2, 4), OK);
}

#[tokio::test]
async fn a_silent_member_expires_and_the_survivor_rebalances_alone() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice", "bob"], 7, 600, 2_000).await;
    sync_all(&f.c, "g", &joined, 5).await;
    let (a, b) = (
        joined[0].member_id.to_string(),
        joined[1].member_id.to_string(),
    );

    // Alice keeps heartbeating, Bob goes quiet.
    let started = Instant::now();
    loop {
        let e = heartbeat(&f.c, "g", &a, 1, 4);
        if e == code(ResponseError::RebalanceInProgress) {
            break;
        }
        assert_eq!(e, OK);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bob never expired"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "expired too early"
    );
    let r = join(&f.c, "g", "alice", &a, 7, 600, 2_000).await;
    assert_eq!(r.error_code, OK);
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.leader.as_str(), a);
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].member_id.as_str(), a);
    assert_eq!(
        heartbeat(&f.c, "g", &b, 1, 4),
        code(ResponseError::UnknownMemberId)
    );
}

#[tokio::test]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice", "bob"], 4, 10_000, 400).await;
    sync_all(&f.c, "g", &joined, 4).await;
    let a = joined[0].member_id.to_string();
    // The leader rejoining starts a rebalance; Bob never rejoins.
    let started = Instant::now();
    let r = join(&f.c, "g", "alice", &a, 4, 10_000, 400).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
    let bob = heartbeat(&f.c, "g", &joined[1].member_id, 1, 4);
    assert_eq!(bob, code(ResponseError::UnknownMemberId));
}

#[tokio::test]
async fn leaving_triggers_a_rebalance() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice", "bob"], 7, 10_000, 5_000).await;
    sync_all(&f.c, "g", &joined, 5).await;
    let (a, b) = (
        joined[0].member_id.to_string(),
        joined[1].member_id.to_string(),
    );

    let resp = leave(&f.c, "g", &[&b, "ghost"], 4);
    assert_eq!(resp.error_code, OK);
    let codes: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![OK, code(ResponseError::UnknownMemberId)]);
    assert_eq!(
        heartbeat(&f.c, "g", &a, 1, 4),
        code(ResponseError::RebalanceInProgress)
    );
    let r = join(&f.c, "g", "alice", &a, 7, 10_000, 5_000).await;
    assert_eq!((r.generation_id, r.members.len()), (2, 1));

    // Before v3, the one member's error is the response's.
    let old = leave(&f.c, "g", &["ghost"], 0);
    assert_eq!(old.error_code, code(ResponseError::UnknownMemberId));
    let unknown_group = leave(&f.c, "nope", &["x"], 3);
    assert_eq!(unknown_group.error_code, OK);
    assert_eq!(
        unknown_group.members[0].error_code,
        code(ResponseError::UnknownMemberId)
    );

    // The last one out leaves the group Empty.
    assert_eq!(leave(&f.c, "g", &[&a], 1).error_code, OK);
    let d = describe(&f.c, "g", 0);
    assert_eq!(d.group_state.as_str(), "Empty");
    assert!(d.members.is_empty());
}

#[tokio::test]
async fn offsets_round_trip_and_survive_reopening_the_log() {
    let f = setup();
    let codes = commit(
        &f.c,
        commit_req(
            "g",
            "",
            -1,
            &[
                ("orders", 0, 42),
                ("orders", 1, 7),
                ("nope", 0, 1),
                ("orders", 9, 1),
            ],
        ),
        8,
    );
    let unknown = code(ResponseError::UnknownTopicOrPartition);
    assert_eq!(codes, vec![OK, OK, unknown, unknown]);

    let got = fetch(&f.c, "g", Some(&[("orders", &[0, 1, 2])]), 7);
    assert_eq!(
        got,
        vec![
            ("orders".to_string(), 0, 42, "m42".to_string()),
            ("orders".to_string(), 1, 7, "m7".to_string()),
            ("orders".to_string(), 2, -1, String::new()),
        ]
    );
    // v2+: null topics means everything the group committed.
    let all = fetch(&f.c, "g", None, 2);
    assert_eq!(all.len(), 2);
    assert_eq!(fetch(&f.c, "other", None, 7), vec![]);
    assert_eq!(fetch(&f.c, "other", Some(&[("orders", &[0])]), 1)[0].2, -1);

    // Leader epoch (v6+ commit, v5+ fetch) is kept.
    let mut r = commit_req("g", "", -1, &[("orders", 2, 5)]);
    r.topics[0].partitions[0].committed_leader_epoch = 3;
    assert_eq!(commit(&f.c, r, 6), vec![OK]);
    let e = f.log.committed_offset("g", "orders", 2).expect("committed");
    assert_eq!((e.offset, e.leader_epoch), (5, 3));

    // Metadata over offset.metadata.max.bytes is refused.
    let mut r = commit_req("g", "", -1, &[("orders", 2, 6)]);
    r.topics[0].partitions[0].committed_metadata = Some(str_bytes(&"x".repeat(5000)));
    assert_eq!(
        commit(&f.c, r, 2),
        vec![code(ResponseError::OffsetMetadataTooLarge)]
    );

    let Fixture { dir, log, c } = f;
    drop(c);
    log.close().expect("close");
    drop(log);
    let log = Log::open(
        dir.path(),
        LogOptions {
            cleaner_interval: None,
        },
    )
    .expect("reopen");
    let c = Coordinator::with_settings(Arc::clone(&log), fast());
    let got = fetch(&c, "g", Some(&[("orders", &[0, 2])]), 3);
    assert_eq!(got[0].2, 42);
    assert_eq!(got[1].2, 5);
    // Known only by its offsets: listed and described as Empty.
    assert_eq!(describe(&c, "g", 1).group_state.as_str(), "Empty");
    let listed = c.list_groups(ListGroupsRequest::default(), &ctx("t", 0));
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].protocol_type.as_str(), "consumer");
}

#[tokio::test]
async fn commits_are_checked_against_the_generation() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice"], 7, 10_000, 5_000).await;
    let a = joined[0].member_id.to_string();
    // Joined but not synced: the group is completing its rebalance.
    let codes = commit(&f.c, commit_req("g", &a, 1, &[("orders", 0, 1)]), 8);
    assert_eq!(codes, vec![code(ResponseError::RebalanceInProgress)]);
    sync_all(&f.c, "g", &joined, 5).await;

    let cases = [
        (a.as_str(), 5, code(ResponseError::IllegalGeneration)),
        ("ghost", 1, code(ResponseError::UnknownMemberId)),
        // A simple commit into a group with live members, as Kafka.
        ("", -1, code(ResponseError::UnknownMemberId)),
        (a.as_str(), 1, OK),
    ];
    for (member, generation, want) in cases {
        let codes = commit(
            &f.c,
            commit_req("g", member, generation, &[("orders", 0, 10)]),
            7,
        );
        assert_eq!(
            codes,
            vec![want],
            "member {member:?} generation {generation}"
        );
    }
    assert_eq!(fetch(&f.c, "g", Some(&[("orders", &[0])]), 6)[0].2, 10);
    // A generation for a group that does not exist (any more).
    let codes = commit(&f.c, commit_req("gone", "m", 3, &[("orders", 0, 1)]), 5);
    assert_eq!(codes, vec![code(ResponseError::IllegalGeneration)]);
    // A member id without generation, for a group with no members.
    let codes = commit(&f.c, commit_req("gone", "m", -1, &[("orders", 0, 1)]), 5);
    assert_eq!(codes, vec![code(ResponseError::UnknownMemberId)]);
    // Unknown partitions are reported before the group is looked at.
    let codes = commit(&f.c, commit_req("g", "ghost", 9, &[("nope", 0, 1)]), 5);
    assert_eq!(codes, vec![code(ResponseError::UnknownTopicOrPartition)]);
}

#[tokio::test]
async fn groups_are_listed_and_described() {
    let f = setup();
    let joined = join_all(&f.c, "active", &["alice"], 7, 10_000, 5_000).await;
    sync_all(&f.c, "active", &joined, 5).await;
    assert_eq!(
        commit(&f.c, commit_req("parked", "", -1, &[("orders", 0, 3)]), 8),
        vec![OK]
    );

    let all = f.c.list_groups(ListGroupsRequest::default(), &ctx("t", 3));
    encoded(&all, 3);
    let names: Vec<&str> = all.groups.iter().map(|g| g.group_id.0.as_str()).collect();
    assert_eq!(names, vec!["active", "parked"]);

    let stable = f.c.list_groups(
        ListGroupsRequest::default().with_states_filter(vec![str_bytes("Stable")]),
        &ctx("t", 4),
    );
    encoded(&stable, 4);
    assert_eq!(stable.groups.len(), 1);
    assert_eq!(stable.groups[0].group_state.as_str(), "Stable");
    let empty = f.c.list_groups(
        ListGroupsRequest::default().with_states_filter(vec![str_bytes("empty")]),
        &ctx("t", 4),
    );
    assert_eq!(empty.groups[0].group_id.0.as_str(), "parked");

    let d = describe(&f.c, "parked", 5);
    assert_eq!((d.error_code, d.group_state.as_str()), (OK, "Empty"));
    let d = describe(&f.c, "never", 5);
    assert_eq!((d.error_code, d.group_state.as_str()), (OK, "Dead"));
    let d = describe(&f.c, "active", 2);
    assert_eq!(d.members[0].client_host.as_str(), "127.0.0.1");
}

#[tokio::test]
async fn deleting_a_group_needs_it_empty_and_removes_its_offsets() {
    let f = setup();
    let joined = join_all(&f.c, "g", &["alice"], 7, 10_000, 5_000).await;
    sync_all(&f.c, "g", &joined, 5).await;
    let a = joined[0].member_id.to_string();
    assert_eq!(
        commit(&f.c, commit_req("g", &a, 1, &[("orders", 0, 3)]), 8),
        vec![OK]
    );
    assert_eq!(f.c.delete_group("g"), code(ResponseError::NonEmptyGroup));
    leave(&f.c, "g", &[&a], 4);
    assert_eq!(f.c.delete_group("g"), OK);
    assert!(f.log.group_offsets("g").is_empty());
    assert_eq!(f.c.delete_group("g"), code(ResponseError::GroupIdNotFound));
    assert_eq!(describe(&f.c, "g", 5).group_state.as_str(), "Dead");
}

#[tokio::test]
async fn find_coordinator_names_this_node_for_every_key() {
    let f = setup();
    let config = BrokerConfig {
        node_id: 7,
        advertised_host: "kafka.local".into(),
        advertised_port: 19092,
        ..BrokerConfig::default()
    };
    for v in versions(ApiKey::FindCoordinator) {
        let mut r = FindCoordinatorRequest::default();
        if v >= 4 {
            r.coordinator_keys = vec![str_bytes("g1"), str_bytes("g2")];
        } else {
            r.key = str_bytes("g1");
        }
        if v >= 1 {
            r.key_type = 1;
        }
        let resp = f.c.find_coordinator(&config, r, &ctx("t", v));
        encoded(&resp, v);
        if v >= 4 {
            assert_eq!(resp.coordinators.len(), 2);
            for c in &resp.coordinators {
                assert_eq!((c.error_code, c.node_id.0, c.port), (OK, 7, 19092));
                assert_eq!(c.host.as_str(), "kafka.local");
            }
            assert_eq!(resp.coordinators[1].key.as_str(), "g2");
        } else {
            assert_eq!((resp.error_code, resp.node_id.0, resp.port), (OK, 7, 19092));
            assert_eq!(resp.host.as_str(), "kafka.local");
        }
        if v >= 1 {
            let bad = FindCoordinatorRequest::default()
                .with_key_type(5)
                .with_key(if v < 4 { str_bytes("g") } else { str_bytes("") })
                .with_coordinator_keys(if v >= 4 { vec![str_bytes("g")] } else { vec![] });
            let resp = f.c.find_coordinator(&config, bad, &ctx("t", v));
            encoded(&resp, v);
            let err = if v >= 4 {
                resp.coordinators[0].error_code
            } else {
                resp.error_code
            };
            assert_eq!(err, code(ResponseError::InvalidRequest));
        }
    }
}

/// Drive every API at every advertised version through success and error
/// paths; `encoded` (called by every helper) fails the test on any field
/// the version cannot carry.
#[tokio::test]
async fn every_response_encodes_at_every_supported_version() {
    let f = setup();
    let config = BrokerConfig::default();
    for v in versions(ApiKey::JoinGroup) {
        let group = format!("enc-{v}");
        let joined = join_all(&f.c, &group, &["a", "b"], v, 10_000, 5_000).await;
        assert!(
            joined.iter().all(|r| r.error_code == OK),
            "v{v}: {joined:?}"
        );
        assert_eq!(joined[0].members.len(), 2);
        let sync_v = v.min(*versions(ApiKey::SyncGroup).end());
        sync_all(&f.c, &group, &joined, sync_v).await;
        // Errors: invalid group id, bad session timeout, unknown member.
        for (req, want) in [
            (
                join_req("", "", "a", v, 10_000, 5_000),
                ResponseError::InvalidGroupId,
            ),
            (
                join_req(&group, "", "a", v, 0, 5_000),
                ResponseError::InvalidSessionTimeout,
            ),
            (
                join_req(&group, "who", "a", v, 10_000, 5_000),
                ResponseError::UnknownMemberId,
            ),
        ] {
            let resp = f.c.join_group(req, &ctx("a", v)).await;
            encoded(&resp, v);
            assert_eq!(resp.error_code, want.code(), "v{v}");
        }
        // A static member (v5+) shows its instance id to the leader.
        if v >= 5 {
            let mut req = join_req(&format!("static-{v}"), "", "s", v, 10_000, 5_000);
            req.group_instance_id = Some(str_bytes("instance-1"));
            let resp = f.c.join_group(req, &ctx("s", v)).await;
            encoded(&resp, v);
            assert_eq!(resp.error_code, OK);
            assert_eq!(
                resp.members[0].group_instance_id.as_deref(),
                Some("instance-1")
            );
        }
    }
    let joined = join_all(&f.c, "enc", &["a", "b"], 7, 10_000, 5_000).await;
    let (a, b) = (
        joined[0].member_id.to_string(),
        joined[1].member_id.to_string(),
    );
    for v in versions(ApiKey::SyncGroup) {
        sync(&f.c, "enc", &a, 99, v, &[]).await;
        sync(&f.c, "", &a, 1, v, &[]).await;
    }
    sync_all(&f.c, "enc", &joined, 5).await;
    for v in versions(ApiKey::SyncGroup) {
        let r = sync(&f.c, "enc", &b, 1, v, &[]).await;
        assert_eq!(r.assignment, assignment_for(&b));
    }
    for v in versions(ApiKey::Heartbeat) {
        assert_eq!(heartbeat(&f.c, "enc", &a, 1, v), OK);
        heartbeat(&f.c, "enc", &a, 9, v);
        heartbeat(&f.c, "", &a, 1, v);
    }
    for v in versions(ApiKey::DescribeGroups) {
        for g in ["enc", "enc-5", "nope"] {
            let r = DescribeGroupsRequest::default()
                .with_groups(vec![str_bytes(g).into()])
                .with_include_authorized_operations(v >= 3);
            let resp = f.c.describe_groups(r, &ctx("t", v));
            encoded(&resp, v);
        }
        let d = describe(&f.c, "enc-5", v);
        assert_eq!(d.members.len(), 2);
        assert_eq!(
            d.members[0].member_assignment,
            assignment_for(&d.members[0].member_id)
        );
    }
    assert_eq!(
        commit(&f.c, commit_req("enc", &a, 1, &[("orders", 0, 1)]), 8),
        vec![OK]
    );
    for v in versions(ApiKey::OffsetCommit) {
        let offsets = [("orders", 0, 5), ("orders", 1, 6), ("nope", 0, 1)];
        commit(&f.c, commit_req("enc", &a, 1, &offsets), v);
        commit(&f.c, commit_req("enc", &a, 2, &offsets), v);
        commit(&f.c, commit_req("simple", "", -1, &offsets), v);
    }
    for v in versions(ApiKey::OffsetFetch) {
        let got = fetch(
            &f.c,
            "enc",
            Some(&[("orders", &[0, 1, 2]), ("nope", &[0])]),
            v,
        );
        assert_eq!(got.len(), 4);
        if v >= 2 {
            assert_eq!(fetch(&f.c, "simple", None, v).len(), 2);
        }
    }
    for v in versions(ApiKey::ListGroups) {
        let mut r = ListGroupsRequest::default();
        if v >= 4 {
            r.states_filter = vec![str_bytes("Stable"), str_bytes("Empty")];
        }
        let resp = f.c.list_groups(r, &ctx("t", v));
        encoded(&resp, v);
        assert!(
            resp.groups
                .iter()
                .any(|g| g.group_id.0.as_str() == "simple")
        );
    }
    for v in versions(ApiKey::FindCoordinator) {
        let mut r = FindCoordinatorRequest::default();
        if v >= 4 {
            r.coordinator_keys = vec![str_bytes("enc")];
        } else {
            r.key = str_bytes("enc");
        }
        encoded(&f.c.find_coordinator(&config, r, &ctx("t", v)), v);
    }
    for v in versions(ApiKey::LeaveGroup) {
        leave(&f.c, "enc", &["ghost"], v);
        leave(&f.c, "", &["ghost"], v);
        leave(&f.c, "nope", &["ghost"], v);
    }
    assert_eq!(leave(&f.c, "enc", &[&b], 3).members[0].error_code, OK);
    for v in 0..=2 {
        let r = DeleteGroupsRequest::default()
            .with_groups_names(vec![str_bytes("simple").into(), str_bytes("enc").into()]);
        encoded(&f.c.delete_groups(r, &ctx("t", v)), v);
    }
}

#[tokio::test]
async fn join_future_is_send_and_dropping_the_coordinator_stops_its_tick() {
    fn assert_send<T: Send>(_: &T) {}
    let f = setup();
    let ctx = ctx("a", 7);
    let fut =
        f.c.join_group(join_req("g", "", "a", 7, 10_000, 5_000), &ctx);
    assert_send(&fut);
    drop(fut);
    let fut = f.c.sync_group(sync_req("g", "a", 1, 5, &[]), &ctx);
    assert_send(&fut);
    drop(fut);

    let c = Arc::try_unwrap(f.c).expect("sole owner");
    let shared = Arc::downgrade(&c.shared);
    drop(c);
    sleep(Duration::from_millis(30)).await;
    assert!(
        shared.upgrade().is_none(),
        "tick task keeps no strong reference"
    );
    assert_eq!(Arc::strong_count(&f.log), 1, "the log is released");
}

#[test]
fn member_ids_are_prefixed_and_unique() {
    let a = super::new_member_id("client");
    let b = super::new_member_id("client");
    assert!(a.starts_with("client-"));
    assert_eq!(a.len(), "client-".len() + 36);
    assert_ne!(a, b);
}

#[test]
fn new_works_outside_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        LogOptions {
            cleaner_interval: None,
        },
    )
    .expect("open log");
    let c = Coordinator::new(log);
    assert!(c.ticker.lock().expect("lock").is_none());
    let resp = c.heartbeat(HeartbeatRequest::default(), &ctx("t", 0));
    assert_eq!(resp.error_code, code(ResponseError::InvalidGroupId));
}
