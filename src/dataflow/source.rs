//! Leaves of a dataflow.
//!
//! - [`TopicReader`]: reads what is new in a topic (every partition, from
//!   the offsets it has reached to the current end, at most a bounded number
//!   of records per tick) and decodes it into a delta. A stream's records
//!   are insertions; a table's changelog records carry their diff in the
//!   `eddy.diff` header (absent: +1). Records that do not decode are counted
//!   in the decode-error table and skipped.
//! - [`StreamSource`]: a dataflow leaf over a [`TopicReader`] of a stream,
//!   starting at the log start (backfill), then following the end.
//! - [`ChangesSource`]: a leaf over a table or another materialized view:
//!   first the input's contents when the view was created (backfill), then
//!   the input's changes of each tick.
//!
//! (About 850 lines: the three leaves share the reader, its offsets and their
//! checkpoint form.)

use std::collections::HashMap;
use std::sync::Arc;

use ahash::AHashMap;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::decode_errors::DecodeErrors;
use crate::format::record::{Layout, RecordRef};
use crate::log::LogStore;

use super::checkpoint::{Reader, Writer};
use super::rows::{Codec, RowBytes};
use super::{Counts, Delta, Operator, OperatorStats, Result, StepContext};

/// The header carrying a changelog record's diff.
pub const DIFF_HEADER: &str = "eddy.diff";

pub struct TopicReader {
    relation: String,
    topic: String,
    layout: Layout,
    offsets: HashMap<i32, i64>,
    /// A keyed table: the current row of each key.
    upsert: Option<Upserts>,
    /// The creation time of the topic read (a topic dropped and created
    /// again is another topic to a checkpoint).
    created_ms: Option<i64>,
    /// The column holding the records' event time, if any.
    event_time: Option<EventTime>,
    /// The greatest event time read from each partition (microseconds).
    times: HashMap<i32, i64>,
    /// When each partition last gave records (wall clock, for the idle
    /// timeout; not kept across a restart, where every partition starts
    /// out active).
    arrived: HashMap<i32, std::time::Instant>,
    /// Event time no record still to come is expected to be before.
    watermark: Option<i64>,
    /// Drop rows late for their windows (a windowed view's stream).
    late_rule: Option<LateRule>,
    /// Rows dropped as late.
    late: u64,
}

/// A stream's event-time column and how far behind its greatest value
/// the watermark stays.
#[derive(Debug, Clone, Copy)]
struct EventTime {
    column: usize,
    delay_us: i64,
    /// An integer column holds epoch milliseconds (ksqlDB's timestamps).
    millis: bool,
    /// A declared watermark (RisingWave's): rows below it are late.
    drop_below: bool,
    /// A partition without a new record for this long no longer holds
    /// the watermark back (until it has one again).
    idle: Option<std::time::Duration>,
}

