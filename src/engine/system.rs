//! System tables: the schema `eddy_catalog`, read with plain SQL
//! (`SELECT * FROM eddy_catalog.partitions`) over either query protocol.
//! Each table is computed when it is scanned, from the log, the catalog and
//! the running dataflows, so it is never stale. The `SHOW …` statements are
//! queries over these tables (see `statement::show_query`).
//!
//! | table                | one row per                                   |
//! |----------------------|-----------------------------------------------|
//! | `topics`             | topic (with `internal` for eddy's own)        |
//! | `partitions`         | topic partition: start/end offsets, bytes     |
//! | `relations`          | stream, table, view, materialized view        |
//! | `materialized_views` | materialized view: rows, backfill, status     |
//! | `dataflow_operators` | operator of a running dataflow                |
//! | `decode_errors`      | relation with records that did not decode     |
//! | `consumer_groups`    | (group, topic, partition) committed offset    |
//! | `checkpoints`        | relation in the last checkpoint of view state |
//! | `log_damage`         | damage the log found in its files, and what it did |
//! | `limits`             | limit on one request (`eddy serve --max-…`)   |
//! | `roles`              | role: login, superuser, whether it has a password |
//! | `privileges`         | (role, relation, privilege) granted           |
//! | `schemas`            | version of a subject in the schema registry   |

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::Engine;
use crate::catalog::Object;

pub const SCHEMA: &str = "eddy_catalog";

type Rows = Vec<Vec<ScalarValue>>;
type Producer = fn(&Engine) -> Result<Rows, String>;

/// A table computed at scan time by `rows`.
struct SystemTable {
    schema: SchemaRef,
    rows: Producer,
    engine: Weak<Engine>,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SystemTable({:?})", self.schema)
    }
}

fn text(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn int(x: i64) -> ScalarValue {
    ScalarValue::Int64(Some(x))
}

fn batch(schema: &SchemaRef, rows: Rows) -> DfResult<RecordBatch> {
    let columns = (0..schema.fields().len())
        .map(|c| {
            let f = schema.field(c);
            if rows.is_empty() {
                return Ok(datafusion::arrow::array::new_empty_array(f.data_type()));
            }
            ScalarValue::iter_to_array(rows.iter().map(|r| r[c].clone()))
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| DataFusionError::Execution("eddy is shutting down".into()))?;
        let rows = (self.rows)(&engine).map_err(DataFusionError::Execution)?;
        MemorySourceConfig::try_new_exec(
            &[vec![batch(&self.schema, rows)?]],
            self.schema(),
            projection.cloned(),
        )
        .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}

fn schema(cols: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
            .collect::<Vec<_>>(),
    ))
}

