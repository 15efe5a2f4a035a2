//! Prometheus metrics (the `prometheus` crate). Two kinds:
//!
//! - Counters, histograms and gauges the server updates as it works, kept
//!   in one process-wide registry ([`metrics`]): Kafka requests by API and
//!   their latency, records and bytes produced and fetched, open
//!   connections per protocol, dataflow tick and checkpoint durations.
//! - Figures read from the system tables at each scrape
//!   (`server/http.rs`): partition offsets and sizes, consumer-group lag,
//!   each view's rows, backlog, state and watermark, decode errors. They
//!   are the `eddy_catalog` tables' own numbers, so `/metrics` and SQL
//!   never disagree.
//!
//! Every metric is named in README.md ("Metrics").

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub struct Metrics {
    pub registry: Registry,
    /// `eddy_kafka_requests_total{api}`
    pub kafka_requests: IntCounterVec,
    /// `eddy_kafka_request_duration_seconds{api}`
    pub kafka_request_seconds: HistogramVec,
    /// `eddy_kafka_produced_records_total`, `…_bytes_total`
    pub produced_records: IntCounter,
    pub produced_bytes: IntCounter,
    /// `eddy_kafka_fetched_bytes_total`
    pub fetched_bytes: IntCounter,
    /// `eddy_connections{protocol}` open now, and
    /// `eddy_connections_accepted_total{protocol}`.
    pub connections: IntGaugeVec,
    pub connections_accepted: IntCounterVec,
    /// `eddy_dataflow_tick_duration_seconds`
    pub tick_seconds: Histogram,
    /// `eddy_dataflow_last_tick_timestamp_seconds`
    pub last_tick: IntGauge,
    /// `eddy_checkpoint_duration_seconds`
    pub checkpoint_seconds: Histogram,
}

/// Latency buckets from 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let histogram =
            |name: &str, help: &str| HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
        let m = Metrics {
            kafka_requests: IntCounterVec::new(
                Opts::new(
                    "eddy_kafka_requests_total",
                    "Kafka requests handled, by API",
                ),
                &["api"],
            )?,
            kafka_request_seconds: HistogramVec::new(
                histogram(
                    "eddy_kafka_request_duration_seconds",
                    "Time to handle a Kafka request (long polls included), by API",
                ),
                &["api"],
            )?,
            produced_records: IntCounter::new(
                "eddy_kafka_produced_records_total",
                "Records appended by Kafka produce requests (retried duplicates not counted)",
            )?,
            produced_bytes: IntCounter::new(
                "eddy_kafka_produced_bytes_total",
                "Bytes of record batches appended by Kafka produce requests",
            )?,
            fetched_bytes: IntCounter::new(
                "eddy_kafka_fetched_bytes_total",
                "Bytes of record batches served to Kafka fetch requests",
            )?,
            connections: IntGaugeVec::new(
                Opts::new("eddy_connections", "Open client connections, by protocol"),
                &["protocol"],
            )?,
            connections_accepted: IntCounterVec::new(
                Opts::new(
                    "eddy_connections_accepted_total",
                    "Client connections accepted, by protocol",
                ),
                &["protocol"],
            )?,
            tick_seconds: Histogram::with_opts(histogram(
                "eddy_dataflow_tick_duration_seconds",
                "Time of one dataflow tick: reading new records and updating every table and view",
            ))?,
            last_tick: IntGauge::new(
                "eddy_dataflow_last_tick_timestamp_seconds",
                "When the last dataflow tick ended (Unix time)",
            )?,
            checkpoint_seconds: Histogram::with_opts(histogram(
                "eddy_checkpoint_duration_seconds",
                "Time to write a checkpoint of every table's and view's state",
            ))?,
            registry,
        };
        m.registry.register(Box::new(m.kafka_requests.clone()))?;
        m.registry
            .register(Box::new(m.kafka_request_seconds.clone()))?;
        m.registry.register(Box::new(m.produced_records.clone()))?;
        m.registry.register(Box::new(m.produced_bytes.clone()))?;
        m.registry.register(Box::new(m.fetched_bytes.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry
            .register(Box::new(m.connections_accepted.clone()))?;
        m.registry.register(Box::new(m.tick_seconds.clone()))?;
        m.registry.register(Box::new(m.last_tick.clone()))?;
        m.registry
            .register(Box::new(m.checkpoint_seconds.clone()))?;
        Ok(m)
    }

    /// A connection of `protocol` opened: counted, and open until the
    /// returned guard drops.
    pub fn connected(&self, protocol: &str) -> Connected {
        self.connections_accepted
            .with_label_values(&[protocol])
            .inc();
        let g = self.connections.with_label_values(&[protocol]);
        g.inc();
        Connected(g)
    }
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    Metrics::new()
        .inspect_err(|e| tracing::error!(error = %e, "metrics could not be registered"))
        .ok()
});

/// The process-wide metrics (None only if they could not be registered,
/// which their fixed names rule out).
pub fn metrics() -> Option<&'static Metrics> {
    METRICS.as_ref()
}

/// An open connection: its protocol's gauge goes down when this drops.
pub struct Connected(IntGauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection of `protocol` opened (see [`Metrics::connected`]).
pub fn connected(protocol: &str) -> Option<Connected> {
    metrics().map(|m| m.connected(protocol))
}

/// Time `f` into `histogram`.
pub fn timed<T>(histogram: impl FnOnce(&Metrics) -> &Histogram, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    if let Some(m) = metrics() {
        histogram(m).observe(t.elapsed().as_secs_f64());
    }
    out
}