impl EventTime {
    /// The column marked `eddy.event_time` (its value: the delay in
    /// microseconds), else the record time (`rowtime`, `_timestamp`).
    fn of(schema: &SchemaRef) -> Option<EventTime> {
        use datafusion::arrow::datatypes::DataType;
        let usable = |t: &DataType| matches!(t, DataType::Timestamp(..)) || t.is_integer();
        let found = schema.fields().iter().enumerate().find_map(|(i, f)| {
            let delay = f.metadata().get(EVENT_TIME)?.parse::<i64>().ok()?;
            Some((i, delay))
        });
        let drop_below = found.is_some();
        let (column, delay_us) = found.or_else(|| {
            let i = schema
                .fields()
                .iter()
                .position(|f| matches!(f.name().as_str(), "rowtime" | "_timestamp"))?;
            Some((i, 0))
        })?;
        let t = schema.field(column).data_type();
        let idle = schema
            .field(column)
            .metadata()
            .get(IDLE_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        usable(t).then_some(EventTime {
            column,
            delay_us,
            millis: t.is_integer(),
            drop_below,
            idle,
        })
    }

    /// The event time of each row of `delta` (microseconds; None: NULL).
    fn times(&self, delta: &Delta) -> Result<Vec<Option<i64>>> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
        let col = delta.batch.column(self.column);
        let (ints, scale) = if self.millis {
            (
                datafusion::arrow::compute::cast(col, &DataType::Int64)?,
                1000,
            )
        } else {
            let us = datafusion::arrow::compute::cast(
                col,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            (datafusion::arrow::compute::cast(&us, &DataType::Int64)?, 1)
        };
        Ok(ints
            .as_primitive::<Int64Type>()
            .iter()
            .map(|t| t.map(|t| t.saturating_mul(scale)))
            .collect())
    }
}

/// Which rows a windowed view's stream drops as late: a row whose window
/// had closed, end plus grace, by the stream time at that row (the
/// greatest event time of its partition up to and including it, as a
/// Kafka Streams task keeps it). The window is the one starting `back`
/// advances before the latest holding the row (`date_bin(advance, t)`):
/// a hopping window's view reads its stream once per window a row falls
/// in (`engine/windows.rs`), each read judging its own window. Judged row
/// by row in log order, so the same log gives the same result however it
/// is read.
#[derive(Debug, Clone, Copy)]
pub struct LateRule {
    pub size_us: i64,
    pub advance_us: i64,
    pub grace_us: i64,
    pub back: i64,
}

impl LateRule {
    fn late(&self, t: i64, stream_time: i64) -> bool {
        if self.advance_us <= 0 {
            return false;
        }
        // Saturating: a time near the ends of the range is no window's.
        let start = t
            .saturating_sub(t.rem_euclid(self.advance_us))
            .saturating_sub(self.back.saturating_mul(self.advance_us));
        start
            .saturating_add(self.size_us)
            .saturating_add(self.grace_us)
            <= stream_time
    }
}

/// Field metadata marking a stream's event-time column; its value is the
/// watermark's delay in microseconds.
pub const EVENT_TIME: &str = "eddy.event_time";

/// `field` as its stream's event time, the watermark `delay_us` behind.
pub fn event_time_field(
    field: datafusion::arrow::datatypes::Field,
    delay_us: i64,
) -> datafusion::arrow::datatypes::Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(EVENT_TIME.into(), delay_us.to_string());
    field.with_metadata(metadata)
}

/// Field metadata on a stream's event-time column: a partition without a
/// new record for this many milliseconds stops holding the watermark back.
pub const IDLE_TIMEOUT: &str = "eddy.idle_timeout_ms";

/// `field` (the event-time column) with an idle timeout of `ms`.
pub fn idle_timeout_field(
    field: datafusion::arrow::datatypes::Field,
    ms: i64,
) -> datafusion::arrow::datatypes::Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(IDLE_TIMEOUT.into(), ms.to_string());
    field.with_metadata(metadata)
}

/// The state of an upsert changelog: key → the row it holds (encoded).
/// A record replaces its key's row (retraction + insertion), a record
/// without a value (or with diff -1) deletes it.
struct Upserts {
    codec: Codec,
    rows: AHashMap<Box<[u8]>, RowBytes>,
}

/// What one read produced.
pub struct Read {
    pub delta: Delta,
    /// Stopped short of the end (more to read).
    pub more: bool,
}

impl TopicReader {
    pub fn new(relation: &str, topic: &str, layout: Layout) -> Result<TopicReader> {
        let upsert = if layout.is_keyed() {
            Some(Upserts {
                codec: Codec::for_schema(layout.schema())?,
                rows: AHashMap::new(),
            })
        } else {
            None
        };
        let event_time = EventTime::of(layout.schema());
        Ok(TopicReader {
            relation: relation.to_string(),
            topic: topic.to_string(),
            layout,
            offsets: HashMap::new(),
            upsert,
            created_ms: None,
            event_time,
            times: HashMap::new(),
            arrived: HashMap::new(),
            watermark: None,
            late_rule: None,
            late: 0,
        })
    }

    /// Drop rows late by `rule` (the stream has an event-time column).
    pub fn drop_late(&mut self, rule: LateRule) {
        self.late_rule = Some(rule);
    }

