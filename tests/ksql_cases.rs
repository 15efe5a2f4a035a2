//! ksqlDB's query-validation tests, played against eddy: each case file
//! in `tests/ksql_cases/` is in ksqlDB's own format
//! (`ksqldb-functional-tests/src/test/resources/query-validation-tests`):
//! statements, input records (topic, key, value, timestamp) and the output
//! records expected on each topic. The statements go over pgwire, the
//! inputs are produced one record at a time with librdkafka (each one
//! processed before the next, as ksqlDB's test driver does), and the
//! outputs are read back with a librdkafka consumer.
//!
//! Keys are serialized as the statements declare (`KEY_FORMAT` 'KAFKA':
//! INT as 4 bytes, BIGINT 8, big-endian; 'JSON': JSON text; else text),
//! output topics inheriting their source's format as ksqlDB's do.
//!
//! Compared: per output topic, the records in order: the key as text and
//! the value as JSON, field names in any case (eddy writes lower-case
//! names). Not compared: timestamps (inputs are produced a day later than
//! written, since librdkafka sends a timestamp of 0 as "now"); a windowed
//! output's key (its value is compared). A case with `expectedException` passes when a statement
//! fails. The runner prints every case and how it went, and fails if any
//! failed.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::connect;
use eddy::log::LogStore;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

/// How much later than written inputs are produced (see `play`).
const DAY_MS: i64 = 86_400_000;

/// A JSON value with object keys lower-cased (eddy folds unquoted names).
fn folded(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), folded(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(folded).collect()),
        other => other.clone(),
    }
}

/// A record key as text: a string as is, anything else as JSON.
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// How a topic's keys are serialized, as the case's statements declare
/// it (ksqlDB's test driver serializes keys with the topic's key serde):
/// `KEY_FORMAT` (`KAFKA`, `JSON`; none: eddy's text) and the key column's
/// type. Output topics of `… AS SELECT` inherit their source's format
/// unless their own `WITH` names one, as ksqlDB's do.
#[derive(Debug, Clone, Default)]
struct KeyFormat {
    format: Option<String>,
    key_type: Option<String>,
}

