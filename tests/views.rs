//! Materialized views end to end, with real processes and real clients:
//!
//! - `seed_000_from_a_kafka_producer`: the seed 000 pipeline with the events
//!   arriving from librdkafka (the `rdkafka` crate) as JSON into a stream's
//!   topic; the view follows them with no FLUSH, and `COPY (SELECT * FROM
//!   mv_agg_stream_game) TO STDOUT` through psql prints what PostgreSQL would.
//! - `views_survive_kill_9_during_ingest`: an `eddy serve` process is killed
//!   with SIGKILL while clients insert, delete and update over pgwire and a
//!   Kafka producer writes into a stream; after each restart (from a
//!   checkpoint taken mid-ingest, or rebuilding from the log) every view
//!   equals its query recomputed from scratch over what survived.
//! - `subscribe_streams_the_snapshot_then_each_change`: `COPY (SUBSCRIBE
//!   mv) TO STDOUT` through tokio-postgres, with and without the snapshot.
//! - `sink_writes_a_views_changes_into_a_topic_once`: CREATE SINK's
//!   Debezium-envelope records add up to the view, across a restart.
//! - `reads_longer_than_a_decode_chunk`: in-process over a real log, a
//!   stream and an upsert table read many decode chunks in one tick, with
//!   bad records and tombstones on the way; views equal a replay.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::{connect, rows};
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serve::Serve;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn producer(addr: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: &str, value: &str) {
    let mut rec = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((_, r)) => {
                rec = r;
                p.poll(Duration::from_millis(5));
            }
        }
    }
    p.poll(Duration::ZERO);
}

/// `COPY … TO STDOUT` through the real psql binary (simple protocol).
fn psql_copy(addr: std::net::SocketAddr, sql: &str) -> String {
    let out = common::psql_command(addr)
        .args(["-c", sql])
        .output()
        .expect("psql is installed (.ci/run installs postgresql-client)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn seed_000_from_a_kafka_producer() {
    let server = TestServer::start();
    let rt = rt();
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE STREAM twitch_data_1 (game_id string, game_name string, id string, \
                 viewer_count int) WITH (topic = 'twitch-streams', partitions = 3);
             CREATE VIEW v_twitch_stream AS SELECT * FROM twitch_data_1;
             CREATE MATERIALIZED VIEW mv_agg_stream_game AS
             SELECT game_id, game_name, COUNT(id) AS cnt_streams,
                    SUM(viewer_count) AS agg_viewer_cnt
             FROM v_twitch_stream WHERE game_id IS NOT NULL
             GROUP BY game_id, game_name;",
        )
        .await
        .unwrap();
    });
    // The seed's producer: json.dumps of a dict per stream, utf-8 encoded.
    let p = producer(&server.addr);
    let events = [
        r#"{"game_id": "509658", "game_name": "Just Chatting", "id": "s1", "viewer_count": 1200}"#,
        r#"{"game_id": "509658", "game_name": "Just Chatting", "id": "s2", "viewer_count": 800}"#,
        r#"{"game_id": "33214", "game_name": "Fortnite", "id": "s3", "viewer_count": 450}"#,
        r#"{"game_id": null, "game_name": "Unlisted", "id": "s4", "viewer_count": 10}"#,
        r#"{"game_id": "21779", "game_name": "League of Legends", "id": "s5", "viewer_count": 3000, "language": "en"}"#,
        "this is not json",
    ];
    for (i, e) in events.iter().enumerate() {
        send(&p, "twitch-streams", &format!("k{i}"), e);
    }
    p.flush(Duration::from_secs(10)).unwrap();
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        // The view catches up on its own (ticks on a short timer): no FLUSH.
        let want = "21779\tLeague of Legends\t1\t3000\n\
                    33214\tFortnite\t1\t450\n\
                    509658\tJust Chatting\t2\t2000\n";
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = String::new();
        while Instant::now() < deadline {
            got = psql_copy(
                server.pg_addr,
                "COPY (SELECT * FROM mv_agg_stream_game) TO STDOUT",
            );
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got, want);
        // The bad record was counted, not fatal.
        let errs = rows(&c, "SHOW DECODE_ERRORS").await;
        assert!(
            errs.iter().any(|r| r.starts_with("twitch_data_1\t1")),
            "decode errors: {errs:?}"
        );
        // More events move the aggregate.
        let p = producer(&server.addr);
        send(
            &p,
            "twitch-streams",
            "k9",
            r#"{"game_id": "33214", "game_name": "Fortnite", "id": "s6", "viewer_count": 50}"#,
        );
        p.flush(Duration::from_secs(10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            got = rows(
                &c,
                "SELECT cnt_streams, agg_viewer_cnt FROM mv_agg_stream_game WHERE game_id = '33214'",
            )
            .await;
            if got == ["2\t500"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got, ["2\t500"]);
    });
}

