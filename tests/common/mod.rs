//! Shared test support: a real eddy server on 127.0.0.1:0 over a temporary
//! data directory, running on its own tokio runtime so test bodies can use
//! blocking clients (librdkafka, kcat, Python) freely. Stops by itself when
//! dropped.

#![allow(dead_code)]

pub mod slt;

use std::path::PathBuf;

use eddy::server::{self, Handle, ServeArgs};

pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    handle: Option<Handle>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub pg_addr: std::net::SocketAddr,
    /// The schema registry's address (`http://` it is its URL).
    pub registry_addr: std::net::SocketAddr,
    /// The HTTP listener's address (`/metrics`).
    pub http_addr: std::net::SocketAddr,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(ServeArgs::default())
    }

    pub fn start_with(mut args: ServeArgs) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        args.kafka_addr = "127.0.0.1:0".into();
        args.pg_addr = "127.0.0.1:0".into();
        args.registry_addr = "127.0.0.1:0".into();
        args.http_addr = "127.0.0.1:0".into();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let handle = rt
            .block_on(server::start(dir.path().to_path_buf(), args))
            .expect("server starts");
        let addr = handle.kafka_addr.to_string();
        let pg_addr = handle.pg_addr;
        let registry_addr = handle.registry_addr;
        let http_addr = handle.http_addr;
        TestServer {
            rt,
            handle: Some(handle),
            dir,
            addr,
            pg_addr,
            registry_addr,
            http_addr,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn log(&self) -> &std::sync::Arc<eddy::log::Log> {
        &self.handle.as_ref().expect("running").log
    }

    /// Stop cleanly and start again over the same data directory (ports
    /// change).
    pub fn restart(&mut self) {
        self.stop();
        let args = ServeArgs {
            kafka_addr: "127.0.0.1:0".into(),
            pg_addr: "127.0.0.1:0".into(),
            registry_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            ..ServeArgs::default()
        };
        let handle = self
            .rt
            .block_on(server::start(self.dir.path().to_path_buf(), args))
            .expect("server restarts");
        self.addr = handle.kafka_addr.to_string();
        self.pg_addr = handle.pg_addr;
        self.registry_addr = handle.registry_addr;
        self.http_addr = handle.http_addr;
        self.handle = Some(handle);
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown()).expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(h.shutdown());
        }
    }
}

/// `psql` connected to `addr` as user eddy to database eddy, without the
/// user's psqlrc, stopping at the first error.
pub fn psql_command(addr: std::net::SocketAddr) -> std::process::Command {
    let mut c = std::process::Command::new("psql");
    c.args(["-X", "-v", "ON_ERROR_STOP=1", "-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string(), "-U", "eddy", "-d", "eddy"]);
    c
}

/// Each row of `batches` as its values' display text joined by spaces
/// (NULL as an empty string), for comparing query results in-process.
pub fn lines(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join(" "));
        }
    }
    out
}