/// `WITH (…)`'s `key` value in `stmt` (case-insensitive, quotes off; the
/// key a whole word: `format` is not the end of `value_format`).
fn with_option(stmt: &str, key: &str) -> Option<String> {
    let lower = stmt.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(key) {
        let at = from + found;
        from = at + key.len();
        let before = lower[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = stmt[at + key.len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start().strip_prefix('\'')?;
        return Some(rest[..rest.find('\'')?].to_string());
    }
    None
}

fn key_formats(statements: &[String]) -> BTreeMap<String, KeyFormat> {
    let mut by_name: BTreeMap<String, KeyFormat> = BTreeMap::new();
    let mut topics = BTreeMap::new();
    for stmt in statements {
        let words: Vec<&str> = stmt
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let Some(at) = upper.iter().position(|w| w == "STREAM" || w == "TABLE") else {
            continue;
        };
        if upper.first().map(String::as_str) != Some("CREATE") {
            continue;
        }
        let Some(name) = words.get(at + 1) else {
            continue;
        };
        let name = name.to_ascii_uppercase();
        let as_select = upper.iter().any(|w| w == "SELECT");
        let mut kf = match as_select {
            // Inherited from the first relation after FROM.
            true => upper
                .iter()
                .position(|w| w == "FROM")
                .and_then(|f| upper.get(f + 1))
                .and_then(|src| by_name.get(src))
                .cloned()
                .unwrap_or_default(),
            // The KEY / PRIMARY KEY column's type.
            false => KeyFormat {
                format: None,
                key_type: upper.iter().position(|w| w == "KEY").and_then(|k| {
                    let k = if upper[k - 1] == "PRIMARY" { k - 1 } else { k };
                    upper.get(k - 1).cloned()
                }),
            },
        };
        if let Some(f) = with_option(stmt, "key_format").or_else(|| with_option(stmt, "format")) {
            kf.format = Some(f.to_ascii_uppercase());
        }
        let topic = with_option(stmt, "kafka_topic").unwrap_or_else(|| name.clone());
        by_name.insert(name, kf.clone());
        topics.insert(topic, kf);
    }
    topics
}

/// An input key in the topic's key format.
fn key_bytes(v: &Value, kf: Option<&KeyFormat>) -> Option<Vec<u8>> {
    let format = kf.and_then(|k| k.format.as_deref());
    match (format, v) {
        (_, Value::Null) => None,
        (Some("JSON"), v) => Some(v.to_string().into_bytes()),
        (Some("KAFKA"), Value::Number(n)) => match kf.and_then(|k| k.key_type.as_deref()) {
            Some("INT" | "INTEGER") => Some((n.as_i64()? as i32).to_be_bytes().to_vec()),
            Some("DOUBLE") => Some(n.as_f64()?.to_be_bytes().to_vec()),
            _ => Some(n.as_i64()?.to_be_bytes().to_vec()),
        },
        (_, v) => key_text(v).map(String::into_bytes),
    }
}

/// An output key as text, read in the topic's key format with the type
/// the expected key has.
fn key_of(bytes: &[u8], kf: Option<&KeyFormat>, expected: &Value) -> String {
    match (kf.and_then(|k| k.format.as_deref()), expected) {
        (Some("JSON"), _) => serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| key_text(&v))
            .unwrap_or_else(|| format!("{bytes:?}")),
        (Some("KAFKA"), Value::Number(n)) => match bytes.len() {
            4 => i32::from_be_bytes(bytes.try_into().unwrap()).to_string(),
            8 if n.is_f64() => f64::from_be_bytes(bytes.try_into().unwrap()).to_string(),
            8 => i64::from_be_bytes(bytes.try_into().unwrap()).to_string(),
            _ => format!("{bytes:?}"),
        },
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// An expected output record: key (as the case writes it), value (None:
/// a tombstone), windowed.
type Expected = (Value, Option<Value>, bool);

#[derive(Debug, PartialEq)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Value>,
}

fn consume(addr: &str, topic: &str, want: usize) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("qtt-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    // Until the records expected came and a little more (one too many
    // fails the case), or 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consuming {topic}: {e}");
                    continue;
                }
            };
            got.push(Record {
                key: m.key().map(<[u8]>::to_vec),
                value: m
                    .payload()
                    .map(|v| serde_json::from_slice(v).unwrap_or(Value::Null)),
            });
        }
        if got.len() >= want {
            let at = *settle.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
    }
    got
}