    /// Stream time row by row through `part` (rows of partition `id`, in
    /// log order): the partition's greatest event time moves on, and rows
    /// late by the rule are dropped (counted).
    fn stream_time(&mut self, et: EventTime, id: i32, part: Delta) -> Result<Delta> {
        let times = et.times(&part)?;
        let mut now = self.times.get(&id).copied();
        let mut keep = Vec::with_capacity(times.len());
        for t in times {
            if let Some(t) = t {
                now = Some(now.map_or(t, |n| n.max(t)));
            }
            let late = match (self.late_rule, t, now) {
                (_, Some(t), Some(now)) if et.drop_below && t < now.saturating_sub(et.delay_us) => {
                    true
                }
                (Some(rule), Some(t), Some(now)) => rule.late(t, now),
                _ => false,
            };
            keep.push(!late);
        }
        if let Some(now) = now {
            self.times.insert(id, now);
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return Ok(part);
        }
        self.late += dropped as u64;
        let mask = datafusion::arrow::array::BooleanArray::from(keep);
        let batch = datafusion::arrow::compute::filter_record_batch(&part.batch, &mask)?;
        let diffs = part
            .diffs
            .iter()
            .zip(mask.values().iter())
            .filter_map(|(d, k)| k.then_some(*d))
            .collect();
        Ok(Delta::new(batch, diffs))
    }

    /// The watermark after the last read: the least of the partitions'
    /// stream times (the greatest event time read from each), over the
    /// partitions that hold records (one not read yet holds it back, and
    /// so does one that stopped receiving records, as a Kafka Streams
    /// task's stream time stops), less the delay. None before any event
    /// time.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Write the offsets reached (and an upsert table's rows by key).
    pub fn save(&self, w: &mut Writer) {
        w.tag("topic");
        w.bytes(self.topic.as_bytes());
        w.bool(self.created_ms.is_some());
        w.i64(self.created_ms.unwrap_or(0));
        let mut offsets: Vec<(&i32, &i64)> = self.offsets.iter().collect();
        offsets.sort();
        w.u64(offsets.len() as u64);
        for (p, o) in offsets {
            w.i64(i64::from(*p));
            w.i64(*o);
        }
        w.bool(self.upsert.is_some());
        if let Some(up) = &self.upsert {
            w.u64(up.rows.len() as u64);
            for (k, row) in &up.rows {
                w.bytes(k);
                w.bytes(row);
            }
        }
        if self.event_time.is_some() {
            w.tag("stream time");
            let mut times: Vec<(&i32, &i64)> = self.times.iter().collect();
            times.sort();
            w.u64(times.len() as u64);
            for (p, t) in times {
                w.i64(i64::from(*p));
                w.i64(*t);
            }
            w.bool(self.watermark.is_some());
            w.i64(self.watermark.unwrap_or(0));
            w.u64(self.late);
        }
    }

