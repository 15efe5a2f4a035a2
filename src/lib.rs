//! eddy: a streaming SQL database with a built-in, Kafka-compatible log.
//!
//! Architecture (ARCHITECTURE.md is the full map):
//!
//! ```text
//! main.rs ─► cli ─► server ─┬─► kafka ─────────────────────────► log
//!                           └─► server::pg ─► engine ─┬─► catalog ─► log
//!                                                     ├─► dataflow ─► log
//!                                                     └─► format, types
//! ```
//!
//! - `log`: segments, partitions, topics, offsets, retention, compaction,
//!   crash recovery. Bytes in, bytes out.
//! - `kafka`: the Kafka wire protocol (no I/O), one file per API, and the
//!   group coordinator.
//! - `format`, `types`: record values ⇄ Arrow rows; SQL types and
//!   PostgreSQL's text forms.
//! - `catalog`: the relations, persisted in the `__eddy_catalog` topic.
//! - `auth`: roles, password secrets and privileges (`__eddy_roles`),
//!   checked by both protocols; Kafka's SCRAM exchange.
//! - `dataflow`: the incremental runtime (ticks, epochs, checkpoints,
//!   subscriptions) and its operators (`Operator`s on one `Flow` that
//!   carries their changes and watermarks); reads the log, knows no SQL
//!   text.
//! - `engine`: statements parsed once into families (DDL, DML, COPY,
//!   queries, …) behind one dispatch, the DataFusion session, system
//!   tables, sinks.
//! - `server`: sockets, sessions and lifecycle (pgwire, Kafka, the schema
//!   registry's REST API, HTTP `/metrics`).
//! - `metrics`: Prometheus counters and histograms the server updates.
//! - `sqlstate`: SQLSTATEs of library errors, by type.
//! - `cli`: the command line and the offline tools.
//!
//! The log stores Kafka RecordBatch v2 bytes exactly as the wire carries
//! them. The engine, dataflows and catalog reach the log only through the
//! `log::LogStore` trait (`Engine::open_on`), the seam a second log (an
//! external Kafka cluster) plugs into; the Kafka front end serves eddy's
//! own `log::Log`.

pub mod auth;
pub mod catalog;
pub mod cli;
pub mod dataflow;
pub mod engine;
pub mod format;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod sqlstate;
pub mod types;

/// mimalloc for every binary built on eddy (the server, tests, benchmarks):
/// a dataflow tick allocates and frees megabytes of batches; glibc's malloc
/// returns such blocks to the OS and faults them in again on every tick,
/// mimalloc keeps and reuses them (W3 backfill, see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
