//! ksqlDB's persistent queries as its users run them, through real
//! clients: librdkafka producers write keyed JSON records (the key in the
//! record key, upper-case column names in lower-case JSON fields), the
//! statements go over pgwire in ksqlDB's spelling, and a librdkafka
//! consumer reads what the queries write. Every output is compared with a
//! recomputation from the records produced; a restart writes nothing twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::{connect, rows};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Page views: (user, page, viewtime), produced keyed by user.
fn views(from: u64, n: u64) -> Vec<(String, String, u64)> {
    (from..from + n)
        .map(|i| {
            let x = i * 7919 + 13;
            (format!("User_{}", x % 17), format!("Page_{}", x % 5), i)
        })
        .collect()
}

fn produce(addr: &str, topic: &str, rows: &[(String, String, u64)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (user, page, t) in rows {
        let value = format!(r#"{{"pageid":"{page}","viewtime":{t}}}"#);
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

/// Every record of `topic` as (key, value; None for a tombstone), read by
/// a librdkafka consumer until `done` holds or 20 s pass.
fn consume(
    addr: &str,
    topic: &str,
    done: impl Fn(&[(String, Option<String>)]) -> bool,
) -> Vec<(String, Option<String>)> {
    let text = |r: &[(Vec<u8>, Option<String>)]| -> Vec<(String, Option<String>)> {
        r.iter()
            .map(|(k, v)| (String::from_utf8(k.clone()).unwrap(), v.clone()))
            .collect()
    };
    text(&consume_raw(addr, topic, |r| done(&text(r))))
}

/// [`consume`] with the keys' bytes as they are.
fn consume_raw(
    addr: &str,
    topic: &str,
    done: impl Fn(&[(Vec<u8>, Option<String>)]) -> bool,
) -> Vec<(Vec<u8>, Option<String>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("check-{topic}-{}", rand_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let key = m.key().unwrap_or_default().to_vec();
            let value = m.payload().map(|v| String::from_utf8(v.to_vec()).unwrap());
            got.push((key, value));
        } else if done(&got) {
            break;
        }
    }
    got
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The Page_1 views, as the stream query's records hold them.
fn expected_filter(all: &[(String, String, u64)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = all
        .iter()
        .filter(|(_, p, _)| p == "Page_1")
        .map(|(u, p, t)| (u.clone(), format!(r#"{{"viewtime":{t},"pageid":"{p}"}}"#)))
        .collect();
    out.sort();
    out
}

/// Views per user, recomputed.
fn expected_counts(all: &[(String, String, u64)]) -> BTreeMap<String, String> {
    let mut n: BTreeMap<String, u64> = BTreeMap::new();
    for (u, _, _) in all {
        *n.entry(u.clone()).or_default() += 1;
    }
    n.into_iter()
        .map(|(u, c)| (u, format!(r#"{{"views":{c}}}"#)))
        .collect()
}

/// An upsert changelog's last value per key (tombstones remove it).
fn latest(records: &[(String, Option<String>)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in records {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    out
}

fn appended(records: &[(String, Option<String>)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = records
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.clone().expect("a stream's records have values"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn persistent_queries_write_their_topics_as_ksqldb_does() {
    let mut server = TestServer::start();
    let rt = rt();
    let mut all = views(0, 400);
    produce(&server.addr, "pageviews", &all);
    let c = rt.block_on(connect(server.pg_addr));
    rt.block_on(c.batch_execute(
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM PAGEVIEWS (USERID VARCHAR KEY, VIEWTIME BIGINT, PAGEID VARCHAR)
           WITH (KAFKA_TOPIC = 'pageviews', VALUE_FORMAT = 'JSON');
         CREATE STREAM PAGEVIEWS_PAGE1 AS
           SELECT USERID, VIEWTIME, PAGEID FROM PAGEVIEWS WHERE PAGEID = 'Page_1' EMIT CHANGES;
         CREATE TABLE VIEWS_PER_USER WITH (KAFKA_TOPIC = 'views_per_user', PARTITIONS = 3) AS
           SELECT USERID, COUNT(*) AS VIEWS FROM PAGEVIEWS GROUP BY USERID EMIT CHANGES;
         CREATE STREAM PAGEVIEWS_BY_PAGE WITH (PARTITIONS = 2) AS
           SELECT * FROM PAGEVIEWS PARTITION BY PAGEID EMIT CHANGES;",
    ))
    .unwrap();
    // More views while the queries run.
    let more = views(400, 300);
    produce(&server.addr, "pageviews", &more);
    all.extend(more);

    let want_filter = expected_filter(&all);
    let got = consume(&server.addr, "PAGEVIEWS_PAGE1", |r| {
        r.len() >= want_filter.len()
    });
    assert_eq!(appended(&got), want_filter, "the stream query's records");

    let want_counts = expected_counts(&all);
    let got = consume(&server.addr, "views_per_user", |r| latest(r) == want_counts);
    assert_eq!(latest(&got), want_counts, "the table's changelog, by key");

    // PARTITION BY re-keys: the page is the key, the rest the value (ROWTIME
    // is the record's time, not a field).
    let mut want_by_page: Vec<(String, String)> = all
        .iter()
        .map(|(u, p, t)| (p.clone(), format!(r#"{{"userid":"{u}","viewtime":{t}}}"#)))
        .collect();
    want_by_page.sort();
    let got = consume(&server.addr, "PAGEVIEWS_BY_PAGE", |r| {
        r.len() >= want_by_page.len()
    });
    assert_eq!(appended(&got), want_by_page, "re-keyed by PARTITION BY");
    // The table reads the same through pgwire.
    let counted = rt.block_on(rows(&c, "SELECT userid, views FROM views_per_user"));
    let mut counted: Vec<String> = counted;
    counted.sort();
    let mut want: Vec<String> = want_counts
        .iter()
        .map(|(u, v)| format!("{u}\t{}", &v[9..v.len() - 1]))
        .collect();
    want.sort();
    assert_eq!(counted, want);
    drop(c);

    // A restart catches the sinks up with nothing to add.
    let before = consume(&server.addr, "PAGEVIEWS_PAGE1", |r| {
        r.len() >= want_filter.len()
    })
    .len();
    server.restart();
    let extra = views(700, 100);
    produce(&server.addr, "pageviews", &extra);
    all.extend(extra);
    let want_filter = expected_filter(&all);
    let got = consume(&server.addr, "PAGEVIEWS_PAGE1", |r| {
        r.len() >= want_filter.len()
    });
    assert!(before < want_filter.len());
    assert_eq!(
        appended(&got),
        want_filter,
        "nothing written twice across the restart"
    );
    let want_counts = expected_counts(&all);
    let got = consume(&server.addr, "views_per_user", |r| latest(r) == want_counts);
    assert_eq!(latest(&got), want_counts);

    // DROP takes the query with it: the topic stops growing.
    let c = rt.block_on(connect(server.pg_addr));
    rt.block_on(c.batch_execute("DROP STREAM PAGEVIEWS_PAGE1; DROP TABLE VIEWS_PER_USER"))
        .unwrap();
    produce(&server.addr, "pageviews", &views(800, 50));
    std::thread::sleep(Duration::from_millis(500));
    let got = consume(&server.addr, "PAGEVIEWS_PAGE1", |r| {
        r.len() >= want_filter.len()
    });
    assert_eq!(got.len(), want_filter.len());
}

/// ksqlDB's `KEY_FORMAT = 'KAFKA'` as Kafka's serializers write it: an INT
/// key is 4 bytes big-endian (what a Java producer's IntegerSerializer or
/// Python's `struct.pack('>i', …)` writes). Read into the KEY column, a
/// key of the wrong size is a decode error (counted, the rest read), a
/// table over the stream inherits the format for its changelog's keys,
/// INSERT writes it, and all of it holds across a restart.
#[test]
fn kafka_key_format_reads_and_writes_kafkas_binary_keys() {
    let mut server = TestServer::start();
    let rt = rt();
    let c = rt.block_on(connect(server.pg_addr));
    rt.block_on(c.batch_execute(
        "CREATE STREAM CLICKS (ID INT KEY, PAGE VARCHAR)
           WITH (KAFKA_TOPIC = 'clicks_kafka', VALUE_FORMAT = 'JSON', KEY_FORMAT = 'KAFKA', PARTITIONS = 2);
         CREATE TABLE CLICKS_PER_ID AS
           SELECT ID, COUNT(*) AS N FROM CLICKS GROUP BY ID EMIT CHANGES;",
    ))
    .unwrap();
    let err = rt
        .block_on(c.batch_execute(
            "CREATE STREAM BAD (FLAG BOOLEAN KEY, V INT)
               WITH (KAFKA_TOPIC = 'bad_kafka', VALUE_FORMAT = 'JSON', KEY_FORMAT = 'KAFKA')",
        ))
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "0A000");
    assert!(
        db.message().contains("BOOLEAN") || db.message().contains("boolean"),
        "{}",
        db.message()
    );

    let producer = |addr: &str| -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("acks", "all")
            .create()
            .unwrap()
    };
    let p = producer(&server.addr);
    let mut want: BTreeMap<i32, i64> = BTreeMap::new();
    let send = |p: &BaseProducer, key: &[u8], value: &str| {
        while p
            .send(BaseRecord::to("clicks_kafka").key(key).payload(value))
            .is_err()
        {
            p.poll(Duration::from_millis(10));
        }
        p.poll(Duration::ZERO);
    };
    for i in 0..300i32 {
        let id = (i * 7919) % 23 - 11; // negative ids too
        *want.entry(id).or_default() += 1;
        send(
            &p,
            &id.to_be_bytes(),
            &format!(r#"{{"PAGE":"p{}"}}"#, i % 4),
        );
    }
    // Three bytes are no INT: a decode error, not a row.
    send(&p, &[0, 0, 1], r#"{"PAGE":"bad"}"#);
    p.flush(Duration::from_secs(30)).unwrap();

    let want_rows = |want: &BTreeMap<i32, i64>| -> Vec<String> {
        let mut v: Vec<String> = want.iter().map(|(k, n)| format!("{k}\t{n}")).collect();
        v.sort();
        v
    };
    let settled = |c: &tokio_postgres::Client, want: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut got = rt.block_on(rows(c, "SELECT id, n FROM clicks_per_id"));
            got.sort();
            if got == want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(settled(&c, &want_rows(&want)), want_rows(&want));
    let n = rt.block_on(rows(&c, "SELECT count(*) FROM clicks WHERE id IS NOT NULL"));
    assert_eq!(n, vec!["300"]);
    let errors = rt.block_on(rows(
        &c,
        "SELECT errors FROM eddy_catalog.decode_errors WHERE relation = 'clicks'",
    ));
    assert_eq!(errors, vec!["1"], "the 3-byte key is a decode error");

    // INSERT writes the key as Kafka's IntegerSerializer would.
    rt.block_on(c.batch_execute("INSERT INTO clicks (id, page) VALUES (1000, 'ins')"))
        .unwrap();
    *want.entry(1000).or_default() += 1;
    let got = consume_raw(&server.addr, "clicks_kafka", |r| {
        r.iter()
            .any(|(_, v)| v.as_deref().is_some_and(|v| v.contains("ins")))
    });
    let inserted = got
        .iter()
        .find(|(_, v)| v.as_deref().is_some_and(|v| v.contains("ins")))
        .unwrap();
    assert_eq!(inserted.0, 1000i32.to_be_bytes().to_vec());

    // The table's changelog (its topic CLICKS_PER_ID) is keyed as its
    // source stream: the latest count per 4-byte key.
    let latest_counts = |r: &[(Vec<u8>, Option<String>)]| -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for (k, v) in r {
            let id = i32::from_be_bytes(<[u8; 4]>::try_from(k.as_slice()).unwrap());
            let v: serde_json::Value = serde_json::from_str(v.as_deref().unwrap()).unwrap();
            out.insert(id, v["n"].as_i64().unwrap());
        }
        out
    };
    let got = consume_raw(&server.addr, "CLICKS_PER_ID", |r| latest_counts(r) == want);
    assert_eq!(
        latest_counts(&got),
        want,
        "the changelog's keys are Kafka INTs"
    );
    drop(c);

    // Across a restart the stream still reads its keys the same way.
    drop(p);
    server.restart();
    let c = rt.block_on(connect(server.pg_addr));
    let p = producer(&server.addr);
    send(&p, &5i32.to_be_bytes(), r#"{"PAGE":"after"}"#);
    p.flush(Duration::from_secs(30)).unwrap();
    *want.entry(5).or_default() += 1;
    assert_eq!(settled(&c, &want_rows(&want)), want_rows(&want));
    let after = rt.block_on(rows(&c, "SELECT id FROM clicks WHERE page = 'after'"));
    assert_eq!(after, vec!["5"]);
}
