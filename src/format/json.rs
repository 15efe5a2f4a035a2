//! JSON record values ⇄ Arrow rows, with arrow-json doing the work.
//!
//! Decoding feeds a whole batch of values to one decoder; only when that
//! fails are the values decoded one by one to find and drop the bad ones
//! (the common case pays nothing for the error handling).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::reader::ReaderBuilder;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};

pub use super::DecodeFailure;

fn decode_all(schema: &SchemaRef, values: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(values.len().max(1))
        .build_decoder()?;
    for v in values {
        super::feed(|b| decoder.decode(b), v)?;
        // Each value must be exactly one complete object.
        decoder.decode(b"\n")?;
        if decoder.has_partial_record() {
            return Err(ArrowError::JsonError(
                "value is not one complete JSON object".into(),
            ));
        }
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

/// Decode `values` (one JSON object each) into a batch of `schema`; returns
/// the batch of the good values, which of the inputs made it (indices), and
/// the failures.
pub fn decode(
    schema: &SchemaRef,
    values: &[&[u8]],
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    super::decode_isolating(schema, values, decode_all)
}

/// Encode every row of `batch` as one JSON object (explicit nulls).
pub fn encode(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    let _ = std::marker::PhantomData::<JsonArray>;
    Ok(buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect())
}
