//! Views and tables never lose or invent a row, under concurrent load and
//! `kill -9`.
//!
//! A real `eddy serve` process (checkpoints every few hundred ms, so they
//! fire during the load) holds a JSON stream `events` over four
//! partitions, an upsert table `accounts` (PRIMARY KEY) over the topic
//! `accounts`, and materialized views over them: a GROUP BY count/sum over
//! the stream, a count/sum and a GROUP BY over the table, a stream–table
//! join and filters. Four writers load them at once:
//!
//! - a librdkafka producer (idempotent, acks=all) writing JSON events, keyed
//!   and keyless, with a few records that do not decode;
//! - a librdkafka producer upserting accounts by key, updating existing
//!   keys, writing tombstones and a few records that do not decode (not
//!   JSON, a text for an int, a NULL primary key);
//! - `COPY … FROM STDIN` of 20,000–35,000 rows at a time into both;
//! - multi-row INSERTs (1,000–4,000 rows a statement) into both, and now
//!   and then a DELETE from the table.
//!
//! Every cycle loads for a while, stops the writers and checks the live
//! server; then loads again and kills the server with SIGKILL at a random
//! moment, restarts it over the same data directory and checks again (the
//! restarts restore the last checkpoint and replay the log after it,
//! except the second, which finds no checkpoint and rebuilds everything
//! from the log).
//! A check waits for the views to catch up, then reads both topics back
//! from the beginning with librdkafka and computes, in this file, what each
//! relation must hold: the stream's rows, the table as the upsert of its
//! changelog (tombstones and `eddy.diff` retractions delete a key, records
//! that do not decode are skipped) and each view's result. It checks that
//!
//! - every write acknowledged to the test (a delivery report with its
//!   offset, a COPY or INSERT that returned) is in its topic, at the offset
//!   reported for Kafka writes; every record in the topics is one the test
//!   wrote (nothing invented, nothing twice);
//! - `SELECT` of the stream and of the table equals that computation;
//! - every view equals its defining query run as a plain SELECT, and the
//!   test's own computation.
//!
//! Every failure found is collected and all are reported at the end, with
//! the numbers the run exercised (rows loaded by each path, cycles, kills,
//! checkpoints seen, relations restored at start). `EDDY_INTEGRITY_SEED`
//! replays a run's random choices (not its timing).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::slt::connect;
use futures::SinkExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serve::Serve;
use tokio_postgres::SimpleQueryMessage;

const EVENTS: &str = "events";
const ACCOUNTS: &str = "accounts";
/// Account ids are drawn from 0..ACCOUNT_KEYS; events' `k` from a little
/// more, so some events join no account.
const ACCOUNT_KEYS: i64 = 40_000;
const EVENT_KEYS: i64 = 48_000;
/// Cycles of (load, live check, load, kill -9, restart, check).
const CYCLES: usize = 4;
const CHECKPOINT_INTERVAL_MS: &str = "400";
/// No cycle starts after this long: a server slowed down by a bug (a table
/// re-reading its changelog every tick, say) must not keep CI waiting.
const TIME_BUDGET: Duration = Duration::from_secs(120);

const SCHEMA: &str = "
    CREATE STREAM events (id bigint, k int, v int, src text)
        WITH (topic = 'events', partitions = 4, format = 'json');
    CREATE TABLE accounts (id int PRIMARY KEY, grp int, bal bigint, w bigint)
        WITH (topic = 'accounts');";

