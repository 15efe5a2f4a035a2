//! Benchmark W7 (`../shared/bench/README.md`): point lookups by key on a
//! 100,000-row materialized view, pgbench with a custom script and 8
//! clients, against PostgreSQL 15 serving the same rows from a table with a
//! primary key, in the same run, A B A B interleaved.
//!
//! eddy: `eddy serve` (release); a table of 100,000 events loaded with one
//! INSERT … SELECT, and a materialized view grouping them by `id` (one row
//! per id). PostgreSQL: the view's rows in a table `w7` with `id` as
//! primary key, on a fresh cluster (initdb) under the `postgres` user.
//! Both read by `SELECT * FROM w7 WHERE id = :k` with `k` uniform in
//! 1..=100,000, in pgbench's simple and extended query modes (and
//! prepared). TPS excluding connection time; median of W7_RUNS runs
//! (default 3) of W7_SECONDS (default 10) each.
//!
//! Run through `scripts/bench.sh`; needs `pgbench` and PostgreSQL 15's
//! binaries (`/usr/lib/postgresql/15/bin`, `W7_PG_BIN`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/serve.rs"]
mod serve;

use std::process::{Command, Stdio};
use std::time::Duration;

const ROWS: u64 = 100_000;
const CLIENTS: u32 = 8;

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Run `sql` through psql against host:port as `user`; panics on failure.
fn psql(port: u16, user: &str, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// TPS of one pgbench run of `script` in `mode`.
fn pgbench(bin: &str, port: u16, user: &str, db: &str, script: &str, mode: &str, secs: u32) -> f64 {
    let out = Command::new(bin)
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-M",
            mode,
            "-f",
            script,
            db,
        ])
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench {mode}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(failed, 0, "pgbench {mode}: failed transactions\n{text}");
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{text}"))
}

/// A PostgreSQL cluster for the run, stopped on drop.
struct Postgres {
    bin: String,
    dir: String,
    port: u16,
}

impl Postgres {
    fn start(bin: &str) -> Postgres {
        let port = free_port();
        let dir = format!("/tmp/eddy-w7-pg-{}", std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = |args: &[&str]| {
            let status = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .status()
                .expect("runuser");
            assert!(status.success(), "{args:?}");
        };
        Command::new("chown")
            .args(["postgres:postgres", &dir])
            .status()
            .unwrap();
        let data = format!("{dir}/data");
        as_postgres(&[
            &format!("{bin}/initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        as_postgres(&[
            &format!("{bin}/pg_ctl"),
            "-D",
            &data,
            "-l",
            &format!("{dir}/log"),
            "-w",
            "-o",
            &format!("-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c max_connections=50"),
            "start",
        ]);
        Postgres {
            bin: bin.to_string(),
            dir,
            port,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args([
                &format!("{}/pg_ctl", self.bin),
                "-D",
                &format!("{}/data", self.dir),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("W7_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let secs: u32 = std::env::var("W7_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let bin = std::env::var("EDDY_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/eddy", env!("CARGO_MANIFEST_DIR")));
    let pg_bin =
        std::env::var("W7_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_string());
    let pgbench_bin = format!("{pg_bin}/pgbench");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lookup.sql");
    std::fs::write(
        &script,
        format!("\\set k random(1, {ROWS})\nSELECT * FROM w7 WHERE id = :k;\n"),
    )
    .unwrap();
    let script = script.to_string_lossy().to_string();

    let data = dir.path().join("eddy");
    let eddy = serve::Serve::start(&bin, &data);
    let eport = eddy.pg.port();
    psql(
        eport,
        "eddy",
        "eddy",
        "CREATE TABLE w7_events (id int, n int, payload text)",
    );
    psql(
        eport,
        "eddy",
        "eddy",
        &format!(
            "INSERT INTO w7_events SELECT value, value % 1000, 'payload ' || value FROM generate_series(1, {ROWS})"
        ),
    );
    psql(
        eport,
        "eddy",
        "eddy",
        "CREATE MATERIALIZED VIEW w7 AS SELECT id, count(*) AS c, sum(n) AS total, max(payload) AS payload FROM w7_events GROUP BY id",
    );
    // Wait until the view holds every row.
    let start = std::time::Instant::now();
    while psql(eport, "eddy", "eddy", "SELECT count(*) FROM w7") != ROWS.to_string() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "view never filled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        psql(
            eport,
            "eddy",
            "eddy",
            "SELECT c, total, payload FROM w7 WHERE id = 4242"
        ),
        "1|242|payload 4242"
    );

    let pg = Postgres::start(&pg_bin);
    for sql in [
        "CREATE TABLE w7 (id int PRIMARY KEY, c bigint, total bigint, payload text)".to_string(),
        format!(
            "INSERT INTO w7 SELECT g, 1, g % 1000, 'payload ' || g FROM generate_series(1, {ROWS}) g"
        ),
        "VACUUM ANALYZE w7".to_string(),
    ] {
        psql(pg.port, "postgres", "postgres", &sql);
    }

    let modes = ["simple", "extended", "prepared"];
    let mut eddy_tps: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    let mut pg_tps: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    let mut ratios: Vec<Vec<f64>> = vec![vec![]; modes.len()];
    for run in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            eprintln!("W7 run {}/{runs}, {mode}", run + 1);
            let e = pgbench(&pgbench_bin, eport, "eddy", "eddy", &script, mode, secs);
            let p = pgbench(
                &pgbench_bin,
                pg.port,
                "postgres",
                "postgres",
                &script,
                mode,
                secs,
            );
            eddy_tps[i].push(e);
            pg_tps[i].push(p);
            ratios[i].push(e / p);
        }
    }
    println!(
        "pgbench ({CLIENTS} clients, 2 threads, {secs} s per run) running `SELECT * FROM w7 WHERE id = :k` (k uniform over {ROWS} ids): eddy's materialized view (GROUP BY id over a table of {ROWS} rows) against PostgreSQL 15's table with a primary key, on the same machine, interleaved; TPS without connection time, median of {runs} runs (min–max)."
    );
    println!();
    println!("| W7 query mode | eddy TPS | PostgreSQL TPS | eddy / PostgreSQL |");
    println!("|---|---|---|---|");
    for (i, mode) in modes.iter().enumerate() {
        let (e, elo, ehi) = median(eddy_tps[i].clone());
        let (p, plo, phi) = median(pg_tps[i].clone());
        let (r, rlo, rhi) = median(ratios[i].clone());
        println!(
            "| {mode} | {e:.0} ({elo:.0}–{ehi:.0}) | {p:.0} ({plo:.0}–{phi:.0}) | {r:.2} ({rlo:.2}–{rhi:.2}) |"
        );
    }
}
