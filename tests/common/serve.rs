//! A real `eddy serve` process for tests and benchmarks that need one
//! outside their own process (kill -9, release builds). Included with
//! `#[path]` by `tests/views.rs` and `benches/kafka_w1.rs`.

#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An `eddy serve` child process (binary `bin`) over a data directory,
/// on ports chosen by the OS; killed when dropped.
pub struct Serve {
    child: Child,
    pub pg: std::net::SocketAddr,
    pub kafka: String,
}

impl Serve {
    pub fn start(bin: &str, dir: &std::path::Path) -> Serve {
        Self::start_with(bin, dir, &[])
    }

    /// With more `serve` flags.
    pub fn start_with(bin: &str, dir: &std::path::Path, flags: &[&str]) -> Serve {
        Self::spawn(bin, dir, flags, Stdio::null())
    }

    /// With more `serve` flags, its stderr (log lines, panic reports)
    /// appended to `log`.
    pub fn start_logging(
        bin: &str,
        dir: &std::path::Path,
        flags: &[&str],
        log: &std::path::Path,
    ) -> Serve {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Self::spawn(bin, dir, flags, Stdio::from(file))
    }

    fn spawn(bin: &str, dir: &std::path::Path, flags: &[&str], stderr: Stdio) -> Serve {
        let mut child = Command::new(bin)
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "serve",
                "--kafka-addr",
                "127.0.0.1:0",
                "--pg-addr",
                "127.0.0.1:0",
                "--registry-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} serve: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "eddy: Kafka protocol on ADDR, PostgreSQL protocol on ADDR,
        // schema registry on http://ADDR"
        let kafka = line
            .split("Kafka protocol on ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        let pg = line
            .split("PostgreSQL protocol on ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .parse()
            .unwrap();
        Serve { child, pg, kafka }
    }

    /// SIGTERM, and wait up to `within` for the process to end: its exit
    /// status, or None if it was still running (then it is killed).
    pub fn terminate(mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        std::time::Duration::from_millis(ticks * 10) // USER_HZ = 100
    }

    /// SIGKILL, and wait for the process to end.
    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
