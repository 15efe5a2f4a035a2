//! CSV record values (one line each, columns in declared order) ⇄ Arrow
//! rows, with arrow-csv doing the work. An empty field is NULL.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::reader::ReaderBuilder;
use datafusion::arrow::csv::writer::WriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::DecodeFailure;

fn decode_all(schema: &SchemaRef, values: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_header(false)
        .with_batch_size(values.len().max(1) + 1)
        .build_decoder();
    for v in values {
        let line = v.strip_suffix(b"\n").unwrap_or(v);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        super::feed(|b| decoder.decode(b), line)?;
        super::feed(|b| decoder.decode(b), b"\n")?;
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

/// Decode `values` (one CSV line each) into a batch of `schema`: the batch
/// of the good values, which inputs made it (indices), and the failures.
pub fn decode(
    schema: &SchemaRef,
    values: &[&[u8]],
) -> (RecordBatch, Vec<usize>, Vec<DecodeFailure>) {
    super::decode_isolating(schema, values, decode_all)
}

/// Encode every row of `batch` as one CSV line (without the newline).
pub fn encode(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ArrowError> {
    (0..batch.num_rows())
        .map(|i| {
            let mut buf = Vec::new();
            {
                let mut w = WriterBuilder::new().with_header(false).build(&mut buf);
                w.write(&batch.slice(i, 1))?;
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            Ok(buf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};

    #[test]
    fn lines_round_trip_and_bad_lines_are_isolated() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let (b, good, failures) = decode(
            &schema,
            &[b"1,ann", b"two,bob", b"3,\"c, d\"\n", b"4", b"5,"],
        );
        assert_eq!(good, vec![0, 2, 4]);
        assert_eq!(failures.len(), 2);
        let ids = b.column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 3, 5]);
        assert_eq!(b.column(1).as_string::<i32>().value(1), "c, d");
        assert!(b.column(1).is_null(2));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["x, \"y\""])),
            ],
        )
        .expect("batch");
        assert_eq!(
            encode(&batch).expect("encodes"),
            vec![b"7,\"x, \"\"y\"\"\"".to_vec()]
        );
    }
}
