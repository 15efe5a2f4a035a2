//! Interoperability with librdkafka (the C client under confluent-kafka,
//! kcat and most non-Java clients), through the `rdkafka` crate, against a
//! real eddy server over real sockets:
//!
//! - keyed produce with acks=all to a 6-partition topic created with the
//!   admin API, consumed by a consumer group that commits, stops, and a new
//!   consumer of the same group resumes exactly after the committed offsets;
//! - two consumers of one group split the partitions; when one leaves, the
//!   other takes over all partitions and continues from the committed
//!   offsets, with every record consumed exactly once overall;
//! - `auto.offset.reset` earliest and latest as Kafka documents them;
//! - idempotent producer.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::TestServer;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client")
}

fn create_topic(addr: &str, name: &str, partitions: i32) {
    let admin = admin(addr);
    let res = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
    ))
    .expect("create_topics request");
    for r in res {
        r.expect("topic created");
    }
}

fn producer(addr: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

fn produce(addr: &str, topic: &str, from: usize, n: usize, extra: &[(&str, &str)]) {
    let p = producer(addr, extra);
    for i in from..from + n {
        let key = format!("key-{}", i % 97);
        let value = format!("value-{i}");
        loop {
            match p.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30))
        .expect("all records acknowledged");
}

fn consumer(addr: &str, group: &str, reset: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", reset)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

/// Poll until `pred` over the values consumed so far holds or time runs out.
fn consume_until(
    c: &BaseConsumer,
    got: &mut Vec<(i32, i64, String)>,
    timeout: Duration,
    mut stop: impl FnMut(&[(i32, i64, String)]) -> bool,
    commit_each: bool,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !stop(got) {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("message without error");
            let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            got.push((m.partition(), m.offset(), v));
            if commit_each {
                c.commit_message(&m, CommitMode::Sync).expect("commit");
            }
        }
    }
}

#[test]
fn keyed_acks_all_group_commit_and_resume() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    create_topic(&addr, "orders", 6);
    produce(&addr, "orders", 0, 6000, &[]);

    // Every partition got data (keys spread) and the log holds 6000 records.
    let log = server.log().clone();
    let mut total = 0;
    for p in 0..6 {
        let end = log.partition("orders", p).unwrap().log_end();
        assert!(end > 0, "partition {p} is empty");
        total += end;
    }
    assert_eq!(total, 6000);

    let mut first = Vec::new();
    {
        let c = consumer(&addr, "g1", "earliest");
        c.subscribe(&["orders"]).unwrap();
        consume_until(
            &c,
            &mut first,
            Duration::from_secs(30),
            |g| g.len() >= 2500,
            false,
        );
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
    }
    assert!(first.len() >= 2500, "consumed only {}", first.len());

    // The committed offsets are exactly the positions after what was consumed.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &first {
        let e = next.entry(*p).or_default();
        *e = (*e).max(o + 1);
    }
    for (p, o) in &next {
        let c = log
            .offset_store()
            .fetch("g1", "orders", *p)
            .expect("committed");
        assert_eq!(c.offset, *o, "partition {p}");
    }
    // The same commits, with lag, in eddy_catalog.consumer_groups over SQL.
    let sql_view: BTreeMap<i32, (i64, i64)> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pg = common::slt::connect(server.pg_addr).await;
            pg.query(
                "SELECT partition, committed_offset, lag FROM eddy_catalog.consumer_groups \
                 WHERE group_id = 'g1' AND topic = 'orders'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), (r.get(1), r.get(2))))
            .collect()
        });
    let expected: BTreeMap<i32, (i64, i64)> = next
        .iter()
        .map(|(p, o)| (*p, (*o, log.partition("orders", *p).unwrap().log_end() - o)))
        .collect();
    assert_eq!(sql_view, expected);

    let mut second = Vec::new();
    {
        let c = consumer(&addr, "g1", "earliest");
        c.subscribe(&["orders"]).unwrap();
        let need = 6000 - first.len();
        consume_until(
            &c,
            &mut second,
            Duration::from_secs(30),
            |g| g.len() >= need,
            false,
        );
        // Nothing more arrives.
        consume_until(&c, &mut second, Duration::from_secs(2), |_| false, false);
    }
    let mut all: Vec<String> = first.iter().chain(&second).map(|x| x.2.clone()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a record was consumed twice");
    assert_eq!(n, 6000, "every record consumed exactly once");
    // Resumed exactly after the commit: the second consumer starts at the
    // committed offset of every partition it read.
    for (p, o, _) in &second {
        if let Some(c) = next.get(p) {
            assert!(o >= c, "partition {p}: re-read offset {o} below commit {c}");
        }
    }
}

#[test]
fn two_consumers_split_then_one_takes_over() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    create_topic(&addr, "events", 6);
    produce(&addr, "events", 0, 600, &[]);

    let a = consumer(&addr, "split", "earliest");
    let b = consumer(&addr, "split", "earliest");
    a.subscribe(&["events"]).unwrap();
    b.subscribe(&["events"]).unwrap();
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    // Poll both until the group settles with partitions split between them.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        consume_until(&a, &mut got_a, Duration::from_millis(200), |_| false, true);
        consume_until(&b, &mut got_b, Duration::from_millis(200), |_| false, true);
        let (na, nb) = (
            a.assignment().unwrap().count(),
            b.assignment().unwrap().count(),
        );
        if na == 3 && nb == 3 && !got_a.is_empty() && !got_b.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group did not split: {na} + {nb} partitions"
        );
    }
    let pa: BTreeSet<i32> = a
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    let pb: BTreeSet<i32> = b
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    assert!(pa.is_disjoint(&pb));

    // B leaves; A must take over all six partitions, continue from B's
    // committed offsets, and read what is produced afterwards too.
    drop(b);
    produce(&addr, "events", 600, 300, &[]);
    let got_b_len = got_b.len();
    consume_until(
        &a,
        &mut got_a,
        Duration::from_secs(40),
        |g| g.len() + got_b_len >= 900 && a.assignment().unwrap().count() == 6,
        true,
    );
    assert_eq!(a.assignment().unwrap().count(), 6);
    let mut all: Vec<String> = got_a.iter().chain(&got_b).map(|x| x.2.clone()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        n,
        "a record was consumed twice across the takeover"
    );
    assert_eq!(n, 900);
}

