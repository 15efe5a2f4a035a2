//! Avro and the schema registry as the seeds' producers use them:
//! confluent-kafka's `SchemaRegistryClient`, `AvroSerializer`,
//! `AvroDeserializer` and the seed's `AvroProducer`/`AvroConsumer`, run
//! unchanged by `tests/python/avro_registry.py` against a real server;
//! streams over their topics with columns from the registered schema, a
//! materialized view compared with a recomputation from what was produced,
//! schema evolution, a record that is not Avro, INSERT read back by the
//! Python deserializer, and everything again after a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::{connect, rows};
use futures::StreamExt;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn python(server: &TestServer, args: &[&str]) -> String {
    let path = format!(
        "{}/tests/python/avro_registry.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .env("BOOTSTRAP", &server.addr)
        .env("REGISTRY", format!("http://{}", server.registry_addr))
        .output()
        .expect("python3 runs (scripts/test installs confluent-kafka[avro,schemaregistry])");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "avro_registry.py {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `expect vendor count sum` lines → vendor → (count, sum).
fn expected(out: &str) -> BTreeMap<i64, (i64, f64)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("expect "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect()
}

fn add(a: &mut BTreeMap<i64, (i64, f64)>, b: &BTreeMap<i64, (i64, f64)>) {
    for (k, (n, s)) in b {
        let e = a.entry(*k).or_insert((0, 0.0));
        e.0 += n;
        e.1 += s;
    }
}

/// Poll `sql` (rows of `vendor count sum`) until it equals `want`.
async fn converge(c: &tokio_postgres::Client, sql: &str, want: &BTreeMap<i64, (i64, f64)>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeMap<i64, (i64, f64)> = rows(c, sql)
            .await
            .iter()
            .map(|r| {
                let f: Vec<&str> = r.split('\t').collect();
                (
                    f[0].parse().unwrap(),
                    (f[1].parse().unwrap(), f[2].parse().unwrap()),
                )
            })
            .collect();
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|((k, (n, s)), (k2, (n2, s2)))| k == k2 && n == n2 && (s - s2).abs() < 1e-6);
        if same {
            return;
        }
        if Instant::now() > deadline {
            let errors = rows(c, "SHOW DECODE_ERRORS").await;
            panic!("{sql}\n got {got:?}\nwant {want:?}\ndecode errors: {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    rows(c, sql).await.join("\n")
}

#[test]
fn confluent_avro_clients_registry_and_streams() {
    let mut server = TestServer::start();
    // The registry's REST API as the Python client uses it.
    let out = python(&server, &["registry"]);
    let id1: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("registry ok "))
        .unwrap()
        .parse()
        .unwrap();

    // 3,000 rides with AvroSerializer, and one value that is not Avro.
    let mut want = expected(&python(&server, &["produce", "rides", "3000"]));
    let rt = rt();
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        // Columns from the registered schema.
        c.batch_execute("CREATE STREAM rides WITH (topic = 'rides', format = 'avro')")
            .await
            .unwrap();
        let cols = rows(
            &c,
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'rides' ORDER BY ordinal_position",
        )
        .await;
        // (`rows` sorts.)
        assert_eq!(
            cols,
            [
                "note\ttext",
                "passenger_count\tinteger",
                "payment_type\ttext",
                "pickup\ttimestamp without time zone",
                "total_amount\tnumeric",
                "trip_distance\tdouble precision",
                "vendor_id\tinteger",
            ]
            .map(String::from),
        );
        c.batch_execute(
            "CREATE MATERIALIZED VIEW per_vendor AS \
             SELECT vendor_id, count(*) AS n, sum(total_amount) AS total \
             FROM rides GROUP BY vendor_id",
        )
        .await
        .unwrap();
        let view = "SELECT * FROM per_vendor ORDER BY vendor_id";
        converge(&c, view, &want).await;
        // The same through a query, and typed values.
        converge(
            &c,
            "SELECT vendor_id, count(*), sum(total_amount) FROM rides GROUP BY 1 ORDER BY 1",
            &want,
        )
        .await;
        assert_eq!(
            one(
                &c,
                "SELECT pickup, total_amount, note, payment_type FROM rides \
                 WHERE passenger_count = 2 AND vendor_id = 3 ORDER BY pickup LIMIT 1"
            )
            .await,
            "2024-01-01 00:02:00\t3.02\tride 2\tother"
        );
        // The value that is not Avro: counted, named.
        let errors = one(&c, "SHOW DECODE_ERRORS").await;
        assert!(errors.contains("rides\t1\t"), "{errors}");
        assert!(errors.contains("Confluent Avro wire format"), "{errors}");

        // COPY (SELECT …) TO STDOUT of the Avro stream.
        let copied = c
            .copy_out("COPY (SELECT vendor_id, total_amount FROM rides) TO STDOUT")
            .await
            .unwrap();
        let bytes: Vec<u8> = copied
            .map(|b| b.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 3000);
    });

    // Version 2 of the schema: `tip` added (default 0.5), `note` dropped.
    let more = expected(&python(&server, &["evolve", "rides", "500"]));
    add(&mut want, &more);
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        converge(&c, "SELECT * FROM per_vendor ORDER BY vendor_id", &want).await;
        // The stream read v2 records through v1 (its columns'): note is
        // NULL (v1's default), tip is not a column.
        assert_eq!(
            one(&c, "SELECT count(*), count(note) FROM rides").await,
            "3500\t1500"
        );
        // A stream created now has v2's columns; v1's records read with
        // v2's default tip.
        c.batch_execute("CREATE STREAM rides2 WITH (topic = 'rides', format = 'avro')")
            .await
            .unwrap();
        assert_eq!(
            one(&c, "SELECT count(*), sum(tip) FROM rides2").await,
            "3500\t2125"
        );
    });

    // INSERT into an Avro stream that names its columns: eddy registers
    // their schema, and confluent-kafka's deserializer reads the rows.
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE STREAM fares (vendor_id INT, total NUMERIC(10, 2), at TIMESTAMP, label TEXT) \
             WITH (topic = 'fares', format = 'avro'); \
             INSERT INTO fares VALUES (1, 12.50, '2024-05-01 10:00:00', 'a'), \
             (2, -0.05, '2024-05-01 10:00:01.5', NULL), (3, 0, NULL, 'c')",
        )
        .await
        .unwrap();
        assert_eq!(
            one(&c, "SELECT * FROM fares ORDER BY vendor_id").await,
            "1\t12.50\t2024-05-01 10:00:00\ta\n2\t-0.05\t2024-05-01 10:00:01.5\tNULL\n3\t0.00\tNULL\tc"
        );
    });
    let read = python(&server, &["consume", "fares", "3"]);
    let values: Vec<&str> = read
        .lines()
        .filter_map(|l| l.split_once(" value ").map(|(_, v)| v))
        .collect();
    assert_eq!(values.len(), 3, "{read}");
    assert_eq!(
        values[0],
        r#"{"at": "2024-05-01 10:00:00+00:00", "label": "a", "total": "12.50", "vendor_id": 1}"#
    );
    assert_eq!(
        values[1],
        r#"{"at": "2024-05-01 10:00:01.500000+00:00", "label": null, "total": "-0.05", "vendor_id": 2}"#
    );
    assert!(read.contains("consumed 3 old 3"), "{read}");

    // Sinks in Avro: Materialize's upsert sink (the key as text, the
    // value in Avro), a Debezium-envelope sink, and a ksqlDB persistent
    // query with VALUE_FORMAT='AVRO'.
    let registry = format!("http://{}", server.registry_addr);
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(&format!(
            "CREATE CONNECTION csr TO CONFLUENT SCHEMA REGISTRY (URL '{registry}'); \
             CREATE CONNECTION kafka TO KAFKA (BROKER '{}'); \
             CREATE SINK vendor_totals FROM per_vendor \
             INTO KAFKA CONNECTION kafka (TOPIC 'vendor_totals') KEY (vendor_id) \
             FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr ENVELOPE UPSERT; \
             CREATE SINK vendor_changes FROM per_vendor INTO TOPIC 'vendor_changes' FORMAT AVRO; \
             CREATE STREAM big_fares WITH (KAFKA_TOPIC = 'big_fares', VALUE_FORMAT = 'AVRO') AS \
             SELECT vendor_id, total FROM fares WHERE total > 1 EMIT CHANGES",
            server.addr
        ))
        .await
        .unwrap();
    });
    let read = python(&server, &["consume", "vendor_totals", "3"]);
    let totals: BTreeMap<i64, (i64, f64)> = read
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("key ")?.split_once(" value ")?;
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            let k: serde_json::Value = serde_json::from_str(k).unwrap();
            Some((
                k["vendor_id"].as_i64().unwrap(),
                (
                    v["n"].as_i64().unwrap(),
                    v["total"].as_str().unwrap().parse().unwrap(),
                ),
            ))
        })
        .collect();
    assert_eq!(totals, want, "{read}");
    let read = python(&server, &["consume", "vendor_changes", "3"]);
    assert!(read.contains("consumed 3 old 3"), "{read}");
    assert!(read.contains(r#"value {"after": {"n": "#), "{read}");
    let read = python(&server, &["consume", "big_fares", "1"]);
    assert!(read.contains(r#""total": "12.50""#), "{read}");
    assert!(read.contains("consumed 1 old 1"), "{read}");

    // The seed's AvroProducer (Avro keys and values), read through
    // Materialize's spelling.
    let seed = expected(&python(&server, &["seed", "taxi_rides", "200"]));
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE SOURCE taxi FROM KAFKA CONNECTION kafka (TOPIC 'taxi_rides') \
             FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr",
        )
        .await
        .unwrap();
        converge(
            &c,
            "SELECT vendor_id, count(*), sum(total_amount) FROM taxi GROUP BY 1 ORDER BY 1",
            &seed,
        )
        .await;
        // ksqlDB's spelling, the key column read from the Avro key (the
        // seed's `{"vendor_id": …}` records).
        c.batch_execute(
            "CREATE STREAM taxi_keyed (vendor_id INT KEY) WITH (KAFKA_TOPIC = 'taxi_rides', \
             KEY_FORMAT = 'AVRO', VALUE_FORMAT = 'AVRO')",
        )
        .await
        .unwrap();
        converge(
            &c,
            "SELECT vendor_id, count(*), sum(total_amount) FROM taxi_keyed GROUP BY 1 ORDER BY 1",
            &seed,
        )
        .await;
    });

    // After a restart: the registry's schemas, the stream and the view.
    server.restart();
    let out = python(&server, &["check", &id1.to_string()]);
    assert!(out.contains("check ok"), "{out}");
    rt.block_on(async {
        let c = connect(server.pg_addr).await;
        converge(&c, "SELECT * FROM per_vendor ORDER BY vendor_id", &want).await;
        assert_eq!(one(&c, "SELECT count(*) FROM fares").await, "3");
        // The sinks read their Avro topics back and write nothing twice:
        // the Debezium topic's changes still add up to the view.
        c.batch_execute(
            "CREATE STREAM vendor_changes_read WITH (topic = 'vendor_changes', format = 'avro')",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let net = one(
            &c,
            "SELECT sum(CASE WHEN after IS NOT NULL THEN 1 ELSE 0 END) \
                  - sum(CASE WHEN before IS NOT NULL THEN 1 ELSE 0 END) \
             FROM vendor_changes_read",
        )
        .await;
        let detail = one(
            &c,
            "SELECT count(*), count(after), count(before), min(after::text) FROM vendor_changes_read",
        )
        .await;
        let errors = one(&c, "SHOW DECODE_ERRORS").await;
        assert_eq!(net, "3", "{detail}\n{errors}");
    });
}

/// One HTTP/1.1 exchange on a fresh connection: the status line and body
/// (empty when the server closed the connection without answering).
fn http(addr: std::net::SocketAddr, request: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn the_registry_answers_garbage_with_errors_and_keeps_serving() {
    let server = TestServer::start();
    let addr = server.registry_addr;
    // Not HTTP at all.
    let (status, _) = http(addr, b"\x16\x03\x01garbage\r\n\r\n");
    assert!(status.is_empty() || status.contains("400"), "{status}");
    // A body that is not JSON, and a schema that is not Avro: 422 with
    // Confluent's error codes.
    let (status, body) = http(addr, &post("/subjects/s/versions", "{not json"));
    assert!(status.contains("422"), "{status} {body}");
    assert!(body.contains("\"error_code\":42201"), "{body}");
    let (status, body) = http(
        addr,
        &post(
            "/subjects/s/versions",
            r#"{"schema": "{\"type\": \"nope\"}"}"#,
        ),
    );
    assert!(status.contains("422"), "{status} {body}");
    // A body over the limit (axum's 2 MB): refused, not buffered.
    let big = format!(r#"{{"schema": "{}"}}"#, "x".repeat(3 << 20));
    let (status, _) = http(addr, &post("/subjects/s/versions", &big));
    assert!(status.is_empty() || status.contains("413"), "{status}");
    // Unknown paths and ids.
    let (status, body) = http(
        addr,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains("404"), "{status} {body}");
    let (status, body) = http(
        addr,
        b"GET /schemas/ids/abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        status.contains("404") && body.contains("40403"),
        "{status} {body}"
    );
    // Still serving: a schema registers and reads back.
    let (status, body) = http(
        addr,
        &post("/subjects/s/versions", r#"{"schema": "\"string\""}"#),
    );
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(body, r#"{"id":1}"#);
    let (status, body) = http(
        addr,
        b"GET /subjects/s/versions/latest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        body,
        r#"{"id":1,"schema":"\"string\"","subject":"s","version":1}"#
    );
}

/// JSON values framed with a JSON Schema's id (confluent-kafka's
/// `JSONSerializer`, ksqlDB's `JSON_SR`): a stream with the schema's
/// properties as columns, a view compared with the producer's sums, and
/// INSERT read back by `JSONDeserializer`.
#[test]
fn json_schema_values_through_the_registry() {
    let server = TestServer::start();
    let out = python(&server, &["json_sr_produce", "readings", "400"]);
    let want: BTreeMap<String, (i64, f64)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("expect "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect();
    rt().block_on(async {
        let c = connect(server.pg_addr).await;
        c.batch_execute(
            "CREATE STREAM readings WITH (KAFKA_TOPIC = 'readings', VALUE_FORMAT = 'JSON_SR'); \
             CREATE MATERIALIZED VIEW per_sensor AS \
             SELECT sensor, count(*) AS n, sum(value) AS total FROM readings GROUP BY sensor",
        )
        .await
        .unwrap();
        let got: BTreeMap<String, (i64, f64)> = rows(&c, "SELECT sensor, n, total FROM per_sensor")
            .await
            .iter()
            .map(|r| {
                let f: Vec<&str> = r.split('\t').collect();
                (f[0].to_string(), (f[1].parse().unwrap(), f[2].parse().unwrap()))
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            one(&c, "SELECT max(count) FROM readings").await,
            "399"
        );
        c.batch_execute(
            "CREATE STREAM alerts (sensor text, level int) WITH (KAFKA_TOPIC = 'alerts', VALUE_FORMAT = 'JSON_SR'); \
             INSERT INTO alerts VALUES ('s1', 3), ('s2', NULL)",
        )
        .await
        .unwrap();
        assert_eq!(
            one(&c, "SELECT sensor, level FROM alerts ORDER BY sensor").await,
            "s1\t3\ns2\tNULL"
        );
    });
    let out = python(&server, &["json_sr_consume", "alerts", "2"]);
    assert!(
        out.contains(r#"value {"level": 3, "sensor": "s1"}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"value {"level": null, "sensor": "s2"}"#),
        "{out}"
    );
}