    /// Take back what `save` wrote; the topic must be the one it was
    /// written for and hold every record it had read.
    pub fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let bad = |m: String| super::DataflowError::Checkpoint(m);
        r.tag("topic")?;
        if r.bytes()? != self.topic.as_bytes() {
            return Err(bad(format!("{} reads another topic", self.relation)));
        }
        let topic = r.log.topic_info(&self.topic)?;
        let known = r.bool()?;
        let created = r.i64()?;
        if known && created != topic.created_ms {
            return Err(bad(format!(
                "topic {} was created again since the checkpoint",
                self.topic
            )));
        }
        self.created_ms = known.then_some(created);
        self.offsets.clear();
        for _ in 0..r.len(16)? {
            let p = i32::try_from(r.i64()?).map_err(|_| bad("partition out of range".into()))?;
            let offset = r.i64()?;
            let end = r.log.offsets(&self.topic, p).map_or(0, |(_, end)| end);
            if offset > end {
                return Err(bad(format!(
                    "partition {p} of {} ends at {end}, before the checkpoint's offset {offset}",
                    self.topic
                )));
            }
            self.offsets.insert(p, offset);
        }
        let keyed = r.bool()?;
        match (&mut self.upsert, keyed) {
            (Some(up), true) => {
                up.rows.clear();
                for _ in 0..r.len(16)? {
                    let k: Box<[u8]> = r.bytes()?.into();
                    up.rows.insert(k, r.bytes()?.into());
                }
            }
            (None, false) => {}
            _ => {
                return Err(bad(format!(
                    "{} changed between keyed and not",
                    self.relation
                )));
            }
        }
        if self.event_time.is_some() {
            r.tag("stream time")?;
            self.times.clear();
            for _ in 0..r.len(16)? {
                let p =
                    i32::try_from(r.i64()?).map_err(|_| bad("partition out of range".into()))?;
                self.times.insert(p, r.i64()?);
            }
            let known = r.bool()?;
            let mark = r.i64()?;
            self.watermark = known.then_some(mark);
            self.late = r.u64()?;
        }
        Ok(())
    }

    pub fn schema(&self) -> &SchemaRef {
        self.layout.schema()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records read so far and records in the topic (summed over
    /// partitions): backfill progress.
    pub fn progress(&self, log: &dyn LogStore) -> (i64, i64) {
        let Ok(topic) = log.topic_info(&self.topic) else {
            return (0, 0);
        };
        let mut read = 0;
        let mut end = 0;
        for p in 0..topic.partitions {
            let Ok((start, last)) = log.offsets(&self.topic, p) else {
                continue;
            };
            let at = self.offsets.get(&p).copied().unwrap_or(start).max(start);
            read += at - start;
            end += last - start;
        }
        (read, end)
    }

    /// Read and decode what is new, up to `max_records`.
    ///
    /// Records are decoded [`DECODE_CHUNK`] at a time, so the temporaries
    /// of a read (record slices, the JSON tape, the read buffers) stay a
    /// few megabytes, reused from chunk to chunk and warm in cache, however
    /// many records a tick takes.
    pub fn read(
        &mut self,
        log: &dyn LogStore,
        errors: &DecodeErrors,
        max_records: usize,
    ) -> Result<Read> {
        let topic = log.topic_info(&self.topic)?;
        self.created_ms = Some(topic.created_ms);
        let mut pending = Pending::default();
        let mut parts: Vec<Delta> = Vec::new();
        let mut taken = 0usize;
        let mut more = false;
        // The stream time of each partition holding records.
        let mut marks: Vec<Option<i64>> = Vec::new();
        for id in 0..topic.partitions {
            let first_part = parts.len();
            let (start, end) = log.offsets(&self.topic, id)?;
            let from = self.offsets.get(&id).copied().unwrap_or(0);
            let name = self.topic.clone();
            let mut fetches = crate::log::records(log, &name, id, from, end, 1 << 20);
            while !fetches.done() {
                if taken >= max_records {
                    more = true;
                    break;
                }
                let records = match fetches.next() {
                    Some(Ok(records)) => records,
                    Some(Err(e)) => {
                        // The position stays before the fetch that failed:
                        // the next tick tries again from there.
                        tracing::warn!(relation = %self.relation, topic = %self.topic, partition = id, error = %e, "reading the topic failed");
                        break;
                    }
                    None => break,
                };
                for r in records {
                    let diff = r
                        .headers
                        .iter()
                        .find(|(k, _)| k.as_str() == DIFF_HEADER)
                        .and_then(|(_, v)| v.as_ref())
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                        .unwrap_or(1);
                    match r.value {
                        Some(v) => {
                            taken += 1;
                            pending.values.push((r.key, v, r.timestamp));
                            pending.diffs.push(diff);
                            pending.origin.push((id, r.offset));
                        }
                        None if self.upsert.is_some() => match r.key {
                            Some(k) => pending.tombstones.push((pending.values.len(), k)),
                            None => errors.record(
                                &self.relation,
                                &self.topic,
                                id,
                                r.offset,
                                "record has neither key nor value",
                            ),
                        },
                        None => errors.record(
                            &self.relation,
                            &self.topic,
                            id,
                            r.offset,
                            "record has no value",
                        ),
                    }
                }
                if pending.values.len() >= DECODE_CHUNK {
                    parts.push(self.decode(&mut pending, errors)?);
                }
            }
            self.offsets.insert(id, fetches.position());
            if let Some(et) = self.event_time {
                // A partition's rows decoded apart from the next one's, so
                // each partition's event time is known.
                if !pending.is_empty() {
                    parts.push(self.decode(&mut pending, errors)?);
                }
                for slot in parts.iter_mut().skip(first_part) {
                    let part =
                        std::mem::replace(slot, Delta::empty(Arc::clone(self.layout.schema())));
                    *slot = self.stream_time(et, id, part)?;
                }
                let now = std::time::Instant::now();
                let arrived = *self.arrived.entry(id).or_insert(now);
                if fetches.position() > from {
                    self.arrived.insert(id, now);
                }
                let idle = et.idle.is_some_and(|d| now.duration_since(arrived) >= d)
                    && fetches.position() <= from;
                if (end > start || self.times.contains_key(&id)) && !idle {
                    marks.push(self.times.get(&id).copied());
                }
            }
        }
        if let Some(et) = self.event_time {
            let mark = marks
                .into_iter()
                .collect::<Option<Vec<i64>>>()
                .and_then(|t| t.into_iter().min());
            if let Some(m) = mark.map(|m| m.saturating_sub(et.delay_us)) {
                self.watermark = Some(self.watermark.map_or(m, |w| w.max(m)));
            }
        }
        if !pending.is_empty() || parts.is_empty() {
            parts.push(self.decode(&mut pending, errors)?);
        }
        let delta = match parts.len() {
            1 => parts
                .pop()
                .unwrap_or_else(|| Delta::empty(self.schema().clone())),
            _ => Delta::concat(self.layout.schema(), &parts)?,
        };
        Ok(Read { delta, more })
    }

    /// Decode the records read so far into a delta (and clear them). The
    /// records' offsets are already taken: a failure of the whole chunk
    /// (not expected: a bug) is reported against each of its records, so
    /// nothing is lost without a trace.
    fn decode(&mut self, pending: &mut Pending, errors: &DecodeErrors) -> Result<Delta> {
        match self.try_decode(pending, errors) {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::error!(relation = %self.relation, error = %e, records = pending.origin.len(), "decoding a chunk of records failed");
                for (p, o) in &pending.origin {
                    errors.record(&self.relation, &self.topic, *p, *o, &e.to_string());
                }
                pending.clear();
                Ok(Delta::empty(Arc::clone(self.layout.schema())))
            }
        }
    }

    fn try_decode(&mut self, pending: &mut Pending, errors: &DecodeErrors) -> Result<Delta> {
        let records: Vec<RecordRef<'_>> = pending
            .values
            .iter()
            .zip(&pending.origin)
            .map(|((key, value, timestamp), (partition, offset))| RecordRef {
                key: key.as_deref(),
                value,
                partition: *partition,
                offset: *offset,
                timestamp: *timestamp,
            })
            .collect();
        let (batch, good, failures) = self.layout.decode(&records);
        for f in &failures {
            let (p, o) = pending.origin[f.index];
            errors.record(&self.relation, &self.topic, p, o, &f.reason);
        }
        let delta = if self.upsert.is_some() {
            let keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key).collect();
            let (delta, keyless) =
                self.upserts(&batch, &good, &keys, &pending.diffs, &pending.tombstones)?;
            for input in keyless {
                let (p, o) = pending.origin[input];
                let column = self.layout.key_names().join(", ");
                errors.record(
                    &self.relation,
                    &self.topic,
                    p,
                    o,
                    &format!("primary key ({column}) is NULL or missing in the record's value"),
                );
            }
            delta
        } else {
            let diffs = if failures.is_empty() {
                std::mem::take(&mut pending.diffs)
            } else {
                good.iter().map(|i| pending.diffs[*i]).collect()
            };
            Delta::new(super::with_schema(&batch, self.layout.schema())?, diffs)
        };
        drop(records);
        pending.clear();
        Ok(delta)
    }
}