#[test]
fn auto_offset_reset_earliest_and_latest() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    create_topic(&addr, "resets", 1);
    produce(&addr, "resets", 0, 10, &[]);

    let latest = consumer(&addr, "late", "latest");
    latest.subscribe(&["resets"]).unwrap();
    let mut got_latest = Vec::new();
    // Wait until assigned and positioned at the end.
    let deadline = Instant::now() + Duration::from_secs(20);
    while latest.assignment().unwrap().count() == 0 && Instant::now() < deadline {
        consume_until(
            &latest,
            &mut got_latest,
            Duration::from_millis(200),
            |_| false,
            false,
        );
    }
    consume_until(
        &latest,
        &mut got_latest,
        Duration::from_secs(2),
        |_| false,
        false,
    );
    assert!(
        got_latest.is_empty(),
        "latest consumer saw old records: {got_latest:?}"
    );

    produce(&addr, "resets", 10, 5, &[]);
    consume_until(
        &latest,
        &mut got_latest,
        Duration::from_secs(20),
        |g| g.len() >= 5,
        false,
    );
    let values: Vec<&str> = got_latest.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(
        values,
        vec!["value-10", "value-11", "value-12", "value-13", "value-14"]
    );

    let earliest = consumer(&addr, "early", "earliest");
    earliest.subscribe(&["resets"]).unwrap();
    let mut got = Vec::new();
    consume_until(
        &earliest,
        &mut got,
        Duration::from_secs(20),
        |g| g.len() >= 15,
        false,
    );
    assert_eq!(got.len(), 15);
    assert_eq!(got[0].2, "value-0");
}

#[test]
fn idempotent_producer_writes_each_record_once() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    create_topic(&addr, "idem", 3);
    produce(&addr, "idem", 0, 3000, &[("enable.idempotence", "true")]);
    let log = server.log().clone();
    let mut total = 0;
    for p in 0..3 {
        let part = log.partition("idem", p).unwrap();
        total += part.log_end();
        // The batches carry the producer id librdkafka got from InitProducerId.
        let headers = part.headers(0).unwrap();
        assert!(headers.iter().all(|h| h.producer_id >= 0));
    }
    assert_eq!(total, 3000);
}

/// DeleteRecords through librdkafka's AdminClient: records below the
/// offset are gone for consumers, ListOffsets and SQL alike, the new start
/// survives a restart, whole segments below it are removed, and an offset
/// past the end is refused (OFFSET_OUT_OF_RANGE) without changing anything.
#[test]
fn delete_records_moves_the_log_start() {
    use rdkafka::{Offset, TopicPartitionList};
    let mut server = TestServer::start();
    let addr = server.addr.clone();
    // Small segments, so the deletion reaches whole ones.
    let a = admin(&addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic =
        NewTopic::new("trimmed", 1, TopicReplication::Fixed(1)).set("segment.bytes", "2048");
    for r in rt
        .block_on(a.create_topics([&topic], &AdminOptions::new()))
        .unwrap()
    {
        r.expect("topic created");
    }
    // Ten flushed batches: segments roll between them.
    for i in 0..10 {
        produce(&addr, "trimmed", i * 20, 20, &[]);
    }
    let segments = |server: &TestServer| {
        server
            .log()
            .partition("trimmed", 0)
            .unwrap()
            .segment_count()
    };
    let before = segments(&server);
    assert!(before > 2, "{before} segments");

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("trimmed", 0, Offset::Offset(150))
        .unwrap();
    let result = rt
        .block_on(a.delete_records(&tpl, &AdminOptions::new()))
        .unwrap();
    let e = result.elements_for_topic("trimmed");
    assert_eq!(e[0].error(), Ok(()));
    assert_eq!(e[0].offset(), Offset::Offset(150), "the new low watermark");
    assert!(
        segments(&server) < before,
        "segments below the start removed"
    );

    let check = |addr: &str, group: &str| {
        let c = consumer(addr, group, "earliest");
        let (low, high) = c
            .fetch_watermarks("trimmed", 0, Duration::from_secs(10))
            .unwrap();
        assert_eq!((low, high), (150, 200));
        c.subscribe(&["trimmed"]).unwrap();
        let mut got = Vec::new();
        consume_until(
            &c,
            &mut got,
            Duration::from_secs(20),
            |g| g.len() >= 50,
            false,
        );
        assert_eq!(got.len(), 50);
        assert_eq!((got[0].1, got[0].2.as_str()), (150, "value-150"));
    };
    check(&addr, "after-delete");

    // Past the end: refused, nothing changed.
    let mut past = TopicPartitionList::new();
    past.add_partition_offset("trimmed", 0, Offset::Offset(500))
        .unwrap();
    let result = rt
        .block_on(a.delete_records(&past, &AdminOptions::new()))
        .unwrap();
    assert!(result.elements_for_topic("trimmed")[0].error().is_err());
    drop(a);

    server.restart();
    check(&server.addr.clone(), "after-restart");
}
