//! TLS on both listeners against a real `eddy serve` process, with the
//! clients people use and a certificate made by `openssl` for 127.0.0.1:
//!
//! - pgwire (`--pg-tls-cert/--pg-tls-key`): psql and psycopg verify the
//!   server (`sslmode=verify-full`) and log in with SCRAM over TLS; with
//!   `--pg-tls-required` a client without TLS is refused (FATAL 28000,
//!   "no encryption") and a wrong password over TLS still is (28P01);
//! - Kafka (`--kafka-tls-cert/--kafka-tls-key`): kcat over SSL and
//!   confluent-kafka over SASL_SSL (SCRAM-SHA-256) produce and consume,
//!   verifying the server; a plaintext client gets nothing and the
//!   listener serves on.

#![allow(clippy::unwrap_used)]

#[path = "common/serve.rs"]
mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serve::Serve;

const BIN: &str = env!("CARGO_BIN_EXE_eddy");

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// psql with a connection string; (succeeded, stdout + stderr).
fn psql(conninfo: &str, password: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args([conninfo, "-w", "-XAtc", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql is required (apt-get install postgresql-client, or scripts/test)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        // cargo test points LD_LIBRARY_PATH at the rdkafka crate's own
        // librdkafka (no OpenSSL); Python's clients use their own.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pgwire_over_tls_verified_and_required() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let data = dir.path().join("data");
    let server = Serve::start_with(
        BIN,
        &data,
        &[
            "--pg-auth",
            "scram-sha-256",
            "--superuser-password",
            "adminpw",
            "--pg-tls-cert",
            cert.to_str().unwrap(),
            "--pg-tls-key",
            key.to_str().unwrap(),
            "--pg-tls-required",
        ],
    );
    let base = format!(
        "host=127.0.0.1 port={} user=eddy dbname=eddy sslrootcert={}",
        server.pg.port(),
        cert.display()
    );

    // psql verifies the certificate, logs in with SCRAM over TLS, and
    // says the connection is encrypted.
    let (ok, out) = psql(
        &format!("{base} sslmode=verify-full"),
        "adminpw",
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2); SELECT sum(a) FROM t",
    );
    assert!(ok, "{out}");
    assert!(out.contains("3"), "{out}");
    let (ok, out) = psql(
        &format!("{base} sslmode=verify-full"),
        "adminpw",
        r"\conninfo",
    );
    assert!(ok && out.contains("SSL connection"), "{out}");

    // Without TLS: refused as PostgreSQL refuses it under hostssl.
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "adminpw", "SELECT 1");
    assert!(!ok && out.contains("no encryption"), "{out}");
    // A wrong password over TLS.
    let (ok, out) = psql(&format!("{base} sslmode=require"), "nope", "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );

    // psycopg: verify-full, and the session reports TLS in use.
    let out = python(&format!(
        "import psycopg\n\
         with psycopg.connect('{base} sslmode=verify-full password=adminpw') as c:\n\
         \x20   print('ssl', c.pgconn.ssl_in_use)\n\
         \x20   print('sum', c.execute('SELECT sum(a) FROM t').fetchone()[0])\n"
    ));
    assert!(out.contains("ssl True") && out.contains("sum 3"), "{out}");

    // The server is fine after all of it.
    let (ok, out) = psql(
        &format!("{base} sslmode=require"),
        "adminpw",
        "SELECT count(*) FROM t",
    );
    assert!(ok && out.trim() == "2", "{out}");
}

#[test]
fn pgwire_tls_is_offered_not_forced_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let data = dir.path().join("data");
    let server = Serve::start_with(
        BIN,
        &data,
        &[
            "--pg-tls-cert",
            cert.to_str().unwrap(),
            "--pg-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let base = format!(
        "host=127.0.0.1 port={} user=eddy dbname=eddy",
        server.pg.port()
    );
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "", r"\conninfo");
    assert!(ok && !out.contains("SSL connection"), "{out}");
    let (ok, out) = psql(&format!("{base} sslmode=require"), "", r"\conninfo");
    assert!(ok && out.contains("SSL connection"), "{out}");
}

