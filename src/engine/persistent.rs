//! ksqlDB's persistent queries: `CREATE STREAM s [WITH (…)] AS SELECT …`
//! and `CREATE TABLE t [WITH (…)] AS SELECT … GROUP BY …`. Each is a
//! materialized view of its query (queried, indexed and subscribed to as
//! any) and a sink writing its rows into a topic as ksqlDB writes them
//! (`sink.rs`): a stream's rows appended, a table's an upsert changelog
//! keyed by its GROUP BY columns. The topic is named as ksqlDB names it
//! (the relation's name upper-cased unless quoted) unless `KAFKA_TOPIC`
//! says otherwise. `DROP STREAM|TABLE` drops both.
//!
//! `CREATE TABLE … AS SELECT` is PostgreSQL's one-time copy unless it
//! reads a stream or carries ksqlDB's options (`KAFKA_TOPIC`,
//! `VALUE_FORMAT`, …): copying an unbounded stream once is never what is
//! meant.

use datafusion::common::TableReference;
use datafusion::sql::sqlparser::ast::{
    CreateTable, CreateView, Expr, GroupByExpr, ObjectName, Query, SetExpr,
    Statement as SqlStatement, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::statement::{self, Persistent};
use super::{Engine, EngineError, Output, Result, names};
use crate::catalog::{Envelope, Ksql, Object};

/// WITH options that mark a CREATE TABLE … AS as ksqlDB's.
const KSQL_OPTIONS: &[&str] = &[
    "kafka_topic",
    "value_format",
    "key_format",
    "format",
    "partitions",
    "replicas",
    "timestamp",
];

impl Engine {
    /// Whether `CREATE TABLE … AS` is ksqlDB's persistent query rather
    /// than PostgreSQL's copy; as one when it is.
    pub(super) fn ksql_table_as(&self, ct: &CreateTable, text: &str) -> Result<Option<Persistent>> {
        let Some(query) = &ct.query else {
            return Ok(None);
        };
        let p = statement::persistent_table(ct, text)?;
        let marked = p.options.keys().any(|k| KSQL_OPTIONS.contains(&k.as_str()));
        if !marked && !self.reads_stream(query)? {
            return Ok(None);
        }
        Ok(Some(p))
    }

    fn reads_stream(&self, query: &Query) -> Result<bool> {
        let catalog = self.lock()?;
        Ok(visit_relations(query, |r: &ObjectName| {
            match catalog.get(&names::object(r)) {
                Some(Object::Stream { .. }) => std::ops::ControlFlow::Break(()),
                _ => std::ops::ControlFlow::Continue(()),
            }
        })
        .is_break())
    }

    /// Run a persistent query: its view, its topic, its sink.
    pub(super) async fn create_persistent(&self, mut p: Persistent) -> Result<Output> {
        if p.insert {
            return self.insert_query(p).await;
        }
        if p.table {
            drop_null_keys(&mut p.query);
        }
        let tag = match p.table {
            true => "CREATE TABLE",
            false => "CREATE STREAM",
        };
        if p.if_not_exists && self.lock()?.get(&p.name).is_some() {
            return Ok(Output::Command(tag.into(), None));
        }
        self.ensure_free(&p.name)?;
        let mut options = p.options;
        let mut avro = false;
        if let Some(f) = options
            .get("value_format")
            .or_else(|| options.get("format"))
        {
            match f.to_ascii_lowercase().as_str() {
                "json" => {}
                "avro" => avro = true,
                _ => {
                    return Err(EngineError::Unsupported(format!(
                        "VALUE_FORMAT '{f}' for a persistent query's topic (JSON or AVRO is written)"
                    )));
                }
            }
        }
        let key_format = options
            .get("key_format")
            .or_else(|| options.get("format"))
            .filter(|f| !f.eq_ignore_ascii_case("avro"))
            .cloned();
        let topic = options
            .remove("kafka_topic")
            .or_else(|| options.remove("topic"))
            .unwrap_or(p.topic);
        let sink = format!("{}_{}", if p.table { "ctas" } else { "csas" }, p.name);
        self.ensure_free(&sink)?;
        let key_names = match &p.partition_by {
            Some(column) => vec![column.clone()],
            None => self.persistent_key(&p.query, p.table)?,
        };
        let v = materialized_view(&p.name, &p.query)?;
        let ksql = Ksql {
            table: p.table,
            sink: sink.clone(),
            topic: topic.clone(),
            insert: false,
        };
        self.create_materialized_view(v, p.sql.clone(), Some(ksql), p.window, p.within)
            .await?;
        let started = async {
            let schema = self
                .ctx
                .table_provider(TableReference::bare(p.name.as_str()))
                .await?
                .schema();
            let key: Vec<String> = key_names
                .into_iter()
                .filter(|k| schema.index_of(k).is_ok())
                .collect();
            // KEY_FORMAT as said, else the streams' it reads (as ksqlDB
            // inherits it) where their key column can be held in it.
            let one_key = match key.as_slice() {
                [k] => schema
                    .field_with_name(k)
                    .ok()
                    .map(|f| (k.clone(), f.data_type().clone())),
                _ => None,
            };
            let key_format = match &key_format {
                Some(f) => {
                    let f = crate::format::key::KeyFormat::parse(f)
                        .map_err(EngineError::Unsupported)?;
                    if let (Some(kf), Some((k, t))) = (f, &one_key) {
                        kf.check(k, t).map_err(EngineError::Unsupported)?;
                    }
                    f
                }
                None => self.inherited_key_format(&p.query)?.filter(|kf| {
                    one_key
                        .as_ref()
                        .is_some_and(|(k, t)| kf.check(k, t).is_ok())
                }),
            };
            let envelope = match (p.table, key.is_empty()) {
                (true, false) => Envelope::Upsert { key },
                _ => Envelope::Append { key },
            };
            if !options.contains_key("partitions") {
                options.insert("partitions".into(), "1".into());
            }
            self.ensure_topic(&topic, &options)?;
            let avro = match avro {
                true => Some(self.sink_schema(&p.name, &topic, &envelope, false).await?),
                false => None,
            };
            self.lock()?.insert(Object::Sink {
                name: sink.clone(),
                from: p.name.clone(),
                topic: topic.clone(),
                sql: p.sql.clone(),
                envelope: envelope.clone(),
                avro,
                key_format,
            })?;
            self.start_sink(&sink, &p.name, &topic, envelope, avro, key_format)
                .await
        };
        if let Err(e) = started.await {
            let view = self.lock()?.get(&p.name).cloned();
            if let Some(o) = view {
                let _ = self.drop_object(o, false);
            }
            return Err(e);
        }
        Ok(Output::Command(tag.into(), None))
    }

    /// ksqlDB's `INSERT INTO s SELECT … EMIT CHANGES`: the query kept as a
    /// view (`insertquery_<s>_rows`), its rows appended to stream `s`'s
    /// topic by a sink (`insertquery_<s>`, the query's id), keyed by `s`'s
    /// KEY column. The SELECT names `s`'s columns, no more, no fewer.
    async fn insert_query(&self, p: Persistent) -> Result<Output> {
        const TAG: &str = "INSERT 0 0";
        let target = self.lock()?.get(&p.name).cloned();
        let (topic, columns, format, avro, key_format) = match target {
            Some(Object::Stream {
                topic,
                columns,
                format,
                avro,
                key_format,
                ..
            }) => (topic, columns, format, avro, key_format),
            Some(o) => {
                return Err(EngineError::WrongObject(format!(
                    "INSERT INTO … SELECT … EMIT CHANGES writes into a stream; \"{}\" is a {}",
                    p.name,
                    o.kind()
                )));
            }
            None => {
                return Err(EngineError::UnknownObject {
                    kind: "stream",
                    name: p.name,
                });
            }
        };
        let avro = match (format, avro) {
            (crate::catalog::Format::Json, _) => None,
            (crate::catalog::Format::Avro, Some(spec)) => Some(crate::catalog::SinkAvro {
                value: spec.id,
                key: None,
            }),
            _ => {
                return Err(EngineError::Unsupported(format!(
                    "INSERT INTO … SELECT into a stream of format {format:?} (JSON or Avro is written)"
                )));
            }
        };
        let sink = (1..)
            .map(|n| match n {
                1 => format!("insertquery_{}", p.name),
                n => format!("insertquery_{}_{n}", p.name),
            })
            .find(|s| {
                self.lock()
                    .map(|c| c.get(s).is_none() && c.get(&format!("{s}_rows")).is_none())
                    .unwrap_or(false)
            })
            .unwrap_or_default();
        let view_name = format!("{sink}_rows");
        let v = materialized_view(&view_name, &p.query)?;
        let ksql = Ksql {
            table: false,
            sink: sink.clone(),
            topic: topic.clone(),
            insert: true,
        };
        self.create_materialized_view(v, p.sql.clone(), Some(ksql), None, None)
            .await?;
        let started = async {
            let schema = self
                .ctx
                .table_provider(TableReference::bare(view_name.as_str()))
                .await?
                .schema();
            let wanted: Vec<&crate::catalog::Column> = columns
                .iter()
                .filter(|c| c.name != "rowtime" && c.name != "_timestamp")
                .collect();
            for c in &wanted {
                if schema.index_of(&c.name).is_err() {
                    return Err(EngineError::Invalid(format!(
                        "INSERT INTO {}: the SELECT has no column {} (it names the stream's columns)",
                        p.name, c.name
                    )));
                }
            }
            for f in schema.fields() {
                let known = f.name() == "rowtime" || wanted.iter().any(|c| &c.name == f.name());
                if !known {
                    return Err(EngineError::Invalid(format!(
                        "INSERT INTO {}: column {} of the SELECT is not a column of the stream",
                        p.name,
                        f.name()
                    )));
                }
            }
            let key = wanted
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.clone())
                .collect();
            let envelope = Envelope::Append { key };
            self.lock()?.insert(Object::Sink {
                name: sink.clone(),
                from: view_name.clone(),
                topic: topic.clone(),
                sql: p.sql.clone(),
                envelope: envelope.clone(),
                avro,
                key_format,
            })?;
            self.start_sink(&sink, &view_name, &topic, envelope, avro, key_format)
                .await
        };
        if let Err(e) = started.await {
            let view = self.lock()?.get(&view_name).cloned();
            if let Some(o) = view {
                let _ = self.drop_object(o, false);
            }
            return Err(e);
        }
        Ok(Output::Command(TAG.into(), None))
    }

    /// The columns a persistent query's records are keyed by: a table's
    /// GROUP BY columns; a stream's columns named as a KEY column of a
    /// stream it reads (the key passed through, as ksqlDB keeps it).
    fn persistent_key(&self, query: &Query, table: bool) -> Result<Vec<String>> {
        if table {
            let SetExpr::Select(select) = query.body.as_ref() else {
                return Ok(vec![]);
            };
            let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
                return Ok(vec![]);
            };
            // A windowed table (ksql_windows.rs) is keyed by its window too.
            return Ok(exprs
                .iter()
                .filter_map(|e| match e {
                    Expr::Identifier(i) => Some(names::ident(i)),
                    Expr::CompoundIdentifier(parts) => parts.last().map(names::ident),
                    _ => None,
                })
                .chain(["windowstart".to_string(), "windowend".to_string()])
                .collect());
        }
        let catalog = self.lock()?;
        let mut keys = Vec::new();
        let _ = visit_relations(query, |r: &ObjectName| {
            if let Some(Object::Stream { columns, .. }) = catalog.get(&names::object(r)) {
                keys.extend(columns.iter().filter(|c| c.key).map(|c| c.name.clone()));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        Ok(keys)
    }

    /// The key format of the streams `query` reads, when they agree.
    fn inherited_key_format(&self, query: &Query) -> Result<Option<crate::format::key::KeyFormat>> {
        let catalog = self.lock()?;
        let mut formats = Vec::new();
        let _ = visit_relations(query, |r: &ObjectName| {
            if let Some(Object::Stream { key_format, .. }) = catalog.get(&names::object(r)) {
                formats.push(*key_format);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        formats.dedup();
        Ok(match formats.as_slice() {
            [f] => *f,
            _ => None,
        })
    }

    /// The topic relation `name` reads or (a persistent query) writes.
    pub(super) fn topic_of(&self, name: &str) -> Result<Option<String>> {
        let catalog = self.lock()?;
        Ok(match catalog.get(name) {
            Some(Object::Stream { topic, .. } | Object::Table { topic, .. }) => Some(topic.clone()),
            Some(Object::MaterializedView { ksql: Some(k), .. }) => Some(k.topic.clone()),
            _ => None,
        })
    }

    /// ksqlDB's `TERMINATE q` (`*`: every persistent query): the query's
    /// sink dropped; its relation stays, read as it is.
    pub(super) fn terminate(&self, names: Vec<String>) -> Result<Output> {
        let queries: Vec<Object> = self
            .lock()?
            .objects()
            .filter(|o| match o {
                Object::Sink {
                    name,
                    envelope: Envelope::Append { .. } | Envelope::Upsert { .. },
                    ..
                } => names.iter().any(|n| n == "*" || n == name),
                _ => false,
            })
            .cloned()
            .collect();
        if queries.is_empty() && !names.iter().any(|n| n == "*") {
            return Err(EngineError::UnknownObject {
                kind: "query",
                name: names.join(", ").to_ascii_uppercase(),
            });
        }
        for q in queries {
            let name = q.name().to_string();
            self.drop_object(q, false)?;
            // An INSERT INTO … SELECT query's view goes with it.
            let rows = self.lock()?.objects().find(|o| {
                matches!(o, Object::MaterializedView { ksql: Some(k), .. } if k.insert && k.sink == name)
            }).cloned();
            if let Some(v) = rows {
                self.drop_object(v, false)?;
            }
        }
        Ok(Output::Command("TERMINATE".into(), None))
    }

    /// ksqlDB's ROWTIME is read by name, never by `*` (`SELECT * FROM s`
    /// is its key and value columns): an unqualified `*` over one stream
    /// with a `rowtime` column is spelled out without it. (Spelled out,
    /// not `* EXCLUDE`, which PostgreSQL's dialect does not read back from
    /// a view's kept text.) Over joins `*` still includes it.
    pub(super) fn hide_rowtime(&self, stmt: &mut SqlStatement) {
        use datafusion::sql::sqlparser::ast::{Ident, SelectItem, TableFactor};
        let Ok(catalog) = self.lock() else {
            return;
        };
        let _ = names::visit_selects_mut(stmt, |select| {
            let [from] = select.from.as_slice() else {
                return;
            };
            let TableFactor::Table {
                name, args: None, ..
            } = &from.relation
            else {
                return;
            };
            if !from.joins.is_empty() {
                return;
            }
            let Some(Object::Stream { columns, .. }) = catalog.get(&names::object(name)) else {
                return;
            };
            if !columns.iter().any(|c| c.name == "rowtime") {
                return;
            }
            let spelled: Vec<SelectItem> = columns
                .iter()
                .filter(|c| c.name != "rowtime")
                .map(|c| SelectItem::UnnamedExpr(Expr::Identifier(Ident::with_quote('"', &c.name))))
                .collect();
            let mut items = Vec::with_capacity(select.projection.len() + spelled.len());
            for item in select.projection.drain(..) {
                match item {
                    SelectItem::Wildcard(o)
                        if o.opt_exclude.is_none()
                            && o.opt_except.is_none()
                            && o.opt_ilike.is_none()
                            && o.opt_replace.is_none()
                            && o.opt_rename.is_none() =>
                    {
                        items.extend(spelled.iter().cloned())
                    }
                    other => items.push(other),
                }
            }
            select.projection = items;
        });
    }

    /// DROP STREAM|TABLE of a persistent query's relation: its sink (the
    /// query), then the view.
    pub(super) fn drop_persistent(&self, o: Object, ksql: &Ksql, cascade: bool) -> Result<()> {
        // (The catalog lock released before dropping.)
        let sink = self.lock()?.get(&ksql.sink).cloned();
        if let Some(sink) = sink {
            self.drop_object(sink, false)?;
        }
        self.drop_object(o, cascade)
    }
}

/// ksqlDB's table aggregates drop a row whose GROUP BY key is NULL (SQL
/// groups such rows under a NULL key; a record key cannot be NULL): the
/// query's WHERE gains `key IS NOT NULL` for each GROUP BY expression
/// (the window's bounds are never NULL).
fn drop_null_keys(q: &mut Query) {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return;
    };
    let window = |e: &Expr| {
        matches!(e, Expr::Identifier(i) if i.quote_style.is_none()
            && matches!(i.value.to_ascii_lowercase().as_str(), "window_start" | "window_end"))
    };
    let mut conjuncts: Vec<Expr> = exprs
        .iter()
        .filter(|e| !window(e))
        .map(|e| Expr::IsNotNull(Box::new(e.clone())))
        .collect();
    if conjuncts.is_empty() {
        return;
    }
    if let Some(w) = select.selection.take() {
        conjuncts.insert(0, Expr::Nested(Box::new(w)));
    }
    select.selection = conjuncts.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
}

/// `CREATE MATERIALIZED VIEW name AS query`, as parsed: a persistent
/// query's view.
fn materialized_view(name: &str, query: &Query) -> Result<CreateView> {
    let view = format!(
        "CREATE MATERIALIZED VIEW {} AS {query}",
        names::quoted(name)
    );
    match Parser::parse_sql(&PostgreSqlDialect {}, &view)
        .map_err(|e| EngineError::Syntax(e.to_string()))?
        .pop()
    {
        Some(SqlStatement::CreateView(v)) => Ok(v),
        _ => Err(EngineError::Invalid(format!("not a view: {view}"))),
    }
}
