//! Kafka RecordBatch v2 (magic 2) as stored on disk and carried on the wire.
//!
//! Encoding and decoding of whole batches (varint records, headers,
//! compression) is the `kafka-protocol` crate's. What lives here is the
//! fixed 61-byte batch header, read and patched in place: the append path must
//! validate a producer's batch and assign its base offset without decoding
//! every record (the crate's decoder materialises each record into owned
//! structs, which costs more than the write itself at millions of records per
//! second), and recovery must walk batch boundaries and check CRCs.
//!
//! Layout (big-endian):
//!
//! ```text
//! 0  base_offset i64        27 first_timestamp i64
//! 8  batch_length i32       35 max_timestamp i64
//! 12 partition_leader_epoch 43 producer_id i64
//! 16 magic i8               51 producer_epoch i16
//! 17 crc u32 (CRC-32C of    53 base_sequence i32
//!    bytes 21..end)         57 records_count i32
//! 21 attributes i16         61 records …
//! 23 last_offset_delta i32
//! ```

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Bytes before `batch_length` counts: base offset (8) and the length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header including `LOG_OVERHEAD`.
pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
pub const MAGIC: i8 = 2;
const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// Why a byte range is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported magic {0} (only RecordBatch v2 is stored)")]
    Magic(i8),
    #[error("invalid batch length {0}")]
    Length(i32),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("invalid record count {count} with last offset delta {last_offset_delta}")]
    Count { count: i32, last_offset_delta: i32 },
    #[error("empty record set")]
    Empty,
    #[error("could not decode records: {0}")]
    Decode(String),
}

/// The fixed header of one batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parse the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            first_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if h.magic != MAGIC {
            return Err(BatchError::Magic(h.magic));
        }
        if (h.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::Length(h.batch_length));
        }
        if h.records_count < 0 || h.last_offset_delta < 0 {
            return Err(BatchError::Count {
                count: h.records_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        Ok(h)
    }

    /// Total bytes of the batch on disk, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    // Saturating: the base offset is outside the CRC, so a damaged header
    // can carry any value, and this arithmetic must not overflow on it.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        // Sequences wrap at i32::MAX back to 0, as in Kafka.
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
}

/// Parse the header of the batch at the start of `buf`, check that the whole
/// batch is present and that its CRC-32C matches.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    let len = h.total_len();
    if buf.len() < len {
        return Err(BatchError::Truncated {
            need: len,
            have: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_START..len]);
    if computed != h.crc {
        return Err(BatchError::Crc {
            stored: h.crc,
            computed,
        });
    }
    Ok(h)
}

/// Validate a producer's record set: one or more complete batches, each with a
/// good CRC and dense offsets (`last_offset_delta == records_count - 1`, as
/// producers write them). Returns the headers in order.
pub fn validate_producer_set(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < buf.len() {
        let h = validate(&buf[pos..])?;
        if h.records_count < 1 || h.last_offset_delta != h.records_count - 1 {
            return Err(BatchError::Count {
                count: h.records_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        pos += h.total_len();
        out.push(h);
    }
    Ok(out)
}

/// Overwrite the base offset of the batch at the start of `buf`. The base
/// offset is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(buf: &mut [u8], offset: i64) {
    buf[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Turn the batch at the start of `buf` into a LogAppendTime batch stamped
/// `now_ms` (Kafka's `message.timestamp.type=LogAppendTime`). The attributes
/// and timestamps are inside the CRC, so it is recomputed.
pub fn set_log_append_time(buf: &mut [u8], len: usize, now_ms: i64) {
    let attrs = be_i16(buf, 21) | ATTR_TIMESTAMP_TYPE;
    buf[21..23].copy_from_slice(&attrs.to_be_bytes());
    buf[27..35].copy_from_slice(&now_ms.to_be_bytes());
    buf[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..len]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Mark the batch at the start of `buf` (of length `buf.len()`) as written
/// by no producer: producer id and epoch -1, base sequence -1. Recomputes
/// the CRC.
pub fn clear_producer(buf: &mut [u8]) {
    buf[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    buf[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// One record as eddy's own producers (CLI, SQL inserts, sinks) write it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encode records into one uncompressed RecordBatch v2 with base offset 0
/// (the log assigns the real one) and no producer id.
pub fn encode(records: &[NewRecord]) -> Result<BytesMut, BatchError> {
    encode_as(records, None)
}

/// Encode records as a transactional producer's batch: producer id and
/// epoch, sequences from `first_sequence`, the transactional attribute
/// set (what a Kafka client writes inside a transaction).
pub fn encode_transactional(
    producer_id: i64,
    producer_epoch: i16,
    first_sequence: i32,
    records: &[NewRecord],
) -> Result<BytesMut, BatchError> {
    encode_as(records, Some((producer_id, producer_epoch, first_sequence)))
}

fn encode_as(
    records: &[NewRecord],
    producer: Option<(i64, i16, i32)>,
) -> Result<BytesMut, BatchError> {
    let (producer_id, producer_epoch, first) = producer.unwrap_or((-1, -1, 0));
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first + i as i32,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone()))
                .collect(),
        })
        .collect();
    encode_records(&recs)
}

/// Encode records (with their own offsets) as uncompressed batches.
pub fn encode_records(records: &[Record]) -> Result<BytesMut, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| BatchError::Decode(e.to_string()))?;
    Ok(buf)
}

/// A transaction marker: the control record a transaction coordinator
/// writes into every partition of a transaction when it ends (Kafka's
/// `ControlRecordType` ABORT = 0, COMMIT = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// Encode a transaction marker as Kafka writes one: a control,
/// transactional batch of one record whose key is (version 0, type) and
/// value (version 0, coordinator epoch), with the producer's id and epoch
/// and no sequence.
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp: i64,
) -> Result<BytesMut, BatchError> {
    let kind: i16 = match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&0i32.to_be_bytes());
    encode_records(&[Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    }])
}