/// How many records [`TopicReader::read`] decodes at a time.
const DECODE_CHUNK: usize = 1 << 14;

/// Records read and not yet decoded.
#[derive(Default)]
struct Pending {
    values: Vec<(Option<bytes::Bytes>, bytes::Bytes, i64)>,
    diffs: Vec<i64>,
    origin: Vec<(i32, i64)>,
    /// Upsert tables: deletes by key, each placed before the value at that
    /// index in `values`.
    tombstones: Vec<(usize, bytes::Bytes)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.tombstones.is_empty()
    }

    fn clear(&mut self) {
        self.values.clear();
        self.diffs.clear();
        self.origin.clear();
        self.tombstones.clear();
    }
}

impl TopicReader {
    /// Apply a read to an upsert table's state, in log order: the decoded
    /// rows `batch` (of the inputs `good`), the inputs' record keys and
    /// diffs, and the tombstones (key, placed before input index). Returns
    /// the change: old rows retracted, new rows inserted.
    fn upserts(
        &mut self,
        batch: &RecordBatch,
        good: &[usize],
        keys: &[Option<&[u8]>],
        diffs: &[i64],
        tombstones: &[(usize, bytes::Bytes)],
    ) -> Result<(Delta, Vec<usize>)> {
        let schema = Arc::clone(self.layout.schema());
        let batch = super::with_schema(batch, &schema)?;
        // A record without a key is keyed by its primary-key columns.
        let row_keys = self
            .layout
            .row_keys(&batch)
            .map_err(|e| super::DataflowError::Other(e.to_string()))?;
        let Some(up) = self.upsert.as_mut() else {
            return Ok((Delta::new(batch, vec![1; good.len()]), vec![]));
        };
        let encoded = up.codec.encode(batch.columns())?;
        let mut out: Vec<(RowBytes, i64)> = Vec::new();
        let mut row_of_input: HashMap<usize, usize> = HashMap::new();
        for (row, input) in good.iter().enumerate() {
            row_of_input.insert(*input, row);
        }
        let mut stones = tombstones.iter().peekable();
        // Records whose primary-key column is NULL or missing: not a row of
        // the table, so they are counted and skipped, alone.
        let mut keyless = Vec::new();
        let delete = |up: &mut Upserts, out: &mut Vec<(RowBytes, i64)>, key: &[u8]| {
            if let Some(old) = up.rows.remove(key) {
                out.push((old, -1));
            }
        };
        for input in 0..keys.len() {
            while let Some((_, key)) = stones.next_if(|(at, _)| *at <= input) {
                delete(up, &mut out, key);
            }
            let Some(&row) = row_of_input.get(&input) else {
                continue; // did not decode (counted)
            };
            // A row's primary key must be there (NOT NULL); the record key,
            // when the producer set one, says which row it replaces.
            let key: Box<[u8]> = match (keys[input], &row_keys[row]) {
                (Some(k), Some(_)) => k.into(),
                (None, Some(k)) => k.as_slice().into(),
                (_, None) => {
                    keyless.push(input);
                    continue;
                }
            };
            if diffs[input] < 0 {
                delete(up, &mut out, &key);
                continue;
            }
            let new: RowBytes = encoded.row(row).into();
            if let Some(old) = up.rows.insert(key, new.clone()) {
                out.push((old, -1));
            }
            out.push((new, 1));
        }
        for (_, key) in stones {
            delete(up, &mut out, key);
        }
        let diffs: Vec<i64> = out.iter().map(|(_, d)| *d).collect();
        let rows = up
            .codec
            .decode_batch(&schema, out.iter().map(|(r, _)| r.as_ref()))?;
        Ok((Delta::new(rows, diffs), keyless))
    }
}