/// (view, defining query).
const VIEWS: &[(&str, &str)] = &[
    (
        "ev_by_k",
        "SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k",
    ),
    ("ev_big", "SELECT id, k FROM events WHERE v >= 990"),
    (
        "acct_totals",
        "SELECT count(*) AS n, sum(bal) AS total FROM accounts",
    ),
    (
        "acct_by_grp",
        "SELECT grp, count(*) AS n, sum(bal) AS total FROM accounts GROUP BY grp",
    ),
    ("rich", "SELECT id, bal FROM accounts WHERE bal >= 900"),
    (
        "ev_acct",
        "SELECT e.id, e.v, a.grp FROM events e JOIN accounts a ON e.k = a.id",
    ),
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------------- ledger --

/// A record a Kafka producer sent.
#[derive(Clone)]
struct KafkaWrite {
    topic: &'static str,
    key: Option<String>,
    value: Option<String>,
}

/// What the test wrote, and which writes were acknowledged.
#[derive(Default)]
struct Ledger {
    /// Kafka writes by write number.
    kafka: HashMap<usize, KafkaWrite>,
    /// Acknowledged Kafka writes: (write number, partition, offset).
    kafka_acked: Vec<(usize, i32, i64)>,
    /// Event ids written (any path) and acknowledged.
    events_attempted: HashSet<i64>,
    events_acked: HashSet<i64>,
    /// Account writes (their `w`) written, with the path that wrote them,
    /// and those acknowledged.
    accounts_attempted: HashMap<i64, &'static str>,
    accounts_acked: HashSet<i64>,
    /// Rows acknowledged, by path.
    acked_by_path: BTreeMap<&'static str, u64>,
    /// Rows or records sent but not acknowledged, by path.
    unacked_by_path: BTreeMap<&'static str, u64>,
}

impl Ledger {
    fn acked(&mut self, path: &'static str, n: u64) {
        *self.acked_by_path.entry(path).or_default() += n;
    }

    fn unacked(&mut self, path: &'static str, n: u64) {
        *self.unacked_by_path.entry(path).or_default() += n;
    }
}

type SharedLedger = Arc<Mutex<Ledger>>;

/// Ids for events, account writes (`w`) and Kafka writes, unique over the run.
static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn next_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

// ------------------------------------------------------------ writers --

/// Delivery reports go to the ledger.
struct Reports {
    ledger: SharedLedger,
    failed: AtomicU64,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, w: usize) {
        let mut l = self.ledger.lock().unwrap();
        match result {
            Ok(m) => {
                l.kafka_acked.push((w, m.partition(), m.offset()));
                let write = l.kafka[&w].clone();
                let path = if write.topic == EVENTS {
                    if let Some(id) = write.value.as_deref().and_then(event_id) {
                        l.events_acked.insert(id);
                    }
                    "kafka events"
                } else {
                    if let Some(w) = write.value.as_deref().and_then(account_w) {
                        l.accounts_acked.insert(w);
                    }
                    "kafka accounts"
                };
                l.acked(path, 1);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let path = if l.kafka[&w].topic == EVENTS {
                    "kafka events"
                } else {
                    "kafka accounts"
                };
                l.unacked(path, 1);
            }
        }
    }
}

/// A stream row (id, k, v, src) as eddy must decode the value: None for a
/// value that does not decode (not JSON, a field of the wrong type).
fn event_row(value: &str) -> Option<(i64, i64, i64, String)> {
    let j: serde_json::Value = serde_json::from_str(value).ok()?;
    Some((
        j["id"].as_i64()?,
        j["k"].as_i64()?,
        j["v"].as_i64()?,
        j["src"].as_str()?.to_string(),
    ))
}

/// A table row (id, grp, bal, w): None for a value that does not decode
/// or has no primary key (a NULL `id` violates the key's NOT NULL).
fn account_row(value: &str) -> Option<(i64, i64, i64, i64)> {
    let j: serde_json::Value = serde_json::from_str(value).ok()?;
    Some((
        j["id"].as_i64()?,
        j["grp"].as_i64()?,
        j["bal"].as_i64()?,
        j["w"].as_i64()?,
    ))
}

/// The id of an event that decodes (one that does not is no row).
fn event_id(value: &str) -> Option<i64> {
    event_row(value).map(|r| r.0)
}

fn account_w(value: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(value).ok()?["w"].as_i64()
}