/// The `eddy_catalog` schema with every system table, reading `engine`.
pub fn schema_provider(engine: &Arc<Engine>) -> DfResult<Arc<dyn SchemaProvider>> {
    use DataType::{Boolean, Int32, Int64, Utf8};
    let tables: Vec<(&str, SchemaRef, Producer)> = vec![
        (
            "topics",
            schema(&[
                ("name", Utf8, false),
                ("partitions", Int32, false),
                ("internal", Boolean, false),
                ("config", Utf8, false),
            ]),
            topics,
        ),
        (
            "partitions",
            schema(&[
                ("topic", Utf8, false),
                ("partition", Int32, false),
                ("start_offset", Int64, false),
                ("end_offset", Int64, false),
                ("size_bytes", Int64, true),
                ("segments", Int64, true),
            ]),
            partitions,
        ),
        (
            "relations",
            schema(&[
                ("name", Utf8, false),
                ("kind", Utf8, false),
                ("topic", Utf8, true),
                ("create_sql", Utf8, false),
            ]),
            relations,
        ),
        (
            "indexes",
            schema(&[
                ("name", Utf8, false),
                ("on", Utf8, false),
                ("key", Utf8, false),
                ("create_sql", Utf8, false),
            ]),
            indexes,
        ),
        (
            "materialized_views",
            schema(&[
                ("name", Utf8, false),
                ("rows", Int64, false),
                ("stream_records_read", Int64, false),
                ("stream_records", Int64, false),
                ("status", Utf8, false),
            ]),
            materialized_views,
        ),
        (
            "dataflow_operators",
            schema(&[
                ("dataflow", Utf8, false),
                ("operator", Utf8, false),
                ("rows_in", Int64, false),
                ("rows_out", Int64, false),
                ("state_rows", Int64, false),
                ("state_bytes", Int64, false),
                ("errors", Int64, false),
                ("late_rows", Int64, false),
                (
                    "watermark",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    true,
                ),
            ]),
            dataflow_operators,
        ),
        (
            "schemas",
            schema(&[
                ("subject", Utf8, false),
                ("version", Int32, false),
                ("id", Int64, false),
                ("schema_type", Utf8, false),
                ("deleted", Boolean, false),
                ("schema", Utf8, false),
            ]),
            registry_schemas,
        ),
        (
            "decode_errors",
            schema(&[
                ("relation", Utf8, false),
                ("errors", Int64, false),
                ("last_error", Utf8, false),
            ]),
            decode_errors,
        ),
        (
            "consumer_groups",
            schema(&[
                ("group_id", Utf8, false),
                ("topic", Utf8, false),
                ("partition", Int32, false),
                ("committed_offset", Int64, false),
                ("end_offset", Int64, true),
                ("lag", Int64, true),
            ]),
            consumer_groups,
        ),
        (
            "checkpoints",
            schema(&[
                ("relation", Utf8, false),
                ("kind", Utf8, false),
                ("epoch", Int64, false),
                (
                    "written_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                    false,
                ),
                ("state_bytes", Int64, false),
                ("restored_at_start", Boolean, false),
            ]),
            checkpoints,
        ),
        (
            "log_damage",
            schema(&[
                ("topic", Utf8, false),
                ("partition", Int32, true),
                ("file", Utf8, false),
                ("position", Int64, false),
                ("offset", Int64, true),
                ("reason", Utf8, false),
                ("action", Utf8, false),
                ("bytes", Int64, false),
                (
                    "detected_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                    false,
                ),
            ]),
            log_damage,
        ),
        (
            "limits",
            schema(&[
                ("name", Utf8, false),
                ("value", Int64, false),
                ("description", Utf8, false),
            ]),
            limits,
        ),
        (
            "roles",
            schema(&[
                ("name", Utf8, false),
                ("login", DataType::Boolean, false),
                ("superuser", DataType::Boolean, false),
                ("password", DataType::Boolean, false),
            ]),
            roles,
        ),
        (
            "privileges",
            schema(&[
                ("role", Utf8, false),
                ("relation", Utf8, false),
                ("privilege", Utf8, false),
            ]),
            privileges,
        ),
    ];
    let provider = MemorySchemaProvider::new();
    for (name, schema, rows) in tables {
        provider.register_table(
            name.to_string(),
            Arc::new(SystemTable {
                schema,
                rows,
                engine: Arc::downgrade(engine),
            }),
        )?;
    }
    Ok(Arc::new(provider))
}

fn limits(e: &Engine) -> Result<Rows, String> {
    Ok(e.limits
        .rows()
        .into_iter()
        .map(|(name, value, description)| vec![text(name), int(value), text(description)])
        .collect())
}

fn roles(e: &Engine) -> Result<Rows, String> {
    let flag = |b: bool| ScalarValue::Boolean(Some(b));
    Ok(e.roles
        .list()
        .into_iter()
        .map(|r| {
            vec![
                text(r.name),
                flag(r.login),
                flag(r.superuser),
                flag(r.secret.is_some()),
            ]
        })
        .collect())
}

fn privileges(e: &Engine) -> Result<Rows, String> {
    Ok(e.roles
        .list()
        .into_iter()
        .flat_map(|r| {
            let name = r.name.clone();
            r.grants.into_iter().flat_map(move |(relation, held)| {
                let name = name.clone();
                held.into_iter()
                    .map(move |p| vec![text(name.clone()), text(relation.clone()), text(p.name())])
            })
        })
        .collect())
}

fn topics(e: &Engine) -> Result<Rows, String> {
    Ok(e.log
        .topics()
        .into_iter()
        .map(|t| {
            let config: Vec<String> = t
                .overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                text(t.name),
                ScalarValue::Int32(Some(t.partitions)),
                ScalarValue::Boolean(Some(t.internal)),
                text(config.join(", ")),
            ]
        })
        .collect())
}

fn partitions(e: &Engine) -> Result<Rows, String> {
    let mut out = Vec::new();
    for t in e.log.topics() {
        for p in 0..t.partitions {
            // A topic dropped between the two calls is skipped.
            let Ok((start, end)) = e.log.offsets(&t.name, p) else {
                continue;
            };
            let (bytes, segments) = e.log.disk_usage(&t.name, p).unzip();
            out.push(vec![
                text(t.name.clone()),
                ScalarValue::Int32(Some(p)),
                int(start),
                int(end),
                ScalarValue::Int64(bytes.map(|b| b as i64)),
                ScalarValue::Int64(segments.map(|s| s as i64)),
            ]);
        }
    }
    Ok(out)
}

