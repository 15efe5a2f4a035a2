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
            .simple_query("CREATE SOURCE nope FROM LOAD GENERATOR MARKETING FOR ALL TABLES")
            .await
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "0A000");
        // A generator of several tables needs them named.
        let err = c
            .simple_query("CREATE SOURCE nope FROM LOAD GENERATOR AUCTION")
            .await
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "42601");
    });
}

/// NEXMARK and AUCTION, each table a stream, killed with SIGKILL while
/// they generate: after the restart every stream holds exactly what UP
/// TO allows (no record twice, none missing: each goes on from its
/// topic's end), and the views over them equal their queries.
#[test]
fn load_generators_nexmark_and_auction_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_eddy");
    let rt = rt();
    let server = serve_child::Serve::start(bin, dir.path());
    let views = [
        (
            "SELECT count(*) AS n, count(DISTINCT auction) AS auctions, sum(price) AS volume FROM bid",
            "bid_stats",
        ),
        (
            "SELECT a.id, a.item, count(*) AS n, max(b.amount) AS top FROM auctions a \
             JOIN bids b ON b.auction_id = a.id GROUP BY a.id, a.item",
            "auction_tops",
        ),
    ];
    rt.block_on(async {
        let c = connect(server.pg).await;
        c.batch_execute(
            "CREATE SOURCE nx FROM LOAD GENERATOR NEXMARK (TICK INTERVAL '20ms', SCALE FACTOR 1, UP TO 2000) FOR ALL TABLES; \
             CREATE SOURCE ah FROM LOAD GENERATOR AUCTION (TICK INTERVAL '20ms', UP TO 60) FOR ALL TABLES",
        )
        .await
        .unwrap();
        for (q, name) in &views {
            c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {q}"))
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let bids = rows(&c, "SELECT count(*) FROM bid").await;
            let auctions = rows(&c, "SELECT count(*) FROM auctions").await;
            let n = |v: &[String]| v.first().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            if n(&bids) >= 100 && n(&auctions) >= 5 {
                assert!(n(&bids) < 1840 || n(&auctions) < 60, "all generated before the kill");
                break;
            }
            assert!(Instant::now() < deadline, "nothing generated: {bids:?} {auctions:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    server.kill9();
    let server = serve_child::Serve::start(bin, dir.path());
    rt.block_on(async {
        let c = connect(server.pg).await;
        // Nexmark's 1 : 3 : 46 of 2000 events, each once.
        until_equal(&c, "SELECT count(*), count(DISTINCT id) FROM person", &["40\t40".to_string()]).await;
        until_equal(&c, "SELECT count(*), count(DISTINCT id) FROM auction", &["120\t120".to_string()]).await;
        until_equal(&c, "SELECT count(*) FROM bid", &["1840".to_string()]).await;
        // The auction house: fixed tables once, 60 auctions, bids dense.
        until_equal(
            &c,
            "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM users), \
             (SELECT count(*) FROM accounts), (SELECT count(*) FROM auctions), \
             (SELECT count(DISTINCT id) FROM auctions)",
            &["20\t200\t200\t60\t60".to_string()],
        )
        .await;
        until_equal(
            &c,
            "SELECT count(DISTINCT auction_id), count(*) = count(DISTINCT id), min(id), max(id) = count(*) FROM bids",
            &["60\tt\t1\tt".to_string()],
        )
        .await;
        // Every bid is placed before its auction ends.
        until_equal(
            &c,
            "SELECT count(*) FROM bids b JOIN auctions a ON a.id = b.auction_id \
             WHERE b.bid_time >= a.end_time",
            &["0".to_string()],
        )
        .await;
        for (q, name) in &views {
            let want = rows(&c, &format!("{q} ORDER BY 1, 2")).await;
            until_equal(&c, &format!("SELECT * FROM {name} ORDER BY 1, 2"), &want).await;
        }
        assert_eq!(rows(&c, "SELECT count(*) FROM auction_tops").await, ["60"]);
    });
}

/// `eddy demo` as a newcomer runs it: its views fill and grow, the
/// console answers, and it stops cleanly, removing its data directory.
#[test]
fn demo_runs_views_that_grow() {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_eddy");
    let mut child = std::process::Command::new(bin)
        .args([
            "demo",
            "--seconds",
            "60",
            "--kafka-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
            "--registry-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut pg, mut console, mut data) = (None, None, None);
    let mut printed = String::new();
    while pg.is_none() || console.is_none() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "demo printed only {printed}"
        );
        printed.push_str(&line);
        if let Some(rest) = line.split("psql -h ").nth(1) {
            let mut w = rest.split_whitespace();
            let host = w.next().unwrap().to_string();
            let port = w.nth(1).unwrap().to_string();
            pg = Some(
                format!("{host}:{port}")
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
            );
        }
        if let Some(rest) = line.split("console:  http://").nth(1) {
            console = Some(rest.trim().trim_end_matches("/console/").to_string());
        }
        if let Some(rest) = line.split("data in ").nth(1) {
            data = Some(std::path::PathBuf::from(rest.split(" (").next().unwrap()));
        }
    }
    let data = data.expect("the demo names its data directory");
    assert!(data.exists());
    let rt = rt();
    rt.block_on(async {
        let c = connect(pg.unwrap()).await;
        let total = async || {
            rows(&c, "SELECT coalesce(sum(bids), 0) FROM bids_per_channel")
                .await
                .first()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while total().await == 0 {
            assert!(Instant::now() < deadline, "bids_per_channel stayed empty");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = total().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let later = total().await;
        assert!(later > first, "the view did not grow: {first} then {later}");
        for view in ["bids_last_15min", "auctions_per_seller"] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while rows(&c, &format!("SELECT count(*) FROM {view}")).await == ["0"] {
                assert!(Instant::now() < deadline, "{view} stayed empty");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let console = console.unwrap();
    let mut s = std::net::TcpStream::connect(&console).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /console/ HTTP/1.1\r\nHost: {console}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!data.exists(), "the demo left {}", data.display());
}