/// A stream, read from the log start on.
pub struct StreamSource {
    reader: TopicReader,
    counts: Counts,
    progress: (i64, i64),
}

impl StreamSource {
    pub fn new(relation: &str, topic: &str, layout: Layout) -> Result<StreamSource> {
        Ok(StreamSource {
            reader: TopicReader::new(relation, topic, layout)?,
            counts: Counts::default(),
            progress: (0, 0),
        })
    }

    /// Drop rows late for a windowed view's windows (`LateRule`).
    pub fn drop_late(mut self, rule: LateRule) -> StreamSource {
        self.reader.drop_late(rule);
        self
    }
}

impl Operator for StreamSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.reader.schema())
    }

    fn step(&mut self, _inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let read = self
            .reader
            .read(&**cx.log, cx.decode_errors, cx.max_records)?;
        cx.more |= read.more;
        cx.read += read.delta.len() as u64;
        self.counts.rows_in += read.delta.len() as u64;
        self.counts.rows_out += read.delta.len() as u64;
        self.progress = self.reader.progress(&**cx.log);
        Ok(read.delta)
    }

    fn watermark(&self, _inputs: &[Option<i64>]) -> Option<i64> {
        self.reader.watermark()
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        let mut s = self.counts.stats(format!(
            "source {} (topic {})",
            self.reader.relation, self.reader.topic
        ));
        s.late = self.reader.late;
        out.push(s);
    }

    fn progress(&self, out: &mut Vec<(String, i64, i64)>) {
        out.push((
            self.reader.relation.clone(),
            self.progress.0,
            self.progress.1,
        ));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("stream");
        self.reader.save(w);
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("stream")?;
        self.reader.restore(r)?;
        self.progress = self.reader.progress(r.log);
        Ok(())
    }
}

