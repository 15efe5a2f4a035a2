//! The seed 000 pipeline as a Materialize user writes it, against a real
//! server with real clients: Kafka producers (librdkafka) push JSON events
//! into a topic; `CREATE SOURCE … FROM KAFKA CONNECTION … FORMAT JSON`
//! reads them as one jsonb column; a view takes fields out with `->>`; a
//! materialized view aggregates them and `SUBSCRIBE (query)` follows a
//! query. Every figure is compared with a recomputation from what was
//! produced, under concurrent producers, with malformed records among
//! them, and again after a restart.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/serve.rs"]
mod serve_child;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::{connect, rows};
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The events producer `who` sends: (game_id, game_name, stream id,
/// viewers), with every 500th value not JSON at all.
fn events(who: u64, n: u64) -> Vec<(String, Option<(u64, u64)>)> {
    (0..n)
        .map(|i| {
            let x = who * 1_000_003 + i * 7919;
            if i % 500 == 499 {
                return (format!("{{\"game_id\": {}", x % 13), None);
            }
            let game = x % 37;
            let viewers = x % 5000;
            let json = format!(
                r#"{{"game_id":"{game}","game_name":"Game {game}","id":"s{who}-{i}","viewer_count":{viewers},"tags":["a",{{"k":{i}}}]}}"#
            );
            (json, Some((game, viewers)))
        })
        .collect()
}

fn produce(addr: &str, topic: &str, values: &[(String, Option<(u64, u64)>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (i, (v, _)) in values.iter().enumerate() {
        let key = format!("k{}", i % 101);
        while p.send(BaseRecord::to(topic).key(&key).payload(v)).is_err() {
            p.poll(Duration::from_millis(10));
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// game → "game\tGame game\tstreams\tviewers", as the view prints it.
fn expected(all: &[(String, Option<(u64, u64)>)]) -> Vec<String> {
    let mut by: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (g, v) in all.iter().filter_map(|(_, e)| *e) {
        let e = by.entry(g).or_default();
        e.0 += 1;
        e.1 += v;
    }
    let mut out: Vec<String> = by
        .iter()
        .map(|(g, (n, s))| format!("{g}\tGame {g}\t{n}\t{s}"))
        .collect();
    out.sort();
    out
}

async fn until_equal(c: &tokio_postgres::Client, sql: &str, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rows(c, sql).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {} rows, want {}; first differing: {:?}",
            got.len(),
            want.len(),
            got.iter().zip(want).find(|(a, b)| a != b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const VIEW: &str = "SELECT game_id, game_name, cnt_streams, agg_viewer_cnt FROM mv_agg_stream_game";
const RECOMPUTE: &str = "SELECT data->>'game_id', data->>'game_name', count(data->>'id'), \
     sum((data->>'viewer_count')::int) FROM twitch GROUP BY 1, 2";

#[test]
fn json_source_over_concurrent_producers_matches_recomputation() {
    let mut server = TestServer::start();
    let addr = server.addr.clone();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE CONNECTION kafka_conn TO KAFKA (BROKER 'localhost:9092');
             CREATE SOURCE twitch FROM KAFKA CONNECTION kafka_conn (TOPIC 'twitch-streams')
                 FORMAT JSON;
             CREATE VIEW v_twitch_stream AS
                 SELECT data->>'game_id' AS game_id, data->>'game_name' AS game_name,
                        data->>'id' AS id, (data->>'viewer_count')::int AS viewer_count
                 FROM twitch;
             CREATE MATERIALIZED VIEW mv_agg_stream_game AS
                 SELECT game_id, game_name, COUNT(id) AS cnt_streams,
                        SUM(viewer_count) AS agg_viewer_cnt
                 FROM v_twitch_stream WHERE game_id IS NOT NULL
                 GROUP BY game_id, game_name;",
        )
        .await
        .unwrap();
        // The source's one column is jsonb to every client.
        let st = c.prepare("SELECT data FROM twitch").await.unwrap();
        assert_eq!(st.columns()[0].name(), "data");
        assert_eq!(st.columns()[0].type_().name(), "jsonb");
    });

    // Two producers at once, while the view is maintained.
    let a = events(1, 6000);
    let b = events(2, 6000);
    std::thread::scope(|s| {
        s.spawn(|| produce(&addr, "twitch-streams", &a));
        s.spawn(|| produce(&addr, "twitch-streams", &b));
    });
    let mut all = a.clone();
    all.extend(b.iter().cloned());
    let want = expected(&all);
    let malformed = all.iter().filter(|(_, e)| e.is_none()).count();

    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        until_equal(&c, VIEW, &want).await;
        assert_eq!(rows(&c, RECOMPUTE).await, want, "the query computed afresh");
        assert_eq!(
            rows(
                &c,
                "SELECT errors FROM eddy_catalog.decode_errors WHERE relation = 'twitch'"
            )
            .await,
            vec![malformed.to_string()],
            "every malformed value counted"
        );
        // A value as jsonb prints it, its nested parts reachable.
        assert_eq!(
            rows(
                &c,
                "SELECT data->'tags', data #>> '{tags,1,k}' FROM twitch WHERE data->>'id' = 's1-3'"
            )
            .await,
            vec!["[\"a\", {\"k\": 3}]\t3".to_string()]
        );
    });

    // After a restart the connection, source and views are back, equal.
    server.restart();
    let c2 = events(3, 1000);
    produce(&server.addr, "twitch-streams", &c2);
    all.extend(c2);
    let want = expected(&all);
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        until_equal(&c, VIEW, &want).await;
        assert_eq!(rows(&c, RECOMPUTE).await, want);
    });
}

/// `SUBSCRIBE (query)`: the query's rows, then its changes as records
/// arrive from a Kafka producer; the dataflow made for it goes when the
/// subscriber does.
#[test]
fn subscribe_to_a_query_follows_kafka_records() {
    let server = TestServer::start();
    let addr = server.addr.clone();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE SOURCE clicks FROM KAFKA BROKER 'localhost:9092' TOPIC 'clicks' FORMAT BYTES",
        )
        .await
        .unwrap();
        let one = |page: &str| (format!(r#"{{"page":"{page}"}}"#), None);
        produce(&addr, "clicks", &[one("home"), one("home"), one("about")]);
        // The subscriber's connection is its own task here, to kill it
        // as a client process dies (its socket closed, nothing said).
        let (sub, conn) = tokio_postgres::connect(
            &format!(
                "host={} port={} user=eddy dbname=eddy",
                server.pg_addr.ip(),
                server.pg_addr.port()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let mut stream = Box::pin(
            sub.copy_out(
                "COPY (SUBSCRIBE (SELECT convert_from(data, 'utf8')::jsonb ->> 'page' AS page, \
                 count(*) AS n FROM clicks GROUP BY 1)) TO STDOUT",
            )
            .await
            .unwrap(),
        );
        let mut buf = String::new();
        let mut next = async |n: usize| -> Vec<String> {
            while buf.matches('\n').count() < n {
                let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
                    .await
                    .expect("rows within 20 s")
                    .expect("the subscription goes on")
                    .unwrap();
                buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            let mut out = Vec::new();
            for _ in 0..n {
                let end = buf.find('\n').unwrap();
                let line: String = buf.drain(..=end).collect();
                let (_, rest) = line.trim_end().split_once('\t').unwrap();
                out.push(rest.to_string());
            }
            out.sort();
            out
        };
        assert_eq!(next(2).await, vec!["1\tabout\t1", "1\thome\t2"]);
        produce(&addr, "clicks", &[one("home")]);
        assert_eq!(next(2).await, vec!["-1\thome\t2", "1\thome\t3"]);
        let live = "SELECT count(*) FROM eddy_catalog.materialized_views WHERE name LIKE '_eddy_subscribe%'";
        assert_eq!(rows(&c, live).await, vec!["1"]);
        conn.abort();
        let _ = conn.await;
        let gone = async || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while rows(&c, live).await != vec!["0"] {
                assert!(Instant::now() < deadline, "the subscription's dataflow stays");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        gone().await;
        // A stream is subscribed to the same way, by name; psql's Ctrl-C
        // (a CancelRequest) ends it with 57014, and its dataflow with it.
        let sub = connect(server.pg_addr).await;
        let mut stream = Box::pin(sub.copy_out("COPY (SUBSCRIBE clicks) TO STDOUT").await.unwrap());
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(std::str::from_utf8(&chunk).unwrap().contains("\t1\t"));
        assert_eq!(rows(&c, live).await, vec!["1"]);
        sub.cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await
            .unwrap();
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("the subscription ends")
            {
                Some(Ok(_)) => continue,
                other => break other,
            }
        };
        let e = end.expect("an error, not the end of the stream").unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
        gone().await;
        assert_eq!(rows(&sub, "SELECT 1").await, vec!["1"], "the connection goes on");
    });
}

/// `CREATE SOURCE … FROM LOAD GENERATOR COUNTER` as Materialize has it: a
/// stream of `counter` 1, 2, … appended once per tick, read by a view.
/// Killed with SIGKILL mid-stream and started again, it goes on from the
/// topic's end: the values stay dense (no gap, no repeat), `UP TO` stops
/// it, and DROP SOURCE stops its generator.
#[test]
fn load_generator_counter_counts_on_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_eddy");
    let rt = rt();
    let server = serve_child::Serve::start(bin, dir.path());
    rt.block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute(
            "CREATE SOURCE ticks FROM LOAD GENERATOR COUNTER (TICK INTERVAL '20ms', UP TO 120); \
             CREATE MATERIALIZED VIEW tick_stats AS SELECT count(*) AS n, count(DISTINCT counter) AS d, \
             min(counter) AS lo, max(counter) AS hi FROM ticks",
        )
        .await
        .unwrap();
        // Some ticks, not all of them, before the kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = rows(&c, "SELECT n FROM tick_stats").await;
            if got.first().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) >= 10 {
                break;
            }
            assert!(Instant::now() < deadline, "no ticks: {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    server.kill9();
    let server = serve_child::Serve::start(bin, dir.path());
    rt.block_on(async {
        let c = connect(server.pg).await;
        // Dense from 1 to 120 whatever the kill cut: the view and the
        // stream itself agree.
        let want = vec!["120\t120\t1\t120".to_string()];
        until_equal(&c, "SELECT n, d, lo, hi FROM tick_stats", &want).await;
        until_equal(
            &c,
            "SELECT count(*), count(DISTINCT counter), min(counter), max(counter) FROM ticks",
            &want,
        )
        .await;
        // Past UP TO nothing more comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rows(&c, "SELECT n FROM tick_stats").await, ["120"]);
        // A generator without an end, dropped: its topic stops growing.
        c.batch_execute("CREATE SOURCE forever FROM LOAD GENERATOR COUNTER (TICK INTERVAL '10ms')")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.batch_execute("DROP SOURCE forever").await.unwrap();
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &server.kafka)
            .create()
            .unwrap();
        use rdkafka::consumer::Consumer;
        let end = || {
            consumer
                .fetch_watermarks("forever", 0, Duration::from_secs(10))
                .unwrap()
                .1
        };
        let first = end();
        assert!(first > 0, "the generator wrote nothing before DROP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(end(), first, "the generator went on after DROP SOURCE");
        let err = c
            .simple_query("CREATE SOURCE nope FROM LOAD GENERATOR AUCTION")
            .await
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "0A000");
    });
}
