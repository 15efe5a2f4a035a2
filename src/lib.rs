//! eddy: a streaming SQL database with a built-in, Kafka-compatible log.
//!
//! Architecture (see ARCHITECTURE.md for the full map):
//!
//! ```text
//! main.rs ─► cli (offline tools over a data directory)
//!                └─► log (segments, partitions, topics, offsets, cleaner)
//! ```
//!
//! The log stores Kafka RecordBatch v2 bytes exactly as the wire carries
//! them; everything above it (Kafka protocol, SQL, dataflow) is built on the
//! [`log::LogStore`] trait.

pub mod cli;
pub mod log;