/// A table or materialized view read by another view.
pub struct ChangesSource {
    name: String,
    schema: SchemaRef,
    backfill: Option<Delta>,
    /// The input's errors when the view started (it starts in error too).
    backfill_errors: Vec<(super::RowError, i64)>,
    counts: Counts,
}

impl ChangesSource {
    /// `backfill`: the input's contents at the epoch the view starts from.
    pub fn new(
        name: &str,
        schema: SchemaRef,
        backfill: Delta,
        errors: Vec<(super::RowError, i64)>,
    ) -> ChangesSource {
        ChangesSource {
            name: name.to_string(),
            schema,
            backfill: Some(backfill),
            backfill_errors: errors,
            counts: Counts::default(),
        }
    }
}

impl Operator for ChangesSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn step(&mut self, _inputs: Vec<Delta>, cx: &mut StepContext<'_>) -> Result<Delta> {
        let mut parts = Vec::with_capacity(2);
        if let Some(b) = self.backfill.take() {
            parts.push(b);
        }
        if let Some(d) = cx.changes.get(&self.name) {
            parts.push(d.as_ref().clone());
        }
        // An errored input makes this view errored too (Materialize's
        // error propagation), and its recovery recovers this one.
        cx.errors.append(&mut self.backfill_errors);
        if let Some(e) = cx.error_changes.get(&self.name) {
            cx.errors.extend(e.iter().cloned());
        }
        let out = Delta::concat(&self.schema, &parts)?;
        self.counts.rows_in += out.len() as u64;
        self.counts.rows_out += out.len() as u64;
        Ok(out)
    }

    fn stats(&self, out: &mut Vec<OperatorStats>) {
        out.push(self.counts.stats(format!("read {}", self.name)));
    }

    fn save(&self, w: &mut Writer) {
        w.tag("changes");
        w.bytes(self.name.as_bytes());
    }

    /// The restored view already holds the input's contents: no backfill.
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<()> {
        r.tag("changes")?;
        if r.bytes()? != self.name.as_bytes() {
            return Err(super::DataflowError::Checkpoint(format!(
                "a leaf no longer reads {}",
                self.name
            )));
        }
        self.backfill = None;
        self.backfill_errors.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LateRule;

    #[test]
    fn late_rows_by_their_window_and_the_stream_time() {
        // Windows of 10 s advancing by 5 s, 2 s of grace; the copy one
        // advance back.
        let s = 1_000_000;
        let latest = LateRule {
            size_us: 10 * s,
            advance_us: 5 * s,
            grace_us: 2 * s,
            back: 0,
        };
        let earlier = LateRule { back: 1, ..latest };
        // A row at 7 s: windows [5, 15) and [0, 10).
        assert!(!latest.late(7 * s, 16 * s));
        assert!(latest.late(7 * s, 17 * s));
        assert!(!earlier.late(7 * s, 11 * s));
        assert!(earlier.late(7 * s, 12 * s));
        // Times at the ends of the range neither panic nor wrap.
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            for now in [i64::MIN, 0, i64::MAX] {
                let _ = latest.late(t, now);
                let _ = earlier.late(t, now);
            }
        }
        assert!(!earlier.late(i64::MIN, i64::MIN));
    }
}
