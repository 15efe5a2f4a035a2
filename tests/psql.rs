//! The real `psql` binary runs the example scripts in `sql/` against a real
//! eddy server; its output must equal the `.out` file beside each script
//! (what psql prints for PostgreSQL given the same statements and rows).
//! A script with a producer beside it (`X.py` for `X.sql`) has it run
//! first, against the same server.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;

#[test]
fn sql_example_scripts_through_psql() {
    assert!(
        Command::new("psql").arg("--version").output().is_ok(),
        "psql is required (apt-get install postgresql-client, or run scripts/test, which installs it)"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    for script in scripts {
        let server = TestServer::start();
        // A script's producer (`X.py` beside `X.sql`) runs first, with the
        // server's Kafka and schema registry addresses.
        let producer = script.with_extension("py");
        if producer.exists() {
            let out = Command::new("python3")
                .arg(&producer)
                .env("BOOTSTRAP", &server.addr)
                .env("REGISTRY", format!("http://{}", server.registry_addr))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} failed:\n{}",
                producer.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = common::psql_command(server.pg_addr)
            .arg("-f")
            .arg(&script)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed:\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let expected_path = script.with_extension("out");
        if std::env::var_os("EDDY_BLESS").is_some() {
            std::fs::write(&expected_path, stdout.as_bytes()).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert_eq!(stdout, expected, "{}", script.display());
    }
}
