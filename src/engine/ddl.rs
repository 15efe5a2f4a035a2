//! Statements that define and remove objects (`Statement::Ddl`):
//! topics, streams, tables (plain, upsert, `AS`), views, materialized
//! views, sinks, DROP. Each persists its object in the catalog
//! (`__eddy_catalog`, fsynced) before it is acknowledged; how objects
//! come into the session and the dataflows is `objects.rs`.
//!
//! (About 990 lines: one function per DDL statement; CREATE STREAM's formats
//! and keys — JSON, CSV, Avro, JSON_SR — are most of it.)

use datafusion::common::TableReference;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, CreateTable, CreateTableOptions, CreateView, Expr, Query,
    Statement as SqlStatement, TableConstraint,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::statement::{self, Ddl, DropKind, Statement};
use super::{Engine, EngineError, Output, Result, names, pg_compat, query, using};
use crate::catalog::{Column, Format, Object};
use crate::dataflow::aggregate::WindowClose;
use crate::log::LogError;
use crate::types;

/// A view's query that DataFusion's analyzer refuses for a correlated
/// subquery (one it cannot prove single-row, which a SELECT runs as an
/// apply, `apply.rs`) cannot be maintained: 0A000 naming the construct.
/// DataFusion says so only in its message (a plan error).
fn not_maintainable_subquery(e: EngineError) -> EngineError {
    match &e {
        EngineError::DataFusion(d) if d.to_string().contains("Correlated scalar subquery") => {
            EngineError::Unsupported(format!(
                "a correlated subquery a materialized view cannot maintain ({})",
                d.message()
            ))
        }
        _ => e,
    }
}