fn event_json(id: i64, k: i64, v: i64, src: &str) -> String {
    format!(r#"{{"id":{id},"k":{k},"v":{v},"src":"{src}"}}"#)
}

/// A Kafka producer thread writing into `topic` until `stop`.
fn kafka_writer(
    kafka: String,
    topic: &'static str,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let p: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Small batches for the changelog: many appends racing the reads.
        .set("linger.ms", if topic == EVENTS { "2" } else { "0" })
        .set("message.timeout.ms", "4000")
        .create_with_context(Reports {
            ledger: Arc::clone(&ledger),
            failed: AtomicU64::new(0),
        })
        .expect("producer");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let w = next_id();
        let write = if topic == EVENTS {
            let k = rng.random_range(0..EVENT_KEYS);
            let key = (rng.random_range(0..4) != 0).then(|| k.to_string());
            let value = match rng.random_range(0..300) {
                0 => format!(r#"{{"id":{w},"k":"#), // cut off: not JSON
                1 => format!(r#"{{"id":{w},"k":"many","v":1,"src":"kafka"}}"#),
                _ => event_json(w, k, rng.random_range(0..1000), "kafka"),
            };
            KafkaWrite {
                topic,
                key,
                value: Some(value),
            }
        } else {
            let id = rng.random_range(0..ACCOUNT_KEYS);
            let value = match rng.random_range(0..100) {
                0..=9 => None, // tombstone
                // Values that do not decode: cut off, a text for an int,
                // a NULL primary key.
                10 => Some(format!(r#"{{"id":{id},"grp":"#)),
                11 => Some(format!(r#"{{"id":{id},"grp":"x","bal":1,"w":{w}}}"#)),
                12 => Some(format!(r#"{{"id":null,"grp":1,"bal":1,"w":{w}}}"#)),
                _ => Some(format!(
                    r#"{{"id":{id},"grp":{},"bal":{},"w":{w}}}"#,
                    rng.random_range(0..20),
                    rng.random_range(0..1000)
                )),
            };
            KafkaWrite {
                topic,
                key: Some(id.to_string()),
                value,
            }
        };
        {
            let mut l = ledger.lock().unwrap();
            l.kafka.insert(w as usize, write.clone());
            if let Some(v) = write.value.as_deref() {
                if topic == EVENTS {
                    if let Some(id) = event_id(v) {
                        l.events_attempted.insert(id);
                    }
                } else if let Some(aw) = account_w(v) {
                    l.accounts_attempted.insert(aw, "kafka accounts");
                }
            }
        }
        let mut rec = BaseRecord::<str, str, usize>::with_opaque_to(topic, w as usize);
        if let Some(k) = write.key.as_deref() {
            rec = rec.key(k);
        }
        if let Some(v) = write.value.as_deref() {
            rec = rec.payload(v);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(5));
                    if stop.load(Ordering::Relaxed) {
                        // Not sent at all: neither attempted nor acked.
                        let mut l = ledger.lock().unwrap();
                        let path = if topic == EVENTS {
                            "kafka events"
                        } else {
                            "kafka accounts"
                        };
                        l.unacked(path, 1);
                        return;
                    }
                }
            }
        }
        sent += 1;
        p.poll(Duration::ZERO);
        // A few thousand records a second per producer.
        if sent.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Wait for the reports of what is in flight (a killed server fails
    // them after message.timeout.ms).
    let _ = p.flush(Duration::from_secs(6));
}

/// Rows for the stream: (id, k, v) with fresh ids.
fn event_rows(rng: &mut StdRng, n: usize) -> Vec<(i64, i64, i64)> {
    (0..n)
        .map(|_| {
            (
                next_id(),
                rng.random_range(0..EVENT_KEYS),
                rng.random_range(0..1000),
            )
        })
        .collect()
}

/// Rows for the table: (id, grp, bal, w), ids distinct within the batch.
fn account_rows(rng: &mut StdRng, n: usize) -> Vec<(i64, i64, i64, i64)> {
    let ids = rand::seq::index::sample(rng, ACCOUNT_KEYS as usize, n);
    ids.into_iter()
        .map(|id| {
            (
                id as i64,
                rng.random_range(0..20),
                rng.random_range(0..1000),
                next_id(),
            )
        })
        .collect()
}

/// COPY FROM STDIN batches and multi-row INSERTs over pgwire until `stop`.
fn sql_writer(
    pg: std::net::SocketAddr,
    copy: bool,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    rt().block_on(async move {
        let c = connect(pg).await;
        let mut rng = StdRng::seed_from_u64(seed);
        let (events_path, accounts_path) = if copy {
            ("copy events", "copy accounts")
        } else {
            ("insert events", "insert accounts")
        };
        while !stop.load(Ordering::Relaxed) {
            if copy {
                // A pause between batches keeps the data a debug build
                // checks in a few seconds.
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
            }
            // COPY: 40% events, 60% accounts (large appends to the one
            // changelog partition the producer writes too). INSERT: 50%
            // events, 40% accounts, 10% DELETE.
            let pick = rng.random_range(0..10);
            if pick < 4 || (!copy && pick < 5) {
                let n = if copy {
                    rng.random_range(20_000..25_000)
                } else {
                    rng.random_range(1_000..4_000)
                };
                let src = if copy { "copy" } else { "insert" };
                let rows = event_rows(&mut rng, n);
                {
                    let mut l = ledger.lock().unwrap();
                    l.events_attempted.extend(rows.iter().map(|r| r.0));
                }
                let res = if copy {
                    let mut data = String::new();
                    for (id, k, v) in &rows {
                        data.push_str(&format!("{id},{k},{v},{src}\n"));
                    }
                    copy_in(
                        &c,
                        "COPY events (id, k, v, src) FROM STDIN WITH (FORMAT csv)",
                        data,
                    )
                    .await
                } else {
                    let values: Vec<String> = rows
                        .iter()
                        .map(|(id, k, v)| format!("({id}, {k}, {v}, '{src}')"))
                        .collect();
                    c.simple_query(&format!("INSERT INTO events VALUES {}", values.join(", ")))
                        .await
                        .map(|_| n as u64)
                };
                let mut l = ledger.lock().unwrap();
                match res {
                    Ok(got) => {
                        assert_eq!(got, n as u64, "{events_path}: rows reported");
                        l.events_acked.extend(rows.iter().map(|r| r.0));
                        l.acked(events_path, n as u64);
                    }
                    Err(e) => {
                        l.unacked(events_path, n as u64);
                        if e.as_db_error().is_some() {
                            panic!("{events_path}: {e}");
                        }
                        return; // the server is gone
                    }
                }
            } else if pick < 9 || copy {
                let n = if copy {
                    rng.random_range(20_000..35_000)
                } else {
                    rng.random_range(1_000..3_000)
                };
                let rows = account_rows(&mut rng, n);
                {
                    let mut l = ledger.lock().unwrap();
                    l.accounts_attempted
                        .extend(rows.iter().map(|r| (r.3, accounts_path)));
                }
                let res = if copy {
                    let mut data = String::new();
                    for (id, g, b, w) in &rows {
                        data.push_str(&format!("{id}\t{g}\t{b}\t{w}\n"));
                    }
                    copy_in(&c, "COPY accounts FROM STDIN", data).await
                } else {
                    let values: Vec<String> = rows
                        .iter()
                        .map(|(id, g, b, w)| format!("({id}, {g}, {b}, {w})"))
                        .collect();
                    c.simple_query(&format!(
                        "INSERT INTO accounts VALUES {}",
                        values.join(", ")
                    ))
                    .await
                    .map(|_| n as u64)
                };
                let mut l = ledger.lock().unwrap();
                match res {
                    Ok(got) => {
                        assert_eq!(got, n as u64, "{accounts_path}: rows reported");
                        l.accounts_acked.extend(rows.iter().map(|r| r.3));
                        l.acked(accounts_path, n as u64);
                    }
                    Err(e) => {
                        l.unacked(accounts_path, n as u64);
                        if e.as_db_error().is_some() {
                            panic!("{accounts_path}: {e}");
                        }
                        return;
                    }
                }
            } else {
                // A DELETE (tombstones written by eddy itself).
                let sql = format!(
                    "DELETE FROM accounts WHERE id % 211 = {}",
                    rng.random_range(0..211)
                );
                match c.simple_query(&sql).await {
                    Ok(_) => ledger.lock().unwrap().acked("sql deletes (statements)", 1),
                    Err(e) if e.as_db_error().is_some() => panic!("{sql}: {e}"),
                    Err(_) => return,
                }
            }
        }
    });
}

async fn copy_in(
    c: &tokio_postgres::Client,
    sql: &str,
    data: String,
) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in::<_, bytes::Bytes>(sql).await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.finish().await
}

/// Distinct checkpoints seen (by `written_at`) while polling until `stop`.
fn checkpoint_watcher(
    pg: std::net::SocketAddr,
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    rt().block_on(async move {
        let c = connect(pg).await;
        while !stop.load(Ordering::Relaxed) {
            let Ok(msgs) = c
                .simple_query("SELECT DISTINCT written_at FROM eddy_catalog.checkpoints")
                .await
            else {
                return;
            };
            for m in msgs {
                if let SimpleQueryMessage::Row(r) = m {
                    seen.lock()
                        .unwrap()
                        .insert(r.get(0).unwrap_or("").to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// The writers of one load phase.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(
        server: &Serve,
        ledger: &SharedLedger,
        checkpoints: &Arc<Mutex<BTreeSet<String>>>,
        rng: &mut StdRng,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for topic in [EVENTS, ACCOUNTS] {
            let (kafka, ledger, stop, seed) = (
                server.kafka.clone(),
                Arc::clone(ledger),
                Arc::clone(&stop),
                rng.random(),
            );
            threads.push(std::thread::spawn(move || {
                kafka_writer(kafka, topic, ledger, stop, seed)
            }));
        }
        for copy in [true, false] {
            let (pg, ledger, stop, seed) = (
                server.pg,
                Arc::clone(ledger),
                Arc::clone(&stop),
                rng.random(),
            );
            threads.push(std::thread::spawn(move || {
                sql_writer(pg, copy, ledger, stop, seed)
            }));
        }
        let (pg, seen, stop_w) = (server.pg, Arc::clone(checkpoints), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            checkpoint_watcher(pg, seen, stop_w)
        }));
        Load { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
    }
}

// ---------------------------------------------------- reading the log --

struct Record {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    diff: i64,
}

/// Every record of `topic`, from the beginning, through librdkafka.
fn read_topic(kafka: &str, topic: &str) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", "integrity-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for p in 0..partitions {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if hi > lo {
            high.insert(p, hi);
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while high
        .iter()
        .any(|(p, hi)| at.get(p).is_none_or(|o| o + 1 < *hi))
    {
        assert!(Instant::now() < deadline, "reading {topic} back timed out");
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let diff = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "eddy.diff")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            })
            .unwrap_or(1);
        at.insert(m.partition(), m.offset());
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            diff,
        });
    }
    out
}

/// What the relations must hold, computed from the topics.
struct Model {
    /// Stream rows: (id, k, v, src).
    events: Vec<(i64, i64, i64, String)>,
    /// The table: key → (id, grp, bal, w).
    accounts: BTreeMap<String, (i64, i64, i64, i64)>,
    event_records: usize,
    account_records: usize,
    bad_records: usize,
}

fn model(events: &[Record], accounts: &[Record]) -> Model {
    let mut m = Model {
        events: Vec::new(),
        accounts: BTreeMap::new(),
        event_records: events.len(),
        account_records: accounts.len(),
        bad_records: 0,
    };
    for r in events {
        match r.value.as_deref().and_then(event_row) {
            Some(row) => m.events.push(row),
            None => m.bad_records += 1,
        }
    }
    let mut sorted: Vec<&Record> = accounts.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        let row = match r.value.as_deref() {
            None => None, // a tombstone
            Some(v) => match account_row(v) {
                Some(row) => Some(row),
                None => {
                    m.bad_records += 1;
                    continue; // skipped: the key keeps its row
                }
            },
        };
        let key = match (&r.key, row) {
            (Some(k), _) => k.clone(),
            (None, Some((id, ..))) => id.to_string(),
            (None, None) => {
                m.bad_records += 1;
                continue;
            }
        };
        match row {
            Some(row) if r.diff > 0 => {
                m.accounts.insert(key, row);
            }
            _ => {
                m.accounts.remove(&key);
            }
        }
    }
    m
}

// ------------------------------------------------------------ checking --

/// Rows of a simple query, cells joined by tabs, sorted; or the error.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let msgs = c
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })?;
    let mut out: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("\t"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// How two sorted multisets of rows differ, or None.
fn diff(got: &[String], want: &[String]) -> Option<String> {
    if got == want {
        return None;
    }
    let mut count: HashMap<&str, i64> = HashMap::new();
    for r in got {
        *count.entry(r).or_default() += 1;
    }
    for r in want {
        *count.entry(r).or_default() -= 1;
    }
    let mut extra: Vec<&str> = count
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, _)| *r)
        .collect();
    let mut missing: Vec<&str> = count
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(r, _)| *r)
        .collect();
    extra.sort();
    missing.sort();
    let n_extra: i64 = count.values().filter(|n| **n > 0).sum();
    let n_missing: i64 = -count.values().filter(|n| **n < 0).sum::<i64>();
    Some(format!(
        "{} rows, want {}: {n_missing} missing (e.g. {:?}), {n_extra} extra (e.g. {:?})",
        got.len(),
        want.len(),
        &missing[..missing.len().min(4)],
        &extra[..extra.len().min(4)],
    ))
}

/// The views' results as computed from the model, sorted.
fn expected_views(m: &Model) -> HashMap<&'static str, Vec<String>> {
    let mut out: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut by_k: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (_, k, v, _) in &m.events {
        let e = by_k.entry(*k).or_default();
        e.0 += 1;
        e.1 += v;
    }
    out.insert(
        "ev_by_k",
        by_k.iter()
            .map(|(k, (n, s))| format!("{k}\t{n}\t{s}"))
            .collect(),
    );
    out.insert(
        "ev_big",
        m.events
            .iter()
            .filter(|e| e.2 >= 990)
            .map(|(id, k, ..)| format!("{id}\t{k}"))
            .collect(),
    );
    let n = m.accounts.len();
    let total: i64 = m.accounts.values().map(|a| a.2).sum();
    out.insert(
        "acct_totals",
        vec![if n == 0 {
            "0\tNULL".to_string()
        } else {
            format!("{n}\t{total}")
        }],
    );
    let mut by_grp: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (_, g, b, _) in m.accounts.values() {
        let e = by_grp.entry(*g).or_default();
        e.0 += 1;
        e.1 += b;
    }
    out.insert(
        "acct_by_grp",
        by_grp
            .iter()
            .map(|(g, (n, s))| format!("{g}\t{n}\t{s}"))
            .collect(),
    );
    out.insert(
        "rich",
        m.accounts
            .values()
            .filter(|a| a.2 >= 900)
            .map(|(id, _, b, _)| format!("{id}\t{b}"))
            .collect(),
    );
    let grp_of: HashMap<i64, i64> = m.accounts.values().map(|a| (a.0, a.1)).collect();
    out.insert(
        "ev_acct",
        m.events
            .iter()
            .filter_map(|(id, k, v, _)| grp_of.get(k).map(|g| format!("{id}\t{v}\t{g}")))
            .collect(),
    );
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Wait until every view has read its streams to their ends and the
/// relations stop changing; false if that does not happen in time.
async fn settle(c: &tokio_postgres::Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let probe = "SELECT name, rows, stream_records_read, stream_records, status \
                 FROM eddy_catalog.materialized_views";
    let mut last: Option<Vec<String>> = None;
    loop {
        let now = rows(c, probe).await?;
        let caught_up = now.iter().all(|r| {
            let f: Vec<&str> = r.split('\t').collect();
            f[2] == f[3]
        });
        if caught_up && last.as_ref() == Some(&now) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("views did not catch up in 90 s: {now:?}"));
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Check the server against the topics and the ledger; failures are
/// appended to `failures`, prefixed with `label`.
fn check(server: &Serve, ledger: &SharedLedger, label: &str, failures: &mut Vec<String>) {
    let t0 = Instant::now();
    let rt = rt();
    let c = rt.block_on(connect(server.pg));
    let mut problems = Vec::new();
    if let Err(e) = rt.block_on(settle(&c)) {
        problems.push(e);
    }
    for r in rt
        .block_on(rows(
            &c,
            "SELECT name, status FROM eddy_catalog.materialized_views WHERE status LIKE 'failed%'",
        ))
        .unwrap_or_default()
    {
        problems.push(format!("view failed: {r}"));
    }
    let settled = t0.elapsed();
    let events = read_topic(&server.kafka, EVENTS);
    let accounts = read_topic(&server.kafka, ACCOUNTS);
    let m = model(&events, &accounts);

    // Acknowledged writes are in the log; the log holds nothing else.
    {
        let l = ledger.lock().unwrap();
        let at: HashMap<(&str, i32, i64), &Record> = events
            .iter()
            .map(|r| ((EVENTS, r.partition, r.offset), r))
            .chain(
                accounts
                    .iter()
                    .map(|r| ((ACCOUNTS, r.partition, r.offset), r)),
            )
            .collect();
        let mut lost = Vec::new();
        for (w, p, o) in &l.kafka_acked {
            let write = &l.kafka[w];
            match at.get(&(write.topic, *p, *o)) {
                Some(r) if r.key == write.key && r.value == write.value => {}
                Some(r) => lost.push(format!(
                    "{} p{p} @{o} holds key {:?} value {:?}, acknowledged as key {:?} value {:?}",
                    write.topic, r.key, r.value, write.key, write.value
                )),
                None => lost.push(format!(
                    "{} p{p} @{o} (key {:?} value {:?}) is not in the topic",
                    write.topic, write.key, write.value
                )),
            }
        }
        if !lost.is_empty() {
            problems.push(format!(
                "{} acknowledged Kafka writes not in the log at their offsets, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(4)]
            ));
        }
        let mut ids: HashMap<i64, usize> = HashMap::new();
        for e in &m.events {
            *ids.entry(e.0).or_default() += 1;
        }
        let twice: Vec<_> = ids
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        if !twice.is_empty() {
            problems.push(format!(
                "{} event ids are in the events topic more than once, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        let invented: Vec<_> = ids
            .keys()
            .filter(|id| !l.events_attempted.contains(id))
            .collect();
        if !invented.is_empty() {
            problems.push(format!(
                "{} event ids in the topic were never written, e.g. {:?}",
                invented.len(),
                &invented[..invented.len().min(5)]
            ));
        }
        let missing: Vec<_> = l
            .events_acked
            .iter()
            .filter(|id| !ids.contains_key(id))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} acknowledged events are not in the events topic, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        let ws: HashSet<i64> = accounts
            .iter()
            .filter_map(|r| r.value.as_deref().and_then(account_w))
            .collect();
        // The changelog is compacted only when a segment rolls (1 GiB):
        // every record written is still there.
        let dense = accounts
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as i64);
        if !dense {
            problems.push("accounts topic offsets are not dense from 0".into());
        }
        let missing: Vec<_> = l
            .accounts_acked
            .iter()
            .filter(|w| !ws.contains(w))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} acknowledged account writes (w) are not in the accounts topic, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        let invented: Vec<_> = ws
            .iter()
            .filter(|w| !l.accounts_attempted.contains_key(w))
            .collect();
        if !invented.is_empty() {
            problems.push(format!(
                "{} account writes in the topic were never written, e.g. {:?}",
                invented.len(),
                &invented[..invented.len().min(5)]
            ));
        }
    }

    let read_back = t0.elapsed();
    // The relations equal the log; the views equal their queries.
    let want_events: Vec<String> = {
        let mut v: Vec<String> = m
            .events
            .iter()
            .map(|(id, k, v, s)| format!("{id}\t{k}\t{v}\t{s}"))
            .collect();
        v.sort();
        v
    };
    let want_accounts: Vec<String> = {
        let mut v: Vec<String> = m
            .accounts
            .values()
            .map(|(id, g, b, w)| format!("{id}\t{g}\t{b}\t{w}"))
            .collect();
        v.sort();
        v
    };
    let want_views = expected_views(&m);
    // (what, SQL, expected rows) for every relation and view, each view
    // both read and recomputed by a plain SELECT of its query.
    let mut checks: Vec<(String, String, &[String])> = vec![
        (
            "stream events vs its topic".into(),
            "SELECT id, k, v, src FROM events".into(),
            &want_events,
        ),
        (
            "table accounts vs the upsert of its topic".into(),
            "SELECT id, grp, bal, w FROM accounts".into(),
            &want_accounts,
        ),
    ];
    for (name, q) in VIEWS {
        let want = &want_views[name];
        checks.push((
            format!("view {name} vs this test's computation"),
            format!("SELECT * FROM {name}"),
            want,
        ));
        checks.push((
            format!("plain SELECT of {name}'s query vs this test's computation"),
            q.to_string(),
            want,
        ));
    }
    // A mismatch is checked once more a moment later, so a relation still
    // moving is not reported.
    for attempt in 0..2 {
        let mut failed = Vec::new();
        for (what, sql, want) in checks {
            let verdict = match rt.block_on(rows(&c, &sql)) {
                Ok(got) => diff(&got, want),
                Err(e) => Some(format!("{sql}: {e}")),
            };
            if let Some(d) = verdict {
                failed.push((what, sql, want, d));
            }
        }
        if failed.is_empty() || attempt == 1 {
            problems.extend(
                failed
                    .into_iter()
                    .map(|(what, _, _, d)| format!("{what}: {d}")),
            );
            break;
        }
        checks = failed.into_iter().map(|(w, s, e, _)| (w, s, e)).collect();
        std::thread::sleep(Duration::from_secs(2));
    }
    if problems.iter().any(|p| p.starts_with("table accounts"))
        && let Ok(got) = rt.block_on(rows(&c, "SELECT id, grp, bal, w FROM accounts"))
    {
        let l = ledger.lock().unwrap();
        problems.extend(explain_accounts(&got, &m, &accounts, &l));
    }
    eprintln!(
        "  {label}: checked in {:.1}s (caught up {:.1}s, log read back {:.1}s): {} event records ({} rows), {} account records ({} keys), {} do not decode; {} problem(s)",
        t0.elapsed().as_secs_f64(),
        settled.as_secs_f64(),
        (read_back - settled).as_secs_f64(),
        m.event_records,
        m.events.len(),
        m.account_records,
        m.accounts.len(),
        m.bad_records,
        problems.len()
    );
    for p in problems {
        eprintln!("    {p}");
        failures.push(format!("{label}: {p}"));
    }
}

/// For a few keys where the table and the upsert of its topic differ:
/// the key's records in the topic after the one the table shows, with the
/// path that wrote each, and records that do not decode close to them.
fn explain_accounts(got: &[String], m: &Model, log: &[Record], l: &Ledger) -> Vec<String> {
    let table: HashMap<&str, &str> = got.iter().filter_map(|r| r.split_once('\t')).collect();
    let want: HashMap<String, String> = m
        .accounts
        .values()
        .map(|(id, g, b, w)| (id.to_string(), format!("{g}\t{b}\t{w}")))
        .collect();
    let mut keys: Vec<&str> = table
        .iter()
        .filter(|(k, v)| want.get(**k).map(String::as_str) != Some(**v))
        .map(|(k, _)| *k)
        .chain(
            want.keys()
                .filter(|k| !table.contains_key(k.as_str()))
                .map(String::as_str),
        )
        .collect();
    keys.sort();
    keys.dedup();
    let describe = |r: &Record| -> String {
        let what = match r.value.as_deref() {
            None => "tombstone".to_string(),
            Some(v) => match account_w(v) {
                Some(w) => format!(
                    "w={w} by {}",
                    l.accounts_attempted.get(&w).copied().unwrap_or("?")
                ),
                None if account_row(v).is_none() => format!("does not decode {v:?}"),
                None => format!("no w?! {v:?}"),
            },
        };
        format!(
            "@{} {what}{}",
            r.offset,
            if r.diff < 0 { " (diff -1)" } else { "" }
        )
    };
    // The first record of each differing key the table does not reflect.
    let mut unapplied: Vec<i64> = Vec::new();
    let mut detail = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let held = table.get(k).copied().unwrap_or("(no row)");
        let held_w = held.rsplit('\t').next().and_then(|w| w.parse::<i64>().ok());
        let mine: Vec<&Record> = log
            .iter()
            .filter(|r| r.key.as_deref() == Some(*k))
            .collect();
        let from = mine
            .iter()
            .rposition(|r| r.value.as_deref().and_then(account_w) == held_w && held_w.is_some())
            .unwrap_or(0);
        let shown = mine
            .get(from)
            .is_some_and(|r| r.value.as_deref().and_then(account_w) == held_w && held_w.is_some());
        if let Some(r) = mine.get(if shown { from + 1 } else { from }) {
            unapplied.push(r.offset);
        }
        if i >= 3 {
            continue;
        }
        let after: Vec<String> = mine[from..].iter().map(|r| describe(r)).collect();
        let near: Vec<String> = mine[from..]
            .iter()
            .flat_map(|r| {
                log.iter().filter(move |x| {
                    (x.offset - r.offset).abs() <= 3
                        && x.value.as_deref().is_some_and(|v| account_row(v).is_none())
                })
            })
            .map(|x| format!("@{}", x.offset))
            .collect();
        detail.push(format!(
            "  key {k}: table row (grp, bal, w) {held:?}; its records from the one the table shows on: {after:?}; records that do not decode within 3 offsets of them: {near:?}"
        ));
    }
    unapplied.sort();
    let mut out = vec![format!(
        "{} keys differ between the table and the upsert of its topic; the first record each key misses lies in offsets {:?}..={:?} of the changelog (of {} records); the first keys:",
        keys.len(),
        unapplied.first(),
        unapplied.last(),
        log.len()
    )];
    out.extend(detail);
    out
}

#[test]
fn views_and_tables_never_lose_or_invent_a_row() {
    let seed: u64 = std::env::var("EDDY_INTEGRITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("integrity: seed {seed} (EDDY_INTEGRITY_SEED replays its choices)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_eddy");
    let flags = ["--checkpoint-interval-ms", CHECKPOINT_INTERVAL_MS];
    let ledger: SharedLedger = Arc::default();
    let checkpoints: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut failures = Vec::new();
    let mut restored = Vec::new();

    let mut server = Serve::start_with(bin, dir.path(), &flags);
    rt().block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute(SCHEMA).await.unwrap();
        for (name, q) in VIEWS {
            c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {q}"))
                .await
                .unwrap();
        }
    });
    let mut cycles = 0;
    for cycle in 1..=CYCLES {
        if started.elapsed() > TIME_BUDGET {
            eprintln!(
                "integrity: time budget ({TIME_BUDGET:?}) spent after {cycles} cycles; stopping"
            );
            break;
        }
        cycles = cycle;
        // Load, stop the writers, check the live server.
        let load = Load::start(&server, &ledger, &checkpoints, &mut rng);
        std::thread::sleep(Duration::from_millis(rng.random_range(1_000..2_000)));
        load.stop();
        check(
            &server,
            &ledger,
            &format!("cycle {cycle}, live"),
            &mut failures,
        );

        // Load again and kill -9 in the middle of it.
        let load = Load::start(&server, &ledger, &checkpoints, &mut rng);
        std::thread::sleep(Duration::from_millis(rng.random_range(800..2_500)));
        server.kill9();
        load.stop();
        if cycle == 2 {
            // Once without a checkpoint: every table and view is rebuilt
            // from the log.
            std::fs::remove_file(dir.path().join("checkpoints/dataflows.ckpt")).unwrap();
        }
        server = Serve::start_with(bin, dir.path(), &flags);
        let from_checkpoint = rt().block_on(async {
            let c = connect(server.pg).await;
            rows(
                &c,
                "SELECT relation FROM eddy_catalog.checkpoints WHERE restored_at_start",
            )
            .await
            .unwrap_or_default()
        });
        restored.push(from_checkpoint.len());
        check(
            &server,
            &ledger,
            &format!(
                "cycle {cycle}, after kill -9 (restored from checkpoint: {from_checkpoint:?})"
            ),
            &mut failures,
        );
    }

    let l = ledger.lock().unwrap();
    eprintln!(
        "integrity: {cycles} cycles ({cycles} live checks, {cycles} kill -9 + restart) in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    eprintln!("  acknowledged rows/records by path: {:?}", l.acked_by_path);
    eprintln!("  sent but not acknowledged: {:?}", l.unacked_by_path);
    eprintln!(
        "  checkpoints seen: {}; relations restored from a checkpoint at each restart: {restored:?}",
        checkpoints.lock().unwrap().len()
    );
    assert!(
        failures.is_empty(),
        "{} integrity failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