#[test]
fn kafka_over_tls_with_kcat_and_confluent_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let data = dir.path().join("data");
    let server = Serve::start_with(
        BIN,
        &data,
        &[
            "--kafka-sasl",
            "SCRAM-SHA-256,SCRAM-SHA-512",
            "--superuser-password",
            "adminpw",
            "--kafka-tls-cert",
            cert.to_str().unwrap(),
            "--kafka-tls-key",
            key.to_str().unwrap(),
        ],
    );
    let kafka = server.kafka.clone();
    let ca = cert.to_str().unwrap();
    let kcat = |extra: &[&str]| {
        let mut c = Command::new("kcat");
        c.args(["-b", &kafka, "-X", "security.protocol=SASL_SSL"])
            .args(["-X", "sasl.mechanisms=SCRAM-SHA-256"])
            .args(["-X", "sasl.username=eddy", "-X", "sasl.password=adminpw"])
            .args(["-X", &format!("ssl.ca.location={ca}")])
            .args(extra)
            .env_remove("LD_LIBRARY_PATH");
        c
    };
    let mut p = kcat(&["-P", "-t", "secure"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is required (apt-get install kcat, or scripts/test)");
    p.stdin
        .take()
        .unwrap()
        .write_all(b"{\"n\": 1}\n{\"n\": 2}\n")
        .unwrap();
    assert!(p.wait().unwrap().success());
    let out = kcat(&["-C", "-t", "secure", "-e", "-f", "%s\n"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // A client that does not speak TLS gets no answer; the listener
    // serves the next client.
    let plain = Command::new("kcat")
        .args(["-b", &kafka, "-L", "-m", "3"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!plain.status.success());

    let out = python(&format!(
        "from confluent_kafka import Producer, Consumer\n\
         conf = {{'bootstrap.servers': '{kafka}', 'security.protocol': 'SASL_SSL',\n\
                 'ssl.ca.location': '{ca}', 'sasl.mechanism': 'SCRAM-SHA-512',\n\
                 'sasl.username': 'eddy', 'sasl.password': 'adminpw'}}\n\
         p = Producer(conf)\n\
         errors = []\n\
         p.produce('secure', value=b'{{\"n\": 3}}', on_delivery=lambda e, m: errors.append(e))\n\
         p.flush(15)\n\
         print('produced', errors)\n\
         c = Consumer({{**conf, 'group.id': 'py', 'auto.offset.reset': 'earliest'}})\n\
         c.subscribe(['secure'])\n\
         n = 0\n\
         for _ in range(100):\n\
         \x20   m = c.poll(0.2)\n\
         \x20   if m is not None and m.error() is None:\n\
         \x20       n += 1\n\
         \x20   if n == 3:\n\
         \x20       break\n\
         print('consumed', n)\n\
         c.close()\n"
    ));
    assert!(
        out.contains("produced [None]") && out.contains("consumed 3"),
        "{out}"
    );

    // A wrong password over TLS is refused.
    let out = python(&format!(
        "from confluent_kafka.admin import AdminClient\n\
         a = AdminClient({{'bootstrap.servers': '{kafka}', 'security.protocol': 'SASL_SSL',\n\
                 'ssl.ca.location': '{ca}', 'sasl.mechanism': 'SCRAM-SHA-256',\n\
                 'sasl.username': 'eddy', 'sasl.password': 'wrong'}})\n\
         try:\n\
         \x20   a.list_topics(timeout=5)\n\
         \x20   print('listed')\n\
         except Exception as e:\n\
         \x20   print('refused', e)\n"
    ));
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn tls_flags_with_a_missing_file_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "serve"])
        .args(["--kafka-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"])
        .args(["--pg-tls-cert", "/nonexistent.crt"])
        .args(["--pg-tls-key", "/nonexistent.key"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.crt"), "{err}");
    // Without its key, clap refuses the certificate.
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "serve"])
        .args(["--pg-tls-cert", "/nonexistent.crt"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pg-tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