/// The marker a control batch (whole, at the start of `buf`) carries.
pub fn marker_of(buf: &[u8]) -> Result<Marker, BatchError> {
    let h = validate(buf)?;
    if !h.is_control() {
        return Err(BatchError::Decode("not a control batch".into()));
    }
    let mut one = Bytes::copy_from_slice(&buf[..h.total_len()]);
    let set =
        RecordBatchDecoder::decode(&mut one).map_err(|e| BatchError::Decode(e.to_string()))?;
    let key = set
        .records
        .first()
        .and_then(|r| r.key.clone())
        .ok_or_else(|| BatchError::Decode("control batch without a key".into()))?;
    match key.get(2..4).map(|t| i16::from_be_bytes([t[0], t[1]])) {
        Some(0) => Ok(Marker::Abort),
        Some(1) => Ok(Marker::Commit),
        other => Err(BatchError::Decode(format!(
            "control record of unknown type {other:?}"
        ))),
    }
}

/// Decode every record of every batch in `buf` (decompressing as needed).
/// Control batches (transaction markers) are skipped: they carry no data.
pub fn decode(buf: Bytes) -> Result<Vec<Record>, BatchError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let h = BatchHeader::parse(&rest)?;
        let len = h.total_len();
        if rest.len() < len {
            return Err(BatchError::Truncated {
                need: len,
                have: rest.len(),
            });
        }
        let mut one = rest.split_to(len);
        if h.is_control() {
            // Skipped, but only once known intact: a damaged attributes
            // field must not turn a data batch into one silently passed over.
            validate(&one)?;
            continue;
        }
        let set =
            RecordBatchDecoder::decode(&mut one).map_err(|e| BatchError::Decode(e.to_string()))?;
        out.extend(set.records);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str, ts: i64) -> NewRecord {
        NewRecord {
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            timestamp: ts,
            headers: vec![],
        }
    }

    #[test]
    fn header_round_trip_and_crc() {
        let buf =
            encode(&[rec("a", "1", 10), rec("b", "2", 12), rec("c", "3", 11)]).expect("encode");
        let h = validate(&buf).expect("valid");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.first_timestamp, 10);
        assert_eq!(h.max_timestamp, 12);
        assert_eq!(h.total_len(), buf.len());
        assert_eq!(h.producer_id, -1);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc() {
        let mut buf = encode(&[rec("a", "1", 10)]).expect("encode");
        set_base_offset(&mut buf, 1234);
        let h = validate(&buf).expect("still valid");
        assert_eq!(h.base_offset, 1234);
        let recs = decode(buf.freeze()).expect("decode");
        assert_eq!(recs[0].offset, 1234);
    }

    #[test]
    fn flipped_bit_fails_crc() {
        let mut buf = encode(&[rec("a", "hello", 10)]).expect("encode");
        let n = buf.len();
        buf[n - 3] ^= 0x10;
        assert!(matches!(validate(&buf), Err(BatchError::Crc { .. })));
    }

    #[test]
    fn truncated_batch_is_reported() {
        let buf = encode(&[rec("a", "hello", 10)]).expect("encode");
        let n = buf.len();
        assert!(matches!(
            validate(&buf[..n - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&buf[..20]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn log_append_time_rewrites_and_recomputes_crc() {
        let mut buf = encode(&[rec("a", "1", 10), rec("b", "2", 20)]).expect("encode");
        let n = buf.len();
        set_log_append_time(&mut buf, n, 999);
        let h = validate(&buf).expect("valid");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 999);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        for len in 0..200 {
            let mut b = vec![0u8; len];
            for x in b.iter_mut() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                *x = (seed >> 33) as u8;
            }
            if len > 16 {
                b[16] = 2;
            }
            let _ = validate(&b);
            let _ = validate_producer_set(&b);
            let _ = decode(Bytes::from(b));
        }
    }
}
