//! eddy: a streaming SQL database with a built-in, Kafka-compatible log.
//!
//! Architecture (see ARCHITECTURE.md for the full map):
//!
//! ```text
//! main.rs ─► cli ─► server ─► kafka ─► log
//!             └──(offline tools)──────────┘
//! ```
//!
//! - `log`: segments, partitions, topics, offsets, retention, compaction.
//! - `kafka`: the Kafka wire protocol (no I/O), one file per API, and the
//!   group coordinator.
//! - `server`: sockets and lifecycle.
//! - `cli`: the command line and the offline tools.
//!
//! ```text
//! ```
//!
//! The log stores Kafka RecordBatch v2 bytes exactly as the wire carries
//! them; everything above it (Kafka protocol, SQL, dataflow) is built on the
//! [`log::LogStore`] trait.

pub mod catalog;
pub mod cli;
pub mod dataflow;
pub mod engine;
pub mod format;
pub mod kafka;
pub mod log;
pub mod server;
pub mod sqlstate;
pub mod types;

/// mimalloc for every binary built on eddy (the server, tests, benchmarks):
/// a dataflow tick allocates and frees megabytes of batches; glibc's malloc
/// returns such blocks to the OS and faults them in again on every tick,
/// mimalloc keeps and reuses them (W3 backfill, see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
