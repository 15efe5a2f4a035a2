//! Record formats: record bytes ⇄ Arrow batches. Decoding is vectorised
//! (arrow-json); a record that does not decode is isolated, counted and
//! skipped, never stopping the reader.

pub mod json;
pub mod record;