fn relations(e: &Engine) -> Result<Rows, String> {
    let catalog = e.lock().map_err(|e| e.to_string())?;
    Ok(catalog
        .objects()
        .map(|o| {
            let topic = match o {
                Object::Stream { topic, .. }
                | Object::Table { topic, .. }
                | Object::Sink { topic, .. } => ScalarValue::Utf8(Some(topic.clone())),
                Object::MaterializedView { ksql: Some(k), .. } => {
                    ScalarValue::Utf8(Some(k.topic.clone()))
                }
                _ => ScalarValue::Utf8(None),
            };
            // A ksqlDB persistent query's relation is the stream or
            // table it was created as (SHOW STREAMS lists it).
            let kind = match o {
                Object::MaterializedView { ksql: Some(k), .. } if k.table => "table",
                Object::MaterializedView { ksql: Some(_), .. } => "stream",
                o => o.kind(),
            };
            vec![text(o.name()), text(kind), topic, text(o.sql())]
        })
        .collect())
}

fn indexes(e: &Engine) -> Result<Rows, String> {
    let catalog = e.lock().map_err(|e| e.to_string())?;
    Ok(catalog
        .objects()
        .filter_map(|o| match o {
            Object::Index {
                name,
                on,
                columns,
                sql,
            } => Some(vec![
                text(name),
                text(on),
                text(format!("{{{}}}", columns.join(","))),
                text(sql),
            ]),
            _ => None,
        })
        .collect())
}

fn materialized_views(e: &Engine) -> Result<Rows, String> {
    Ok(e.dataflows
        .views()
        .into_iter()
        .map(|v| {
            let status = match (&v.failed, &v.error) {
                (Some(e), _) => format!("failed: {e}"),
                (None, Some(e)) => format!("error: {e}"),
                (None, None) if v.read < v.total => "backfilling".to_string(),
                (None, None) => "running".to_string(),
            };
            vec![
                text(v.name),
                int(v.rows as i64),
                int(v.read),
                int(v.total),
                text(status),
            ]
        })
        .collect())
}

fn dataflow_operators(e: &Engine) -> Result<Rows, String> {
    Ok(e.dataflows
        .operators()
        .into_iter()
        .map(|(view, o)| {
            vec![
                text(view),
                text(o.operator),
                int(o.rows_in as i64),
                int(o.rows_out as i64),
                int(o.state_rows as i64),
                int(o.state_bytes as i64),
                int(o.errors as i64),
                int(o.late as i64),
                ScalarValue::TimestampMicrosecond(o.watermark, Some("+00:00".into())),
            ]
        })
        .collect())
}

fn registry_schemas(e: &Engine) -> Result<Rows, String> {
    Ok(e.registry
        .all_versions()
        .into_iter()
        .map(|(v, s)| {
            vec![
                text(v.subject),
                ScalarValue::Int32(Some(v.version)),
                int(i64::from(v.id)),
                text(format!("{:?}", s.kind).to_uppercase()),
                ScalarValue::Boolean(Some(v.deleted)),
                text(s.text),
            ]
        })
        .collect())
}

fn decode_errors(e: &Engine) -> Result<Rows, String> {
    Ok(e.errors
        .snapshot()
        .into_iter()
        .map(|(relation, n, last)| vec![text(relation), int(n as i64), text(last)])
        .collect())
}

fn consumer_groups(e: &Engine) -> Result<Rows, String> {
    let mut out = Vec::new();
    for g in e.log.groups() {
        for (topic, partition, c) in e.log.group_offsets(&g) {
            let end = e.log.offsets(&topic, partition).ok().map(|(_, end)| end);
            out.push(vec![
                text(g.clone()),
                text(topic),
                ScalarValue::Int32(Some(partition)),
                int(c.offset),
                ScalarValue::Int64(end),
                ScalarValue::Int64(end.map(|end| (end - c.offset).max(0))),
            ]);
        }
    }
    Ok(out)
}

fn checkpoints(e: &Engine) -> Result<Rows, String> {
    let restored = e.restored();
    Ok(e.dataflows
        .last_checkpoint()
        .into_iter()
        .map(|c| {
            let was_restored = restored.contains(&c.relation);
            vec![
                text(c.relation),
                text(c.kind),
                int(c.epoch as i64),
                ScalarValue::TimestampMillisecond(Some(c.written_ms), Some("+00:00".into())),
                int(c.bytes as i64),
                ScalarValue::Boolean(Some(was_restored)),
            ]
        })
        .collect())
}

fn log_damage(e: &Engine) -> Result<Rows, String> {
    Ok(e.log
        .damage()
        .into_iter()
        .map(|d| {
            vec![
                text(d.topic),
                ScalarValue::Int32(d.partition),
                text(d.file.display().to_string()),
                int(d.position as i64),
                ScalarValue::Int64((d.offset >= 0).then_some(d.offset)),
                text(d.reason),
                text(d.action.as_str()),
                int(d.bytes as i64),
                ScalarValue::TimestampMillisecond(Some(d.detected_ms), Some("+00:00".into())),
            ]
        })
        .collect())
}
