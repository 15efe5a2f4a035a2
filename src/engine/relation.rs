//! A relation over a topic (a STREAM, or a TABLE's changelog): a DataFusion
//! `TableProvider` whose scan is a bounded read of every partition up to its
//! current end, JSON values decoded into Arrow batches, and whose
//! `insert_into` writes rows as JSON records into the topic (so Kafka
//! consumers see them), fsynced before the INSERT returns.
//!
//! Records that do not decode are counted in [`DecodeErrors`] and skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;
use tracing::warn;

use crate::dataflow::decode_errors::DecodeErrors;
use crate::dataflow::runtime::Dataflows;
use crate::format::record::{Layout, RecordRef};
use crate::log::batch::{self, NewRecord};
use crate::log::partitioner::Partitioner;
use crate::log::{self as log, Durability, LogStore, now_ms};

pub struct TopicRelation {
    name: String,
    topic: String,
    schema: SchemaRef,
    /// How the columns map onto records (a stream's pseudo-columns).
    layout: Layout,
    log: Arc<dyn LogStore>,
    errors: Arc<DecodeErrors>,
    partitioner: Arc<Partitioner>,
    dataflows: Arc<Dataflows>,
    /// A table: scans read its maintained state, not the changelog.
    from_index: bool,
}

impl fmt::Debug for TopicRelation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicRelation({} over {})", self.name, self.topic)
    }
}

impl TopicRelation {
    pub fn new(
        name: &str,
        topic: &str,
        layout: Layout,
        log: Arc<dyn LogStore>,
        errors: Arc<DecodeErrors>,
        dataflows: Arc<Dataflows>,
        from_index: bool,
    ) -> TopicRelation {
        let schema = Arc::clone(layout.schema());
        TopicRelation {
            name: name.to_string(),
            topic: topic.to_string(),
            schema,
            layout,
            log,
            errors,
            partitioner: Arc::new(Partitioner::new()),
            dataflows,
            from_index,
        }
    }

    /// Every record of every partition up to its current end, decoded.
    pub fn snapshot(&self) -> DfResult<Vec<RecordBatch>> {
        let partitions = self.log.topic_info(&self.topic).map_err(ext)?.partitions;
        let mut out = Vec::new();
        for p in 0..partitions {
            let (start, end) = self.log.offsets(&self.topic, p).map_err(ext)?;
            for records in log::records(&*self.log, &self.topic, p, start, end, 4 << 20) {
                let records = records.map_err(ext)?;
                let live: Vec<_> = records.iter().collect();
                // A record without a value (a tombstone) is not a row.
                let (live, tombstones): (Vec<_>, Vec<_>) =
                    live.into_iter().partition(|r| r.value.is_some());
                for r in tombstones {
                    self.errors
                        .record(&self.name, &self.topic, p, r.offset, "record has no value");
                }
                let values: Vec<RecordRef<'_>> = live
                    .iter()
                    .map(|r| RecordRef {
                        key: r.key.as_deref(),
                        value: r.value.as_deref().unwrap_or_default(),
                        partition: p,
                        offset: r.offset,
                        timestamp: r.timestamp,
                    })
                    .collect();
                let (b, _, failures) = self.layout.decode(&values);
                for f in failures {
                    let r = live[f.index];
                    self.errors
                        .record(&self.name, &self.topic, p, r.offset, &f.reason);
                }
                if b.num_rows() > 0 {
                    out.push(b);
                }
            }
        }
        Ok(out)
    }
}

fn ext(e: crate::log::LogError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl TopicRelation {
    /// Its maintained state (a table's index), as a scan reads it.
    fn index(&self) -> super::index_table::IndexTable {
        super::index_table::IndexTable::new(
            &self.name,
            Arc::clone(&self.schema),
            Arc::clone(&self.dataflows),
        )
    }
}

#[async_trait]
impl TableProvider for TopicRelation {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        if self.from_index {
            return self.index().supports_filters_pushdown(filters);
        }
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.from_index {
            return self.index().scan(state, projection, filters, limit).await;
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[self.snapshot()?],
            self.schema(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let sink = TopicSink {
            topic: self.topic.clone(),
            schema: self.schema(),
            layout: self.layout.clone(),
            log: Arc::clone(&self.log),
            partitioner: Arc::clone(&self.partitioner),
            dataflows: Arc::clone(&self.dataflows),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Writes inserted rows into the topic as JSON records, one batch per
/// partition, fsynced (an acknowledged INSERT is durable).
struct TopicSink {
    topic: String,
    schema: SchemaRef,
    layout: Layout,
    log: Arc<dyn LogStore>,
    partitioner: Arc<Partitioner>,
    dataflows: Arc<Dataflows>,
}

impl fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for TopicSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicSink: topic={}", self.topic)
    }
}

#[async_trait]
impl DataSink for TopicSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let partitions = self.log.topic_info(&self.topic).map_err(ext)?.partitions;
        let mut count = 0u64;
        let mut by_partition: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
        while let Some(b) = data.next().await {
            let b = b?;
            let rows = self.layout.encode(&b)?;
            count += rows.len() as u64;
            let now = now_ms();
            for row in rows {
                // An explicit _partition, else by key as a Kafka producer
                // would (keyless rows spread).
                let p = match row.partition {
                    Some(p) if (0..partitions).contains(&p) => p,
                    Some(p) => {
                        return Err(DataFusionError::Execution(format!(
                            "_partition {p} is out of range: topic {} has {partitions} partitions",
                            self.topic
                        )));
                    }
                    None => self.partitioner.partition(row.key.as_deref(), partitions),
                };
                by_partition.entry(p).or_default().push(NewRecord {
                    key: row.key.map(Bytes::from),
                    value: row.value.map(Bytes::from),
                    timestamp: row.timestamp.unwrap_or(now),
                    headers: vec![],
                });
            }
        }
        // Inside a transaction block the records wait for its COMMIT.
        if let Some(txn) = context
            .session_config()
            .get_extension::<super::txn::Transaction>()
        {
            for (p, recs) in by_partition {
                txn.hold(&self.topic, p, recs);
            }
            return Ok(count);
        }
        let log = Arc::clone(&self.log);
        let topic_name = self.topic.clone();
        let dataflows = Arc::clone(&self.dataflows);
        tokio::task::spawn_blocking(move || -> DfResult<()> {
            for (p, recs) in by_partition {
                for chunk in recs.chunks(1000) {
                    let bytes: BytesMut = batch::encode(chunk).map_err(|e| ext(e.into()))?;
                    log.append(&topic_name, p, bytes, Durability::Fsync)
                        .map_err(ext)?;
                }
            }
            // Read-your-writes: the views reflect the rows before the INSERT
            // is acknowledged.
            if let Err(e) = dataflows.tick() {
                warn!(error = %e, "tick after INSERT failed");
            }
            Ok(())
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(count)
    }
}