/// (view, query): each kind of stateful operator, over tables and a stream.
const VIEWS: &[(&str, &str)] = &[
    (
        "by_game",
        "SELECT game, COUNT(*) AS n, SUM(viewers) AS total, MIN(viewers) AS lo, \
         MAX(viewers) AS hi FROM plays GROUP BY game",
    ),
    (
        "joined",
        "SELECT p.id, p.viewers, g.title FROM plays p LEFT JOIN games g ON p.game = g.game",
    ),
    (
        "clicks_by_game",
        "SELECT game, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY game",
    ),
    (
        "top3",
        "SELECT id, viewers FROM plays ORDER BY viewers DESC, id LIMIT 3",
    ),
    (
        "games_total",
        "SELECT COUNT(*) AS games, SUM(n) AS plays FROM by_game",
    ),
];

#[test]
fn views_survive_kill_9_during_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut next_id: i64 = 0;
    for cycle in 0..6 {
        // Checkpoints every 50 ms, so a kill lands between them and the
        // restart restores one and replays the rest; every third run
        // without, so that restart rebuilds from the log (and the next one
        // restores a checkpoint older than the last run).
        let interval = if cycle % 3 == 2 { "0" } else { "50" };
        let server = Serve::start_with(
            env!("CARGO_BIN_EXE_eddy"),
            dir.path(),
            &["--checkpoint-interval-ms", interval],
        );
        if cycle == 0 {
            rt.block_on(async {
                let c = connect(server.pg).await;
                c.batch_execute(
                    "CREATE TABLE plays (id bigint, game int, viewers int);
                     CREATE TABLE games (game int, title text);
                     CREATE STREAM clicks (game int, amount int) WITH (topic = 'clicks', partitions = 2);
                     INSERT INTO games VALUES (0, 'zero'), (1, 'one'), (2, 'two');",
                )
                .await
                .unwrap();
                for (name, q) in VIEWS {
                    c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {q}"))
                        .await
                        .unwrap();
                }
            });
        } else {
            // Every view equals a fresh computation over the surviving inputs.
            rt.block_on(async {
                let c = connect(server.pg).await;
                for (name, q) in VIEWS {
                    let got = rows(&c, &format!("SELECT * FROM {name}")).await;
                    let want = rows(&c, q).await;
                    assert_eq!(got, want, "cycle {cycle}: view {name} after kill -9");
                }
                let n = rows(&c, "SELECT count(*) FROM plays").await;
                assert!(n[0] != "0", "cycle {cycle}: nothing survived");
                // A run with checkpoints started from one.
                let restored = rows(
                    &c,
                    "SELECT count(*) FROM eddy_catalog.checkpoints WHERE restored_at_start",
                )
                .await;
                let want = if interval == "0" { "0" } else { "7" };
                assert_eq!(restored[0], want, "cycle {cycle}: relations restored");
            });
        }
        // Ingest from two clients until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let kafka = server.kafka.clone();
        let stop_k = Arc::clone(&stop);
        let producer_thread = std::thread::spawn(move || {
            let p = producer(&kafka);
            let mut i = 0u64;
            while !stop_k.load(Ordering::Relaxed) {
                send(
                    &p,
                    "clicks",
                    &format!("{}", i % 7),
                    &format!(r#"{{"game": {}, "amount": {}}}"#, i % 4, i % 13),
                );
                i += 1;
                if i.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let pg = server.pg;
        let seed: u64 = rng.random();
        let start_id = next_id;
        next_id += 1_000_000;
        let stop_s = Arc::clone(&stop);
        let sql_thread = std::thread::spawn(move || {
            self::rt().block_on(async move {
                let c = connect(pg).await;
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut id = start_id;
                while !stop_s.load(Ordering::Relaxed) {
                    let sql = match rng.random_range(0..10) {
                        0..=5 => {
                            let rows: Vec<String> = (0..rng.random_range(1..5))
                                .map(|_| {
                                    id += 1;
                                    format!(
                                        "({id}, {}, {})",
                                        rng.random_range(0..4),
                                        rng.random_range(0..1000)
                                    )
                                })
                                .collect();
                            format!("INSERT INTO plays VALUES {}", rows.join(", "))
                        }
                        6 | 7 => format!(
                            "DELETE FROM plays WHERE viewers % 17 = {}",
                            rng.random_range(0..17)
                        ),
                        8 => format!(
                            "UPDATE plays SET game = {} WHERE viewers % 11 = {}",
                            rng.random_range(0..4),
                            rng.random_range(0..11)
                        ),
                        _ => format!(
                            "UPDATE games SET title = 'g{}' WHERE game = {}",
                            rng.random_range(0..100),
                            rng.random_range(0..3)
                        ),
                    };
                    if c.batch_execute(&sql).await.is_err() {
                        break; // the server is gone
                    }
                }
            })
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(300..900)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        producer_thread.join().unwrap();
        sql_thread.join().unwrap();
    }
}

/// Run SQL in-process; the rows of the last statement, cells joined by
/// spaces.
async fn engine_rows(engine: &eddy::engine::Engine, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in eddy::engine::parse(sql).unwrap() {
        out.clear();
        let df = match engine.execute(stmt).await.unwrap() {
            eddy::engine::Output::PassThrough(text) => {
                Some(engine.session().sql(&text).await.unwrap())
            }
            eddy::engine::Output::Rows { df, .. } => Some(df),
            _ => None,
        };
        if let Some(df) = df {
            out = common::lines(&df.collect().await.unwrap());
        }
    }
    out
}

/// A tick reads up to a million records but decodes them a chunk at a time:
/// a stream over two partitions and an upsert table read far more records
/// than a chunk, with undecodable records and tombstones on and around the
/// chunk boundaries; the views equal the same aggregates computed here by
/// replaying the records, and every bad record is counted once.
#[test]
fn reads_longer_than_a_decode_chunk() {
    use bytes::Bytes;
    use eddy::log::batch::{NewRecord, encode};
    use eddy::log::{Durability, Log, LogOptions};

    const N: u64 = 70_000;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let rt = rt();
    let engine = rt
        .block_on(eddy::engine::Engine::open_with(
            Arc::clone(&log),
            eddy::engine::EngineOptions {
                checkpoint_interval: None,
                ..Default::default()
            },
        ))
        .unwrap();
    rt.block_on(engine_rows(
        &engine,
        "CREATE STREAM s (k text, v int) WITH (topic = 's', partitions = 2);
         CREATE TABLE u (id text PRIMARY KEY, v int) WITH (topic = 'u');",
    ));
    let record = |key: Option<String>, value: Option<String>| NewRecord {
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        timestamp: 0,
        headers: vec![],
    };
    // Stream: record i to partition i % 2; bad JSON around the boundaries
    // of 16,384-record chunks (in either partition), a few without a value.
    let bad = |i: u64| (16_380..16_390).contains(&(i / 2)) || i.is_multiple_of(9_973);
    // What the views must show, kept by replaying the records.
    #[derive(Default)]
    struct Want {
        count: u64,
        sum: i64,
        errors: u64,
        // Upsert table: 1,000 keys written in turn, every 7th write a
        // tombstone.
        table: std::collections::BTreeMap<String, i64>,
    }
    let pad = "x".repeat(200);
    let append = |want: &mut Want, from: u64, to: u64| {
        let mut parts: [Vec<NewRecord>; 2] = [vec![], vec![]];
        let mut changelog = Vec::new();
        for i in from..to {
            let value = if bad(i) {
                want.errors += 1;
                Some("{\"k\": \"broken".to_string())
            } else if i % 25_000 == 1 {
                want.errors += 1;
                None
            } else {
                want.count += 1;
                want.sum += (i % 100) as i64;
                // Padded so a 1 MiB log read ends inside a chunk.
                Some(format!(
                    r#"{{"k":"k{}","v":{},"pad":"{pad}"}}"#,
                    i % 10,
                    i % 100
                ))
            };
            parts[(i % 2) as usize].push(record(None, value));
            let id = format!("u{}", i % 1000);
            if i.is_multiple_of(7) {
                want.table.remove(&id);
                changelog.push(record(Some(id), None));
            } else {
                want.table.insert(id.clone(), (i % 50) as i64);
                changelog.push(record(
                    Some(id.clone()),
                    Some(format!(r#"{{"id":"{id}","v":{}}}"#, i % 50)),
                ));
            }
        }
        for (p, records) in parts.iter().enumerate() {
            for chunk in records.chunks(1_000) {
                let part = log.partition("s", p as i32).unwrap();
                part.append(encode(chunk).unwrap(), Durability::Os).unwrap();
            }
        }
        for chunk in changelog.chunks(5_000) {
            let part = log.partition("u", 0).unwrap();
            part.append(encode(chunk).unwrap(), Durability::Os).unwrap();
        }
    };
    let check = |want: &Want| {
        let rows = |sql: &str| rt.block_on(engine_rows(&engine, sql));
        assert_eq!(
            rows("SELECT * FROM s_totals"),
            vec![format!("{} {}", want.count, want.sum)]
        );
        let total: i64 = want.table.values().sum();
        assert_eq!(
            rows("SELECT * FROM u_totals"),
            vec![format!("{} {total}", want.table.len())]
        );
        assert_eq!(
            rows("SELECT count(*) FROM u"),
            vec![want.table.len().to_string()]
        );
        assert_eq!(
            rows("SELECT errors FROM eddy_catalog.decode_errors WHERE relation = 's'"),
            vec![want.errors.to_string()]
        );
    };
    let mut want = Want::default();
    // Half before the views exist (their backfill), half after (ticks).
    append(&mut want, 0, N / 2);
    rt.block_on(engine.tick()).unwrap();
    rt.block_on(engine_rows(
        &engine,
        "CREATE MATERIALIZED VIEW s_totals AS SELECT count(*) AS n, sum(v) AS total FROM s;
         CREATE MATERIALIZED VIEW u_totals AS SELECT count(*) AS n, sum(v) AS total FROM u;",
    ));
    check(&want);
    append(&mut want, N / 2, N);
    rt.block_on(engine.tick()).unwrap();
    check(&want);
}

/// SUBSCRIBE as Materialize streams it, through tokio-postgres (extended
/// protocol) and the simple protocol: `COPY (SUBSCRIBE mv) TO STDOUT` sends
/// the view's rows, then each change as it happens (`mz_timestamp`,
/// `mz_diff`, columns), flushed at once; a client that goes away leaves
/// the server serving.
#[test]
fn subscribe_streams_the_snapshot_then_each_change() {
    use futures::StreamExt;
    let server = TestServer::start();
    let addr = server.pg_addr;
    rt().block_on(async {
        let c = connect(addr).await;
        c.batch_execute(
            "CREATE TABLE t (k text, v int);
             INSERT INTO t VALUES ('a', 1);
             CREATE MATERIALIZED VIEW mv AS SELECT k, sum(v) AS s FROM t GROUP BY k;",
        )
        .await
        .unwrap();
        // Lines of the next `n` rows: (mz_timestamp, the rest), the rest sorted.
        async fn next_rows<S>(s: &mut S, buf: &mut String, n: usize) -> (Vec<i64>, Vec<String>)
        where
            S: futures::Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>> + Unpin,
        {
            while buf.matches('\n').count() < n {
                let chunk = tokio::time::timeout(Duration::from_secs(10), s.next())
                    .await
                    .expect("a change within 10 s")
                    .expect("the subscription goes on")
                    .unwrap();
                buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            let mut times = Vec::new();
            let mut rest = Vec::new();
            for _ in 0..n {
                let end = buf.find('\n').unwrap();
                let line: String = buf.drain(..=end).collect();
                let (ts, r) = line.trim_end().split_once('\t').unwrap();
                times.push(ts.parse::<i64>().unwrap());
                rest.push(r.to_string());
            }
            rest.sort();
            (times, rest)
        }
        for sql in [
            "COPY (SUBSCRIBE mv) TO STDOUT",
            "COPY (SUBSCRIBE TO mv WITH (SNAPSHOT = false)) TO STDOUT",
        ] {
            let snapshot = !sql.contains("SNAPSHOT");
            let sub = connect(addr).await;
            let mut stream = Box::pin(sub.copy_out(sql).await.unwrap());
            let mut buf = String::new();
            let mut last = 0;
            if snapshot {
                let (t, rows) = next_rows(&mut stream, &mut buf, 1).await;
                assert_eq!(rows, vec!["1\ta\t1"], "{sql}");
                last = t[0];
            }
            c.batch_execute("INSERT INTO t VALUES ('a', 2), ('b', 5)")
                .await
                .unwrap();
            let (t, rows) = next_rows(&mut stream, &mut buf, 3).await;
            let base = if snapshot { 1 } else { 3 };
            assert_eq!(
                rows,
                vec![
                    format!("-1\ta\t{base}"),
                    format!("1\ta\t{}", base + 2),
                    "1\tb\t5".to_string()
                ],
                "{sql}"
            );
            assert!(
                t.iter().all(|&x| x >= last && x == t[0]),
                "one time per change, not going back: {t:?}"
            );
            c.batch_execute("DELETE FROM t WHERE k = 'b'")
                .await
                .unwrap();
            let (_, rows) = next_rows(&mut stream, &mut buf, 1).await;
            assert_eq!(rows, vec!["-1\tb\t5"], "{sql}");
            // The subscriber goes away; the server goes on.
            drop(stream);
            drop(sub);
        }
        // SUBSCRIBE to what does not exist names the problem.
        let e = c.simple_query("SUBSCRIBE nope").await.unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42P01", "{e}");
        assert_eq!(rows(&c, "SELECT * FROM mv").await, vec!["a\t5".to_string()]);
        // Dropping what a subscription reads ends it with an error.
        let sub = connect(addr).await;
        let mut stream = Box::pin(sub.copy_out("COPY (SUBSCRIBE mv) TO STDOUT").await.unwrap());
        let mut buf = String::new();
        next_rows(&mut stream, &mut buf, 1).await;
        c.batch_execute("DROP MATERIALIZED VIEW mv").await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the subscription ends");
        let e = end
            .expect("an error, not the end of the stream")
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42P01"), "{e}");
    });
}

/// The JSON values in partition 0 of `topic`, in order.
fn topic_values(log: &eddy::log::Log, topic: &str) -> Vec<String> {
    let p = log.partition(topic, 0).unwrap();
    let mut out = Vec::new();
    let mut offset = p.log_start();
    while offset < p.log_end() {
        let read = p.read(offset, 1 << 20).unwrap();
        let records = eddy::log::batch::decode(read.records).unwrap();
        for r in &records {
            if r.offset >= offset {
                out.push(String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap());
            }
        }
        offset = records.last().unwrap().offset + 1;
    }
    out
}

/// The rows a sink's Debezium-envelope records add up to, as `k\ts` lines.
fn sink_rows(values: &[String]) -> Vec<String> {
    let mut count: std::collections::BTreeMap<String, i64> = Default::default();
    for v in values {
        let env: serde_json::Value = serde_json::from_str(v).unwrap();
        for (field, d) in [("before", -1), ("after", 1)] {
            if let Some(row) = env.get(field).filter(|r| r.is_object()) {
                let line = format!("{}\t{}", row["k"].as_str().unwrap(), row["s"]);
                *count.entry(line).or_insert(0) += d;
            }
        }
    }
    assert!(
        count.values().all(|&c| c >= 0),
        "a retraction without its row: {count:?}"
    );
    count
        .into_iter()
        .flat_map(|(l, c)| std::iter::repeat_n(l, c as usize))
        .collect()
}

/// `CREATE SINK … INTO TOPIC` writes a view's changes as Debezium-envelope
/// JSON records that add up to the view; across a restart nothing is
/// written twice and changes go on; a sink holds its view against DROP.
#[test]
fn sink_writes_a_views_changes_into_a_topic_once() {
    let mut server = TestServer::start();
    let rt = rt();
    let wait_for = |server: &TestServer, want: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let values = topic_values(server.log(), "mv_changes");
            if want(&values) || Instant::now() > deadline {
                return values;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let c = rt.block_on(connect(server.pg_addr));
    rt.block_on(c.batch_execute(
        "CREATE TABLE t (k text, v int);
         INSERT INTO t VALUES ('a', 1), ('b', 2);
         CREATE MATERIALIZED VIEW mv AS SELECT k, sum(v) AS s FROM t GROUP BY k;
         CREATE SINK out FROM mv INTO TOPIC 'mv_changes';
         INSERT INTO t VALUES ('a', 10);
         DELETE FROM t WHERE k = 'b';",
    ))
    .unwrap();
    let values = wait_for(&server, &|v| sink_rows(v) == vec!["a\t11".to_string()]);
    assert_eq!(sink_rows(&values), vec!["a\t11".to_string()], "{values:?}");
    assert_eq!(
        values.len(),
        5,
        "snapshot 2, update 2, delete 1: {values:?}"
    );
    assert!(
        values.contains(&r#"{"before":{"k":"b","s":2},"after":null}"#.to_string()),
        "{values:?}"
    );
    let e = rt
        .block_on(c.batch_execute("DROP MATERIALIZED VIEW mv"))
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "2BP01", "{e}");
    drop(c);

    // A restart catches the sink up with nothing to add; then it goes on.
    server.restart();
    let c = rt.block_on(connect(server.pg_addr));
    rt.block_on(c.batch_execute("INSERT INTO t VALUES ('c', 3)"))
        .unwrap();
    let values = wait_for(&server, &|v| v.len() >= 6);
    assert_eq!(values.len(), 6, "{values:?}");
    assert_eq!(
        sink_rows(&values),
        vec!["a\t11".to_string(), "c\t3".to_string()]
    );
    rt.block_on(c.batch_execute("DROP SINK out; DROP MATERIALIZED VIEW mv"))
        .unwrap();
    rt.block_on(c.batch_execute("INSERT INTO t VALUES ('d', 4)"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(topic_values(server.log(), "mv_changes").len(), 6);
}