/// Whether the view created by `sql` (its CREATE VIEW) reads relation
/// `name`.
fn view_reads(sql: &str, name: &str) -> bool {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    statements.iter().any(|s| {
        datafusion::sql::sqlparser::ast::visit_relations(s, |r| {
            if names::object(r) == name {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .is_break()
    })
}

/// The changelog topic of table `name` (as written, quotes and all):
/// `__table_<name>` with what a topic name cannot hold (quotes, spaces)
/// made `_`.
pub(super) fn table_topic(name: &str) -> String {
    let name: String = name
        .chars()
        .filter(|c| *c != '"')
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("__table_{name}")
}

/// Partitions of topics created for streams and tables when unspecified.
const DEFAULT_PARTITIONS: i32 = 1;

impl Engine {
    /// Run one statement of the family.
    pub(super) async fn ddl(&self, d: Ddl) -> Result<Output> {
        match d {
            Ddl::CreateSources(all) => {
                for d in &all {
                    if let Ddl::CreateStream {
                        name,
                        if_not_exists: false,
                        ..
                    } = d
                    {
                        self.ensure_free(name)?;
                    }
                }
                for d in all {
                    Box::pin(self.ddl(d)).await?;
                }
                Ok(Output::Command("CREATE SOURCE".into(), None))
            }
            Ddl::CreateTopic {
                name,
                options,
                if_not_exists,
            } => {
                if if_not_exists && self.log.topic_info(&name).is_ok() {
                    return Ok(Output::Command("CREATE TOPIC".into(), None));
                }
                let partitions = options
                    .get("partitions")
                    .map(|p| p.parse::<i32>())
                    .transpose()
                    .map_err(|_| EngineError::Invalid("partitions must be an integer".into()))?
                    .unwrap_or(1);
                let cfg = options
                    .into_iter()
                    .filter(|(k, _)| k != "partitions" && k != "replication_factor")
                    .collect();
                self.log.create_topic(&name, partitions, cfg)?;
                Ok(Output::Command("CREATE TOPIC".into(), None))
            }
            Ddl::AlterTopic { name, set, reset } => {
                let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
                for (k, v) in set {
                    if k == "partitions" {
                        let n = v.parse::<i32>().map_err(|_| {
                            EngineError::Invalid("partitions must be an integer".into())
                        })?;
                        self.log.create_partitions(&name, n)?;
                    } else {
                        changes.insert(k, Some(v));
                    }
                }
                for k in reset {
                    changes.insert(k, None);
                }
                if !changes.is_empty() {
                    self.log.alter_topic_config(&name, &changes)?;
                }
                Ok(Output::Command("ALTER TOPIC".into(), None))
            }
            Ddl::CreateStream {
                name,
                columns,
                keys,
                mut options,
                if_not_exists,
                sql,
            } => {
                let tag = if options.contains_key("source") {
                    "CREATE SOURCE"
                } else {
                    "CREATE STREAM"
                };
                if if_not_exists && self.lock()?.get(&name).is_some() {
                    return Ok(Output::Command(tag.into(), None));
                }
                self.ensure_free(&name)?;
                // The cluster the topic is on: a connection's, brokers
                // named inline, or (neither, or either being this
                // server) eddy's own log.
                let mut cluster = None;
                if let Some(c) = options.get("connection") {
                    match self.lock()?.get(c) {
                        Some(Object::Connection { external, .. }) => {
                            cluster = external.then(|| c.clone());
                        }
                        _ => {
                            return Err(EngineError::UnknownObject {
                                kind: "connection",
                                name: c.clone(),
                            });
                        }
                    }
                } else if let Some(b) = options.get("brokers").cloned()
                    && self.is_external(&b, &BTreeMap::new()).await?
                {
                    cluster = Some(b);
                }
                let topic = options
                    .get("topic")
                    .or_else(|| options.get("kafka_topic"))
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                let topic = match cluster {
                    Some(c) => crate::log::routed::remote_topic(&c, &topic),
                    None => topic,
                };
                let format_name = options
                    .get("format")
                    .or_else(|| options.get("value_format"))
                    .map(String::as_str)
                    .unwrap_or("json");
                let format = Format::parse(format_name).ok_or_else(|| {
                    EngineError::Unsupported(format!(
                        "format '{format_name}' (formats: json, csv, text, bytes, avro, json_sr)"
                    ))
                })?;
                // An Avro stream's value schema: the subject's latest,
                // whose fields are the columns when none are named.
                let subject = options
                    .get("value.subject")
                    .or_else(|| options.get("subject"))
                    .cloned()
                    .unwrap_or_else(|| format!("{topic}-value"));
                let registry_format = matches!(format, Format::Avro | Format::JsonSr);
                let registered = match registry_format {
                    true => self.registry.version(&subject, "latest", false).ok(),
                    false => None,
                };
                let infer = registry_format
                    && columns
                        .iter()
                        .all(|c| keys.contains(&names::ident(&c.name)));
                let mut columns = match columns.is_empty() && infer {
                    true => Vec::new(),
                    false => Self::columns(&columns)?,
                };
                for c in columns.iter_mut() {
                    c.key = keys.contains(&c.name);
                }
                if infer {
                    let language = match format {
                        Format::JsonSr => "JSON",
                        _ => "Avro",
                    };
                    let v = registered.as_ref().ok_or_else(|| {
                        EngineError::Invalid(format!(
                            "no {language} schema is registered under subject '{subject}' to take the stream's columns from: register the topic's value schema first, or name the columns"
                        ))
                    })?;
                    let not_it = || {
                        EngineError::Invalid(format!(
                            "schema {} of subject '{subject}' is not a {language} schema",
                            v.id
                        ))
                    };
                    let inferred = match format {
                        Format::JsonSr => {
                            if !crate::format::json_sr::is_json_schema(&self.registry, v.id) {
                                return Err(not_it());
                            }
                            let text = self
                                .registry
                                .schema(v.id)
                                .map(|s| s.text)
                                .unwrap_or_default();
                            crate::format::json_sr::columns(&text)
                        }
                        _ => {
                            let schema = self.registry.avro(v.id).ok_or_else(not_it)?;
                            crate::format::avro::columns(&schema)
                        }
                    }
                    .map_err(|e| EngineError::Invalid(format!("subject '{subject}': {e}")))?;
                    for (name, sql_type) in inferred {
                        if columns.iter().any(|c| c.name == name) {
                            continue;
                        }
                        columns.push(Column {
                            name,
                            sql_type,
                            key: false,
                            time_from: None,
                            watermark: None,
                            idle_timeout_ms: None,
                        });
                    }
                }
                // ksqlDB's streams have ROWTIME, the record's time, which
                // windows read: a ksqlDB-spelled stream gets it as its
                // last column unless it names the record time itself.
                let ksql =
                    options.contains_key("kafka_topic") || options.contains_key("value_format");
                // TIMESTAMP = 'col': ROWTIME (event time, windows) is that
                // column's value (epoch milliseconds or a timestamp).
                let time_from = match options.get("timestamp") {
                    None => None,
                    Some(t) => {
                        let found = columns
                            .iter()
                            .find(|c| c.name == *t)
                            .or_else(|| columns.iter().find(|c| c.name.eq_ignore_ascii_case(t)))
                            .ok_or_else(|| EngineError::UnknownColumn(t.clone()))?;
                        if found.key {
                            return Err(EngineError::Unsupported(
                                "TIMESTAMP from a KEY column".into(),
                            ));
                        }
                        Some(found.name.clone())
                    }
                };
                if (ksql || time_from.is_some())
                    && !columns
                        .iter()
                        .any(|c| c.name == "rowtime" || c.name == "_timestamp")
                {
                    columns.push(Column {
                        name: "rowtime".into(),
                        sql_type: "TIMESTAMP".into(),
                        key: false,
                        time_from: None,
                        watermark: None,
                        idle_timeout_ms: None,
                    });
                }
                // RisingWave's WATERMARK FOR col AS col - INTERVAL …:
                // col is the event time; rows below the watermark are late.
                if let Some(w) = options.remove(statement::WATERMARK_OPTION) {
                    let (delay, column) = w.split_once(' ').unwrap_or(("0", w.as_str()));
                    let delay: i64 = delay.parse().unwrap_or(0);
                    let c = columns
                        .iter_mut()
                        .find(|c| c.name == column)
                        .ok_or_else(|| EngineError::UnknownColumn(column.to_string()))?;
                    let t = statement::parse_type(&c.sql_type)?;
                    if !matches!(
                        types::to_arrow(&t).ok(),
                        Some(datafusion::arrow::datatypes::DataType::Timestamp(..))
                    ) {
                        return Err(EngineError::Invalid(format!(
                            "WATERMARK FOR {column}: a watermark's column is a timestamp"
                        )));
                    }
                    c.watermark = Some(delay);
                }
                // Flink's idle timeout: on the event-time column, the
                // declared watermark's or else the record time.
                if let Some(t) = options
                    .remove("idle_timeout")
                    .or_else(|| options.remove("scan.watermark.idle-timeout"))
                {
                    let ms = idle_timeout_ms(&t)?;
                    let c = match columns.iter().position(|c| c.watermark.is_some()) {
                        Some(i) => Some(i),
                        None => columns
                            .iter()
                            .position(|c| c.name == "rowtime" || c.name == "_timestamp"),
                    };
                    let c = c.ok_or_else(|| {
                        EngineError::Invalid(
                            "idle_timeout needs an event time: a WATERMARK FOR column, or ROWTIME (a ksqlDB-spelled stream) or _timestamp".into(),
                        )
                    })?;
                    columns[c].idle_timeout_ms = Some(ms);
                }
                if let Some(from) = time_from {
                    for c in columns.iter_mut() {
                        if c.name == "rowtime" || c.name == "_timestamp" {
                            c.time_from = Some(from.clone());
                        }
                    }
                }
                if keys.len() > 1 {
                    return Err(EngineError::Unsupported(
                        "more than one KEY column (the record key holds one)".into(),
                    ));
                }
                let layout = Self::layout_of(&columns, format)?;
                // No schema under the subject yet: the columns' own,
                // registered (what INSERT and producers that ask the
                // registry write with).
                let fields: Vec<_> = layout
                    .value_fields()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let own = match format {
                    Format::Avro => Some(crate::registry::NewSchema {
                        text: crate::format::avro::schema_of(
                            &crate::format::avro::record_name(&name),
                            &fields,
                        )
                        .to_string(),
                        ..Default::default()
                    }),
                    Format::JsonSr => Some(crate::registry::NewSchema {
                        text: crate::format::json_sr::schema_of(&name, &fields).to_string(),
                        kind: crate::registry::SchemaType::Json,
                        references: vec![],
                    }),
                    _ => None,
                };
                let avro = match (registered, own) {
                    (Some(v), Some(_)) => Some(crate::catalog::AvroSpec {
                        id: v.id,
                        resolve: infer,
                    }),
                    (None, Some(new)) => {
                        let id = self.registry.register(&subject, &new).map_err(|e| {
                            EngineError::Invalid(format!(
                                "registering the stream's schema under subject '{subject}': {e}"
                            ))
                        })?;
                        Some(crate::catalog::AvroSpec { id, resolve: false })
                    }
                    (_, None) => None,
                };
                // KEY_FORMAT = 'AVRO': the key column's schema, the
                // subject `{topic}-key`'s latest or the column's own.
                let key_avro = match options.get("key_format") {
                    Some(f) if f.eq_ignore_ascii_case("avro") => {
                        let key_field = layout
                            .schema()
                            .fields()
                            .iter()
                            .find(|f| crate::format::record::Meta::of_name_or_key(f));
                        let subject = format!("{topic}-key");
                        match (self.registry.version(&subject, "latest", false), key_field) {
                            (Ok(v), _) => Some(v.id),
                            (Err(_), Some(f)) => {
                                let new = crate::registry::NewSchema {
                                    text: crate::format::avro::key_schema_of(f.data_type())
                                        .to_string(),
                                    ..Default::default()
                                };
                                Some(self.registry.register(&subject, &new).map_err(|e| {
                                    EngineError::Invalid(format!(
                                        "registering the stream's key schema under subject '{subject}': {e}"
                                    ))
                                })?)
                            }
                            (Err(_), None) => None,
                        }
                    }
                    _ => None,
                };
                // KEY_FORMAT = 'KAFKA' | 'JSON': checked against the key
                // column's type now, not at the first record.
                let key_format = match options.get("key_format") {
                    Some(f) if !f.eq_ignore_ascii_case("avro") => {
                        crate::format::key::KeyFormat::parse(f).map_err(EngineError::Unsupported)?
                    }
                    _ => None,
                };
                if let Some(kf) = key_format
                    && let Some(f) = layout
                        .schema()
                        .fields()
                        .iter()
                        .find(|f| crate::format::record::Meta::of_name_or_key(f))
                {
                    kf.check(f.name(), f.data_type())
                        .map_err(EngineError::Unsupported)?;
                }
                self.ensure_topic(&topic, &options)?;
                let o = Object::Stream {
                    name,
                    topic,
                    format,
                    columns,
                    sql,
                    avro,
                    key_avro,
                    key_format,
                };
                self.register(&o)?;
                self.lock()?.insert(o)?;
                Ok(Output::Command(tag.into(), None))
            }
            Ddl::Drop {
                kind,
                names,
                if_exists,
                cascade,
                delete_topic,
            } => {
                // The topics to delete, read before their objects go.
                let topics: Vec<String> = match delete_topic {
                    false => vec![],
                    true => names
                        .iter()
                        .filter_map(|n| self.topic_of(n).ok().flatten())
                        .collect(),
                };
                let out = self.drop(kind, names, if_exists, cascade).await?;
                for t in topics {
                    match self.log.delete_topic(&t) {
                        Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // The topic's schemas go with it, as ksqlDB deletes
                    // them: soft, then permanently (a subject that was
                    // never registered is no error).
                    for subject in [format!("{t}-value"), format!("{t}-key")] {
                        let _ = self.registry.delete(&subject, None, false);
                        let _ = self.registry.delete(&subject, None, true);
                    }
                }
                Ok(out)
            }
            Ddl::Terminate(names) => self.terminate(names),
            Ddl::CreateIndex {
                name,
                on,
                columns,
                if_not_exists,
                sql,
            } => {
                self.create_index(name, on, columns, if_not_exists, sql)
                    .await
            }
            Ddl::CreateConnection {
                name,
                broker,
                properties,
                registry,
                if_not_exists,
                sql,
            } => {
                if if_not_exists && self.lock()?.get(&name).is_some() {
                    return Ok(Output::Command("CREATE CONNECTION".into(), None));
                }
                self.ensure_free(&name)?;
                // Secrets are not shown back (`eddy_catalog.relations`).
                let mut sql = sql;
                for k in ["sasl.password", "ssl.key.pem"] {
                    if let Some(v) = properties.get(k) {
                        sql = sql.replace(&format!("'{}'", v.replace('\'', "''")), "'********'");
                    }
                }
                let external = !registry && self.is_external(&broker, &properties).await?;
                if external {
                    self.routed.connect(&name, &broker, properties.clone())?;
                }
                self.lock()?.insert(Object::Connection {
                    name,
                    broker,
                    sql,
                    external,
                    properties,
                })?;
                Ok(Output::Command("CREATE CONNECTION".into(), None))
            }
            Ddl::CreateSink {
                name,
                from,
                topic,
                connection,
                avro,
                upsert_key,
                if_not_exists,
                sql,
            } => {
                if self.lock()?.get(&name).is_some() && if_not_exists {
                    return Ok(Output::Command("CREATE SINK".into(), None));
                }
                self.ensure_free(&name)?;
                self.ensure_maintained(&from, "a sink")?;
                let topic = match connection {
                    None => topic,
                    Some(c) => match self.lock()?.get(&c) {
                        Some(Object::Connection { external: true, .. }) => {
                            crate::log::routed::remote_topic(&c, &topic)
                        }
                        Some(Object::Connection { .. }) => topic,
                        _ => {
                            return Err(EngineError::UnknownObject {
                                kind: "connection",
                                name: c,
                            });
                        }
                    },
                };
                if self.log.topic_info(&topic).is_err() {
                    self.log.create_topic(&topic, 1, BTreeMap::new())?;
                }
                let envelope = match upsert_key {
                    Some(key) => crate::catalog::Envelope::Upsert { key },
                    None => crate::catalog::Envelope::Debezium,
                };
                let avro = match avro {
                    true => Some(self.sink_schema(&from, &topic, &envelope, true).await?),
                    false => None,
                };
                self.lock()?.insert(Object::Sink {
                    name: name.clone(),
                    from: from.clone(),
                    topic: topic.clone(),
                    sql,
                    envelope: envelope.clone(),
                    avro,
                    key_format: None,
                })?;
                self.start_sink(&name, &from, &topic, envelope, avro, None)
                    .await?;
                Ok(Output::Command("CREATE SINK".into(), None))
            }
            Ddl::CreateTable(ct, text) => self.create_table(*ct, text).await,
            Ddl::CreatePersistent(p) => self.create_persistent(*p).await,
            Ddl::SelectInto(q) => self.select_into(*q).await,
            Ddl::CreateView(v, text, window) if v.materialized => {
                self.create_materialized_view(*v, text, None, window, None)
                    .await
            }
            Ddl::CreateView(v, text, _) => self.create_view(*v, text).await,
        }
    }

    /// `CREATE TABLE`: a relation whose state is the multiset index of
    /// its changelog topic (keyed by its primary key, if any: an upsert
    /// changelog); `CREATE TABLE … AS` in `query.rs`.
    pub(super) async fn create_table(&self, ct: CreateTable, text: String) -> Result<Output> {
        let name = names::object(&ct.name);
        if ct.if_not_exists && self.lock()?.get(&name).is_some() {
            return Ok(Output::Command("CREATE TABLE".into(), None));
        }
        if ct.query.is_some() {
            if let Some(p) = self.ksql_table_as(&ct, &text)? {
                return self.create_persistent(p).await;
            }
            return Box::pin(self.create_table_as(ct)).await;
        }
        self.ensure_free(&name)?;
        let columns = Self::columns(&ct.columns)?;
        let mut primary_key: Vec<String> = ct
            .columns
            .iter()
            .filter(|c| {
                c.options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
            })
            .map(|c| names::ident(&c.name))
            .collect();
        for c in &ct.constraints {
            if let TableConstraint::PrimaryKey(pk) = c {
                primary_key.extend(pk.columns.iter().map(|c| match &c.column.expr {
                    Expr::Identifier(i) => names::ident(i),
                    e => e.to_string(),
                }));
            }
        }
        // `WITH (topic = …)` names a topic Kafka clients share (for
        // a keyed table: an upsert changelog they can write).
        let mut options = match &ct.table_options {
            CreateTableOptions::With(o) => statement::options(o.clone())?,
            CreateTableOptions::None => BTreeMap::new(),
            other => {
                return Err(EngineError::Unsupported(format!("table options {other}")));
            }
        };
        let topic = options
            .remove("topic")
            .or_else(|| options.remove("kafka_topic"))
            .unwrap_or_else(|| table_topic(&name));
        if !primary_key.is_empty() {
            options
                .entry("cleanup.policy".into())
                .or_insert_with(|| "compact".into());
        }
        Self::table_layout(&columns, &primary_key)?;
        self.ensure_topic(&topic, &options)?;
        let o = Object::Table {
            name,
            topic,
            columns,
            primary_key,
            sql: text,
        };
        let name = o.name().to_string();
        self.register(&o)?;
        let version = self.lock()?.insert(o)?;
        self.dataflows.set_version(&name, version)?;
        Ok(Output::Command("CREATE TABLE".into(), None))
    }

    /// `SELECT … INTO t`: `CREATE TABLE t AS SELECT …`.
    pub(super) async fn select_into(&self, mut q: Query) -> Result<Output> {
        let into = query::take_select_into(&mut q);
        let ct =
            datafusion::sql::sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder::new(
                Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&into)
                    .and_then(|mut p| p.parse_object_name(false))
                    .map_err(|e| EngineError::Syntax(e.to_string()))?,
            )
            .query(Some(Box::new(q)))
            .build();
        Box::pin(self.create_table_as(ct)).await
    }

    /// `CREATE MATERIALIZED VIEW`: the query lowered into a dataflow
    /// (`dataflow::lower`), backfilled, then maintained every tick.
    pub(super) async fn create_materialized_view(
        &self,
        v: CreateView,
        text: String,
        ksql: Option<crate::catalog::Ksql>,
        window: Option<WindowClose>,
        within: Option<crate::dataflow::join::JoinWindow>,
    ) -> Result<Output> {
        let name = names::object(&v.name);
        let existing = self.lock()?.get(&name).cloned();
        match existing {
            Some(_) if v.if_not_exists => {
                return Ok(Output::Command("CREATE MATERIALIZED VIEW".into(), None));
            }
            Some(o @ Object::MaterializedView { .. }) if v.or_replace => {
                self.drop_object(o, false)?;
            }
            _ => self.ensure_free(&name)?,
        }
        // now() in a view is the time it is read, as in RisingWave:
        // a temporal filter, like mz_now().
        // PostgreSQL refuses a relation with two columns of one
        // name, which a SELECT may have.
        if v.columns.is_empty()
            && let Some(name) = names::repeated_name(&SqlStatement::Query(v.query.clone()))
        {
            return Err(EngineError::DuplicateColumn(name));
        }
        let mut v = v;
        super::aliases::complete_view_columns(
            &self.ctx,
            &v.query,
            &mut v.columns,
            "too many column names were specified",
            false,
        )
        .await?;
        let query = self.maintained_query(v).await;
        let options = crate::dataflow::lower::ViewOptions {
            window,
            lookup_joins: ksql.is_some(),
            within,
        };
        if let Err(e) = self.install_view(&name, &query, true, options).await {
            let _ = self.dataflows.remove(&name);
            let _ = self
                .ctx
                .deregister_table(TableReference::bare(name.as_str()));
            return Err(not_maintainable_subquery(e));
        }
        let version = self.lock()?.insert(Object::MaterializedView {
            name: name.clone(),
            query,
            sql: text,
            ksql,
            window,
            within,
        })?;
        self.dataflows.set_version(&name, version)?;
        Ok(Output::Command("CREATE MATERIALIZED VIEW".into(), None))
    }

    /// The query a dataflow keeps for view definition `v`: as a dataflow
    /// runs it (`dataflow_query`), its columns renamed by the view's
    /// column list if it has one.
    pub(super) async fn maintained_query(&self, v: CreateView) -> String {
        let mut v = v;
        v.query = self.dataflow_query(v.query).await;
        // A column list renames the query's columns, all of them:
        // as aliases of its SELECT list where it has one without a
        // wildcard (its own names may then repeat), else around it.
        let mut aliased = SqlStatement::Query(v.query.clone());
        let columns: Vec<_> = v.columns.iter().map(|c| c.name.clone()).collect();
        if v.columns.is_empty() {
            v.query.to_string()
        } else if names::alias_items(&mut aliased, &columns) {
            aliased.to_string()
        } else {
            let names: Vec<String> = v.columns.iter().map(|c| c.name.to_string()).collect();
            format!(
                "SELECT * FROM ({}) AS _eddy_columns ({})",
                v.query,
                names.join(", ")
            )
        }
    }

    /// A query as a dataflow runs it: `now()` as `mz_now()` (in a view,
    /// now() is the time it is read, as in RisingWave: a temporal
    /// filter), values printable, set-returning calls in the SELECT list
    /// unnested, USING joins' merged columns, EXCEPT ALL and INTERSECT ALL as
    /// multisets (`set_ops.rs`), `count(t.*)`'s row (`whole_rows.rs`).
    async fn dataflow_query(&self, mut query: Box<Query>) -> Box<Query> {
        pg_compat::now_as_mz_now(&mut query);
        pg_compat::printable(&mut query);
        let mut q = SqlStatement::Query(query);
        self.hide_rowtime(&mut q);
        query::set_returning_in_select_list(&mut q);
        using::merge_join_columns(&self.ctx, &mut q).await;
        super::set_ops::multiset_operations(&self.ctx, &mut q).await;
        super::whole_rows::whole_row_arguments(&self.ctx, &mut q).await;
        names::name_result_columns(&mut q);
        super::aliases::complete_partial_aliases(&self.ctx, &mut q).await;
        match q {
            SqlStatement::Query(q) => q,
            _ => unreachable!("a query stays a query"),
        }
    }

    /// A dataflow of `query` for one SUBSCRIBE, under a name of its own
    /// that is in no catalog; removed when the returned guard drops.
    pub(super) async fn transient_view(&self, query: Box<Query>) -> Result<Transient> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("_eddy_subscribe_{n}");
        let query = self.dataflow_query(query).await;
        let guard = Transient {
            name: name.clone(),
            dataflows: Arc::clone(&self.dataflows),
            ctx: Arc::clone(&self.ctx),
            plans: Arc::clone(&self.plans),
        };
        self.install_view(&name, &query.to_string(), true, Default::default())
            .await
            .map_err(not_maintainable_subquery)?;
        Ok(guard)
    }

    /// `CREATE VIEW`: persisted, planned by DataFusion at each use.
    pub(super) async fn create_view(&self, v: CreateView, text: String) -> Result<Output> {
        let name = names::object(&v.name);
        let indexes = self.indexes_on(&name)?;
        if v.or_replace && !indexes.is_empty() {
            let names: Vec<&str> = indexes.iter().map(Object::name).collect();
            return Err(EngineError::Dependents {
                kind: "view",
                name,
                dependents: names.join(", "),
            });
        }
        if v.or_replace {
            let _ = self
                .ctx
                .deregister_table(TableReference::bare(name.as_str()));
        } else {
            self.ensure_free(&name)?;
        }
        self.define_view(v).await?;
        self.lock()?.insert(Object::View { name, sql: text })?;
        Ok(Output::Command("CREATE VIEW".into(), None))
    }

    /// Register plain view `v` in the session, where DataFusion keeps it
    /// and plans it at each use; its USING joins' columns merged as
    /// PostgreSQL merges them (`using.rs`).
    pub(super) async fn define_view(&self, mut v: CreateView) -> Result<()> {
        let mut q = SqlStatement::Query(v.query.clone());
        using::merge_join_columns(&self.ctx, &mut q).await;
        super::set_ops::multiset_operations(&self.ctx, &mut q).await;
        super::whole_rows::whole_row_arguments(&self.ctx, &mut q).await;
        names::name_result_columns(&mut q);
        super::aliases::complete_partial_aliases(&self.ctx, &mut q).await;
        if let SqlStatement::Query(q) = q {
            v.query = q;
        }
        super::aliases::complete_view_columns(
            &self.ctx,
            &v.query,
            &mut v.columns,
            "CREATE VIEW specifies more column names than columns",
            true,
        )
        .await?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(SqlStatement::CreateView(
                v,
            ))))
            .await?;
        self.ctx.execute_logical_plan(plan).await?;
        Ok(())
    }

    /// A plain view's definition from its CREATE VIEW text.
    pub(super) fn view_definition(&self, sql: &str) -> Result<CreateView> {
        match self.parse(sql)?.pop() {
            Some(Statement::Ddl(Ddl::CreateView(v, ..))) => Ok(*v),
            _ => Err(EngineError::Invalid(format!(
                "the definition of a view does not parse as CREATE VIEW: {sql}"
            ))),
        }
    }

    pub(super) async fn drop(
        &self,
        kind: DropKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        let tag = match kind {
            DropKind::Topic => "DROP TOPIC",
            DropKind::Stream => "DROP STREAM",
            DropKind::Table => "DROP TABLE",
            DropKind::View => "DROP VIEW",
            DropKind::MaterializedView => "DROP MATERIALIZED VIEW",
            DropKind::Sink => "DROP SINK",
            DropKind::Source => "DROP SOURCE",
            DropKind::Connection => "DROP CONNECTION",
            DropKind::Index => "DROP INDEX",
        };
        for name in names {
            if kind == DropKind::Topic {
                match self.log.delete_topic(&name) {
                    Ok(()) => {}
                    Err(LogError::UnknownTopic(_)) if if_exists => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            let existing = self.lock()?.get(&name).cloned();
            match existing {
                Some(o @ Object::Index { .. }) if kind == DropKind::Index => {
                    self.drop_index(&o).await?
                }
                Some(o)
                    if matches!(
                        &o,
                        Object::MaterializedView { ksql: Some(k), .. }
                            if matches!(
                                (k.table, kind),
                                (true, DropKind::Table) | (false, DropKind::Stream)
                            )
                    ) =>
                {
                    if let Object::MaterializedView { ksql: Some(k), .. } = &o {
                        let k = k.clone();
                        self.drop_persistent(o, &k, cascade)?
                    }
                }
                Some(o) if o.kind() == kind.noun() => self.drop_object(o, cascade)?,
                Some(o) => {
                    return Err(EngineError::WrongObject(format!(
                        "\"{name}\" is {}, not {}",
                        with_article(o.kind()),
                        with_article(kind.noun())
                    )));
                }
                None if if_exists => {}
                None => {
                    return Err(EngineError::UnknownObject {
                        kind: kind.noun(),
                        name,
                    });
                }
            }
        }
        Ok(Output::Command(tag.into(), None))
    }

    /// Drop one object; with `cascade`, the materialized views reading it
    /// first.
    pub(super) fn drop_object(&self, o: Object, cascade: bool) -> Result<()> {
        let name = o.name().to_string();
        let mut dependents = self.dataflows.dependents(&name);
        // A connection's: the streams and sinks on its cluster.
        let on_cluster = |topic: &str| {
            matches!(o, Object::Connection { .. })
                && crate::log::routed::split_remote(topic).is_some_and(|(c, _)| c == name)
        };
        dependents.extend(self.lock()?.objects().filter_map(|x| match x {
            Object::Stream { name: s, topic, .. } | Object::Sink { name: s, topic, .. }
                if on_cluster(topic) =>
            {
                Some(s.clone())
            }
            Object::Sink { name: s, from, .. } if *from == name => Some(s.clone()),
            Object::View { name: v, sql } if *v != name && view_reads(sql, &name) => {
                Some(v.clone())
            }
            _ => None,
        }));
        if !dependents.is_empty() {
            if !cascade {
                return Err(EngineError::Dependents {
                    kind: o.kind(),
                    name,
                    dependents: dependents.join(", "),
                });
            }
            for d in dependents {
                // Release the catalog lock before recursing.
                let dep = self.lock()?.get(&d).cloned();
                if let Some(dep) = dep {
                    self.drop_object(dep, true)?;
                }
            }
        }
        if let Object::Connection { .. } = o {
            self.lock()?.remove(&name)?;
            self.routed.disconnect(&name);
            return Ok(());
        }
        if let Object::Index { .. } = o {
            return self.unindex(&o);
        }
        // Its indexes go with it, as in PostgreSQL.
        for index in self.indexes_on(&name)? {
            self.lock()?.remove(index.name())?;
        }
        // Its sink's or load generator's task stops.
        if let Some(task) = self.tasks.lock().ok().and_then(|mut s| s.remove(&name)) {
            task.abort();
        }
        if let Object::Sink { .. } = o {
            self.lock()?.remove(&name)?;
            return Ok(());
        }
        self.ctx
            .deregister_table(TableReference::bare(name.as_str()))?;
        self.dataflows.remove(&name)?;
        self.lock()?.remove(&name)?;
        self.roles.forget_relation(&name)?;
        // A table's own changelog goes with it; a topic it was created
        // over (`WITH (topic = …)`) stays, as a stream's does.
        if let Object::Table { topic, .. } = o
            && topic == table_topic(&name)
        {
            self.log.delete_topic(&topic)?;
        }
        Ok(())
    }

    /// That `name` is a table or materialized view (what `reader`, a sink
    /// or SUBSCRIBE, can follow): else 42P01, or 42809 for another kind.
    pub(super) fn ensure_maintained(&self, name: &str, reader: &str) -> Result<()> {
        if self.dataflows.maintains(name) {
            return Ok(());
        }
        Err(if self.lock()?.get(name).is_some() {
            EngineError::WrongObject(format!(
                "{reader} reads a table or materialized view; \"{name}\" is neither"
            ))
        } else {
            EngineError::UnknownObject {
                kind: "relation",
                name: name.to_string(),
            }
        })
    }

    pub(super) fn columns(defs: &[ColumnDef]) -> Result<Vec<Column>> {
        let mut out = Vec::new();
        for d in defs {
            types::to_arrow(&d.data_type)
                .map_err(|e| EngineError::Unsupported(format!("type {}", e.0)))?;
            out.push(Column {
                name: names::ident(&d.name),
                sql_type: d.data_type.to_string(),
                key: false,
                time_from: None,
                watermark: None,
                idle_timeout_ms: None,
            });
        }
        if out.is_empty() {
            return Err(EngineError::Invalid(
                "a relation needs at least one column".into(),
            ));
        }
        Ok(out)
    }

    pub(super) fn ensure_free(&self, name: &str) -> Result<()> {
        if let Some(o) = self.lock()?.get(name) {
            return Err(EngineError::Exists {
                kind: o.kind(),
                name: name.to_string(),
            });
        }
        if self.ctx.table_exist(name)? {
            return Err(EngineError::Exists {
                kind: "relation",
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Whether `brokers` are another cluster than this server: asked
    /// for their cluster id. Brokers nobody answers for on this machine
    /// (`localhost:9092` in a script written for a Kafka eddy replaces)
    /// are taken as eddy itself, with a NOTICE; elsewhere they are an
    /// error, as Materialize validates a connection.
    pub(super) async fn is_external(
        &self,
        brokers: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let probe = brokers.to_string();
        let properties = properties.clone();
        let probe = tokio::task::spawn_blocking(move || {
            crate::log::remote::RemoteLog::probe(
                &probe,
                &properties,
                std::time::Duration::from_secs(5),
            )
        })
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
        use crate::log::remote::Probe;
        match probe {
            Probe::Cluster(id) => Ok(id != self.cluster_id),
            Probe::Unreachable if brokers.split(',').all(|b| is_local_host(b.trim())) => {
                super::notice(format!(
                    "no Kafka broker answers at {brokers}: taken as this server's own log"
                ));
                Ok(false)
            }
            Probe::Unreachable => Err(EngineError::Log(LogError::Upstream(format!(
                "{brokers}: no broker accepts a connection (a connection's brokers are asked for their cluster id when it is created)"
            )))),
            Probe::NoAnswer(why) => Err(EngineError::Log(LogError::Upstream(format!(
                "{brokers}: {why}"
            )))),
        }
    }

    pub(super) fn ensure_topic(
        &self,
        topic: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<()> {
        if self.log.topic_info(topic).is_ok() {
            return Ok(());
        }
        let partitions = match options.get("partitions") {
            Some(p) => p
                .parse()
                .map_err(|_| EngineError::Invalid(format!("partitions = {p}")))?,
            None => DEFAULT_PARTITIONS,
        };
        let cfg: BTreeMap<String, String> = options
            .iter()
            .filter(|(k, _)| k.contains('.'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.log.create_topic(topic, partitions, cfg)?;
        Ok(())
    }
}

/// `host:port` names this machine (a loopback address or `localhost`).
fn is_local_host(broker: &str) -> bool {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// A dataflow made for one SUBSCRIBE (`Engine::transient_view`): removed
/// from the dataflows and the session when dropped.
pub struct Transient {
    pub name: String,
    dataflows: Arc<crate::dataflow::runtime::Dataflows>,
    ctx: Arc<datafusion::prelude::SessionContext>,
    plans: Arc<super::plans::Plans>,
}

impl std::fmt::Debug for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transient")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Transient {
    fn drop(&mut self) {
        let _ = self
            .ctx
            .deregister_table(TableReference::bare(self.name.as_str()));
        let _ = self.dataflows.remove(&self.name);
        self.plans.invalidate();
    }
}

/// "a table", "an index".
fn with_article(noun: &str) -> String {
    match noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        true => format!("an {noun}"),
        false => format!("a {noun}"),
    }
}

/// An idle timeout as written: milliseconds, or a number and a unit
/// (`500 ms`, `30 s`, `1 min`, `2 hours`, as Flink's durations).
fn idle_timeout_ms(text: &str) -> Result<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        EngineError::Invalid(format!(
            "idle_timeout '{text}' (milliseconds, or a number and ms, s, min or h)"
        ))
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        _ => return Err(bad()),
    };
    let ms = n * scale;
    if !(ms.is_finite() && ms > 0.0 && ms < i64::MAX as f64) {
        return Err(bad());
    }
    Ok(ms as i64)
}