/// Play one case; Err says how it failed.
fn play(case: &Value) -> Result<(), String> {
    let server = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(connect(server.pg_addr));
    let statements: Vec<String> = case["statements"]
        .as_array()
        .ok_or("no statements")?
        .iter()
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    let expect_error = case.get("expectedException").is_some();
    // Input topics (and those the case declares) exist before the
    // statements, with one partition unless the case says otherwise, as
    // ksqlDB's test driver makes them.
    let mut topics: BTreeMap<String, i32> = BTreeMap::new();
    for t in case["topics"].as_array().cloned().unwrap_or_default() {
        if let Some(name) = t["name"].as_str() {
            let n = t["partitions"].as_i64().unwrap_or(1) as i32;
            topics.insert(name.to_string(), n);
        }
    }
    for i in case["inputs"].as_array().cloned().unwrap_or_default() {
        if let Some(name) = i["topic"].as_str() {
            topics.entry(name.to_string()).or_insert(1);
        }
    }
    for (name, partitions) in &topics {
        server
            .log()
            .create_topic(name, *partitions, Default::default())
            .map_err(|e| format!("topic {name}: {e}"))?;
    }
    // Inputs go to topics the statements declare; create those first by
    // running the CREATE … (columns) statements, the queries after the
    // inputs of their sources exist (as ksqlDB starts them before any).
    for s in &statements {
        if let Err(e) = rt.block_on(c.batch_execute(s)) {
            return match expect_error {
                true => Ok(()),
                false => Err(format!("{s}: {e}")),
            };
        }
    }
    if expect_error {
        return Err("every statement ran; an error was expected".into());
    }
    let formats = key_formats(&statements);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &server.addr)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for input in case["inputs"].as_array().cloned().unwrap_or_default() {
        let topic = input["topic"].as_str().ok_or("an input without a topic")?;
        let key = key_bytes(&input["key"], formats.get(topic));
        let value = match &input["value"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        };
        let mut record: BaseRecord<'_, Vec<u8>, String> = BaseRecord::to(topic);
        if let Some(k) = &key {
            record = record.key(k);
        }
        if let Some(v) = &value {
            record = record.payload(v);
        }
        if let Some(t) = input["timestamp"].as_i64() {
            // librdkafka sends a timestamp of 0 as "now": every input is
            // produced a day later than written (windows, aligned on the
            // day, stay the same windows).
            record = record.timestamp(t + DAY_MS);
        }
        producer.send(record).map_err(|(e, _)| e.to_string())?;
        producer
            .flush(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        rt.block_on(c.batch_execute("FLUSH"))
            .map_err(|e| e.to_string())?;
    }
    if std::env::var("KSQL_DEBUG").is_ok() {
        for q in std::env::var("KSQL_DEBUG").unwrap().split(';') {
            let r = rt.block_on(common::slt::rows(&c, q));
            eprintln!("{q}: {r:?}");
        }
    }
    let mut want: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    for o in case["outputs"].as_array().cloned().unwrap_or_default() {
        let topic = o["topic"].as_str().ok_or("an output without a topic")?;
        let windowed = o.get("window").is_some();
        let value = match &o["value"] {
            Value::Null => None,
            v => Some(folded(v)),
        };
        want.entry(topic.to_string())
            .or_default()
            .push((o["key"].clone(), value, windowed));
    }
    for (topic, expected) in &want {
        let got = consume(&server.addr, topic, expected.len());
        let mut problems = Vec::new();
        for (i, (key, value, windowed)) in expected.iter().enumerate() {
            let Some(g) = got.get(i) else {
                problems.push(format!("record {i}: missing (want {key:?} {value:?})"));
                continue;
            };
            let gv = g.value.as_ref().map(folded);
            let got_key = g
                .key
                .as_deref()
                .map(|k| key_of(k, formats.get(topic.as_str()), key));
            let key = key_text(key);
            if (!windowed && got_key != key) || gv != *value {
                problems.push(format!(
                    "record {i}: got {got_key:?} {:?}, want {key:?} {value:?}",
                    gv.map(|v| v.to_string())
                ));
            }
        }
        for extra in got.iter().skip(expected.len()) {
            problems.push(format!("an extra record {extra:?}"));
        }
        if !problems.is_empty() {
            return Err(format!("topic {topic}: {}", problems.join("; ")));
        }
    }
    Ok(())
}

#[test]
fn ksqldb_query_validation_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ksql_cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let only = std::env::var("KSQL_CASE").ok();
    let (mut passed, mut failed) = (0, Vec::new());
    for f in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        for case in doc["tests"].as_array().cloned().unwrap_or_default() {
            let name = case["name"].as_str().unwrap_or("?").to_string();
            if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            match play(&case) {
                Ok(()) => {
                    passed += 1;
                    println!("ok    {file}: {name}");
                }
                Err(e) => {
                    println!("FAIL  {file}: {name}: {e}");
                    failed.push(format!("{file}: {name}: {e}"));
                }
            }
        }
    }
    println!("{passed} passed, {} failed", failed.len());
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    assert!(passed > 0, "no case ran");
}
