//! Catalog objects brought into the engine: opening it (replay the
//! catalog, restore the checkpoint, register every object, catch up with
//! the log), streams and tables as DataFusion relations over their
//! topics, materialized views installed as dataflows, sinks started.

use datafusion::common::TableReference;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::index_table::IndexTable;
use super::relation::TopicRelation;
use super::{Engine, EngineError, EngineOptions, Result, pg_compat, sink, statement, system};
use crate::catalog::{Catalog, Column, Format, Object};
use crate::dataflow::checkpoint::CheckpointFile;
use crate::dataflow::decode_errors::DecodeErrors;
use crate::dataflow::lower::ViewOptions;
use crate::dataflow::runtime::Dataflows;
use crate::format::key::KeyCodec;
use crate::format::record::Layout;
use crate::log::{Log, LogStore};
use crate::types;

impl Engine {
    /// Open over a log with the default options.
    pub async fn open(log: Arc<Log>) -> Result<Arc<Engine>> {
        Self::open_with(log, EngineOptions::default()).await
    }

    /// Open over eddy's own log, keeping checkpoints in its data directory.
    pub async fn open_with(log: Arc<Log>, options: EngineOptions) -> Result<Arc<Engine>> {
        let dir = log.dir().to_path_buf();
        Self::open_on(log, dir, options).await
    }

    /// Open over any log store, keeping checkpoints in `state_dir`: replay
    /// the catalog, restore what the last checkpoint holds, register every
    /// object and catch up with the log.
    pub async fn open_on(
        log: Arc<dyn LogStore>,
        state_dir: std::path::PathBuf,
        options: EngineOptions,
    ) -> Result<Arc<Engine>> {
        let routed = Arc::new(crate::log::routed::Routed::new(log));
        let log: Arc<dyn LogStore> = Arc::clone(&routed) as Arc<dyn LogStore>;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("eddy", "public");
        // The session time zone is UTC, as eddy's TimeZone setting says:
        // timestamptz literals and casts, now() and timestamptz columns
        // are all UTC instants (without it DataFusion typed `'…'::timestamptz`
        // and now() as timestamps without a time zone).
        config.options_mut().execution.time_zone = Some("+00:00".into());
        let ctx = Arc::new(SessionContext::new_with_config(config));
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &ctx,
            "eddy",
            datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| EngineError::DataFusion(*e))?;
        let catalog = {
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || Catalog::open(log))
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))??
        };
        let roles = {
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || crate::auth::Roles::open(log))
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))??
        };
        let registry = {
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || crate::registry::Registry::open(log))
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))?
                .map_err(|e| EngineError::Invalid(format!("schema registry: {e}")))?
        };
        let errors = Arc::new(DecodeErrors::default());
        let dataflows = Dataflows::new(
            Arc::clone(&log),
            state_dir.clone(),
            Arc::clone(&errors),
            options.clock.clone(),
        );
        pg_compat::install(&ctx, "eddy", &dataflows)?;
        ctx.register_udf(crate::dataflow::temporal::mz_now_udf(options.clock.clone()));
        ctx.register_udf(crate::dataflow::session::session_udf());
        super::jsonb::register(&ctx)?;
        super::to_char::register(&ctx);
        super::functions::register(&ctx);
        ctx.register_udf(super::windows::HopStarts::udf());
        super::intervals::register(&ctx)?;
        let engine = Arc::new(Engine {
            log,
            state_dir,
            ctx,
            catalog: Mutex::new(catalog),
            errors,
            dataflows,
            dml: tokio::sync::Mutex::new(()),
            restored: Mutex::new(Vec::new()),
            tasks: Mutex::new(HashMap::new()),
            limits: options.limits.clone(),
            progress_notice_interval: options
                .progress_notice_interval
                .max(std::time::Duration::from_millis(1)),
            routed,
            cluster_id: options.cluster_id.clone(),
            roles,
            plans: Arc::default(),
            registry: Arc::new(registry),
        });
        if let Some(catalog) = engine.ctx.catalog("eddy") {
            catalog.register_schema(system::SCHEMA, system::schema_provider(&engine)?)?;
        }
        if options.checkpoint_interval.is_some() {
            match CheckpointFile::load(&engine.state_dir, &*engine.log) {
                Ok(Some(file)) => {
                    tracing::info!(
                        epoch = file.epoch,
                        relations = file.entries.len(),
                        "restoring from checkpoint"
                    );
                    engine.dataflows.begin_restore(file)?;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint not used; rebuilding from the log")
                }
            }
        }
        let objects: Vec<Object> = engine.lock()?.objects().cloned().collect();
        for o in &objects {
            if let Object::Connection {
                name,
                broker,
                external: true,
                properties,
                ..
            } = o
            {
                engine.routed.connect(name, broker, properties.clone())?;
            }
        }
        // Streams and tables first; then views and materialized views, in
        // as many rounds as their dependencies on each other need. Nothing
        // ticks until all are in place, so restored relations and those
        // rebuilt from the log start from the same epoch.
        let (sinks, objects): (Vec<Object>, Vec<Object>) = objects
            .into_iter()
            .partition(|o| matches!(o, Object::Sink { .. }));
        let (indexes, objects): (Vec<Object>, Vec<Object>) = objects
            .into_iter()
            .partition(|o| matches!(o, Object::Index { .. }));
        let (base, mut pending): (Vec<Object>, Vec<Object>) = objects
            .into_iter()
            .partition(|o| matches!(o, Object::Stream { .. } | Object::Table { .. }));
        for o in &base {
            engine.register(o)?;
        }
        loop {
            let mut progress = false;
            let mut failed = Vec::new();
            for o in std::mem::take(&mut pending) {
                let r = match &o {
                    Object::MaterializedView {
                        name,
                        query,
                        window,
                        ksql,
                        within,
                        ..
                    } => {
                        let options = ViewOptions {
                            window: *window,
                            lookup_joins: ksql.is_some(),
                            within: *within,
                        };
                        engine.install_view(name, query, false, options).await
                    }
                    Object::View { sql, .. } => match engine.view_definition(sql) {
                        Ok(v) => engine.define_view(v).await,
                        Err(e) => Err(e),
                    },
                    _ => engine
                        .ctx
                        .sql(o.sql())
                        .await
                        .map(|_| ())
                        .map_err(Into::into),
                };
                match r {
                    Ok(()) => progress = true,
                    Err(e) => failed.push((o, e)),
                }
            }
            if failed.is_empty() {
                break;
            }
            if !progress {
                for (o, e) in failed {
                    tracing::warn!(object = o.name(), error = %e, "does not plan after restart");
                }
                break;
            }
            pending = failed.into_iter().map(|(o, _)| o).collect();
        }
        for o in &indexes {
            if let Err(e) = engine.restore_index(o).await {
                tracing::warn!(index = o.name(), error = %e, "index not built again after restart");
            }
        }
        let restored = engine.dataflows.end_restore()?;
        if !restored.is_empty() {
            tracing::info!(relations = %restored.join(", "), "restored from checkpoint");
        }
        if let Ok(mut r) = engine.restored.lock() {
            *r = restored;
        }
        // Catch up with the log, telling how far the views are.
        {
            let catch_up = engine.tick();
            tokio::pin!(catch_up);
            let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tokio::select! {
                    r = &mut catch_up => {
                        r?;
                        break;
                    }
                    _ = every.tick() => {
                        if let Some(report) = &options.catch_up {
                            let behind = engine.dataflows.catching_up();
                            report.0(
                                behind.values().map(|v| v.0).sum(),
                                behind.values().map(|v| v.1).sum(),
                            );
                        }
                    }
                }
            }
        }
        // Sinks last: each catches its topic up with its relation.
        for o in sinks {
            if let Object::Sink {
                name,
                from,
                topic,
                envelope,
                avro,
                key_format,
                ..
            } = &o
                && let Err(e) = engine
                    .start_sink(name, from, topic, envelope.clone(), *avro, *key_format)
                    .await
            {
                tracing::warn!(sink = %name, error = %e, "sink does not start");
            }
        }
        engine.dataflows.start_timer(options.checkpoint_interval);
        Ok(engine)
    }

    /// Plan `query`, lower it into a dataflow and register the view; with
    /// `backfill`, tick until it has caught up. At start (no backfill) it
    /// may take its state from the checkpoint.
    pub(super) async fn install_view(
        &self,
        name: &str,
        query: &str,
        backfill: bool,
        options: ViewOptions,
    ) -> Result<()> {
        // Parsed as PostgreSQL's SQL (the session's own parser would not
        // read jsonb's `?` operators), planned and optimized as `ctx.sql`.
        let parsed = statement::parse_query(query)?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                datafusion::sql::sqlparser::ast::Statement::Query(parsed),
            )))
            .await?;
        // DataFusion would make such a subquery a join that reads a column
        // it does not have; a query runs it as an apply, a view cannot.
        if super::apply::skips_a_level(&plan) {
            return Err(EngineError::Unsupported(
                "a subquery that reads a query two or more levels out in a materialized view"
                    .into(),
            ));
        }
        let plan = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .into_optimized_plan()?;
        if backfill {
            let mut seen = std::collections::HashSet::new();
            for f in plan.schema().fields() {
                if !seen.insert(f.name().as_str()) {
                    return Err(EngineError::DuplicateColumn(f.name().clone()));
                }
            }
        }
        let streams = self.streams()?;
        let state = self.ctx.state();
        let version = if backfill {
            None
        } else {
            self.lock()?.version(name)
        };
        let schema = self
            .dataflows
            .install(name, &plan, &state, &streams, version, options)?;
        self.ctx.register_table(
            TableReference::bare(name),
            Arc::new(IndexTable::new(name, schema, Arc::clone(&self.dataflows))),
        )?;
        self.plans.invalidate();
        if backfill {
            self.backfill(name).await?;
        }
        Ok(())
    }

    /// Tick until view `name` has caught up with its inputs. Past a
    /// second, a NOTICE every two tells the client running the statement
    /// how far it is (psql prints each as it comes).
    async fn backfill(&self, name: &str) -> Result<()> {
        let caught_up = self.tick();
        tokio::pin!(caught_up);
        let every = self.progress_notice_interval;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + every / 2, every);
        loop {
            tokio::select! {
                r = &mut caught_up => {
                    r?;
                    return Ok(());
                }
                _ = every.tick() => {
                    if let Some((read, total)) = self.dataflows.catching_up().get(name) {
                        super::notice(format!(
                            "materialized view \"{name}\" is catching up: {read} of {total} input records read ({}%)",
                            read * 100 / total.max(&1)
                        ));
                    }
                }
            }
        }
    }

    /// The catalog's streams: name → (topic, record layout).
    pub(super) fn streams(&self) -> Result<std::collections::HashMap<String, (String, Layout)>> {
        let mut out = std::collections::HashMap::new();
        for o in self.lock()?.objects() {
            if let Object::Stream {
                name,
                topic,
                columns,
                format,
                avro,
                key_avro,
                key_format,
                ..
            } = o
            {
                out.insert(
                    name.clone(),
                    (
                        topic.clone(),
                        self.stream_layout(columns, *format, *avro, *key_avro, *key_format)?,
                    ),
                );
            }
        }
        Ok(out)
    }

    /// How a table's rows map onto its changelog records: keyed by the
    /// primary key (an upsert changelog) when it has one.
    pub(super) fn table_layout(columns: &[Column], primary_key: &[String]) -> Result<Layout> {
        let schema = Self::schema_of(columns)?;
        if primary_key.is_empty() {
            return Ok(Layout::values_only(schema));
        }
        let key = primary_key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(k))
                    .ok_or_else(|| EngineError::UnknownColumn(k.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Layout::keyed(schema, key))
    }

    /// How a stream's columns map onto its records.
    pub(super) fn layout_of(columns: &[Column], format: Format) -> Result<Layout> {
        Layout::stream(Self::schema_of(columns)?, format).map_err(EngineError::Invalid)
    }

    /// Register the Avro schema a sink of `from` writes its values with
    /// (its relation's columns but the record key's and `rowtime`, in
    /// Debezium's envelope unless keyed) under `{topic}-value`, and with
    /// `keys` the key columns' schema under `{topic}-key`: their ids.
    pub(super) async fn sink_schema(
        &self,
        from: &str,
        topic: &str,
        envelope: &crate::catalog::Envelope,
        keys: bool,
    ) -> Result<crate::catalog::SinkAvro> {
        let schema = self
            .ctx
            .table_provider(TableReference::bare(from))
            .await?
            .schema();
        let record = crate::format::avro::record_name(from);
        let value = match envelope {
            crate::catalog::Envelope::Debezium => {
                let fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                crate::format::avro::debezium_of(
                    &record,
                    crate::format::avro::schema_of(&record, &fields),
                )
            }
            crate::catalog::Envelope::Append { key } | crate::catalog::Envelope::Upsert { key } => {
                let fields: Vec<_> = schema
                    .fields()
                    .iter()
                    .filter(|f| {
                        let record_time = f.name() == "rowtime"
                            && matches!(
                                f.data_type(),
                                datafusion::arrow::datatypes::DataType::Timestamp(..)
                            );
                        !key.contains(f.name()) && !record_time
                    })
                    .map(|f| f.as_ref().clone())
                    .collect();
                crate::format::avro::schema_of(&record, &fields)
            }
        };
        let register = |subject: String, schema: serde_json::Value| {
            let new = crate::registry::NewSchema {
                text: schema.to_string(),
                ..Default::default()
            };
            self.registry.register(&subject, &new).map_err(|e| {
                EngineError::Invalid(format!(
                    "registering the sink's schema under subject '{subject}': {e}"
                ))
            })
        };
        let key = match envelope {
            crate::catalog::Envelope::Append { key } | crate::catalog::Envelope::Upsert { key }
                if keys && !key.is_empty() =>
            {
                let fields: Vec<_> = key
                    .iter()
                    .filter_map(|k| schema.field_with_name(k).ok())
                    .cloned()
                    .collect();
                let schema = crate::format::avro::schema_of(&format!("{record}_key"), &fields);
                Some(register(format!("{topic}-key"), schema)?)
            }
            _ => None,
        };
        Ok(crate::catalog::SinkAvro {
            value: register(format!("{topic}-value"), value)?,
            key,
        })
    }

    /// A stream's layout, an Avro stream's with its codec.
    pub(super) fn stream_layout(
        &self,
        columns: &[Column],
        format: Format,
        avro: Option<crate::catalog::AvroSpec>,
        key_avro: Option<u32>,
        key_format: Option<crate::format::key::KeyFormat>,
    ) -> Result<Layout> {
        let layout = Self::layout_of(columns, format)?;
        let layout = match (avro, format) {
            (Some(spec), Format::JsonSr) => layout.with_json_sr(
                crate::format::json_sr::JsonSrCodec::new(Arc::clone(&self.registry), spec.id),
            ),
            (Some(spec), _) => layout.with_avro(crate::format::avro::AvroCodec::new(
                Arc::clone(&self.registry),
                spec.id,
                spec.resolve,
            )),
            (None, _) => layout,
        };
        let key_type = layout
            .schema()
            .fields()
            .iter()
            .find(|f| crate::format::record::Meta::of_name_or_key(f))
            .map(|f| f.data_type().clone())
            .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8);
        Ok(match key_avro {
            Some(id) => layout.with_key_codec(KeyCodec::Avro(crate::format::avro::AvroCodec::new(
                Arc::clone(&self.registry),
                id,
                false,
            ))),
            None => layout.with_key_codec(KeyCodec::of(key_format, &key_type)),
        })
    }

    pub(super) fn schema_of(columns: &[Column]) -> Result<SchemaRef> {
        let mut fields = Vec::with_capacity(columns.len());
        for c in columns {
            let parsed = statement::parse_type(&c.sql_type)?;
            let field = types::field(&c.name, &parsed)
                .map_err(|e| EngineError::Unsupported(format!("type {}", e.0)))?;
            let field = match c.watermark {
                Some(delay) => crate::dataflow::source::event_time_field(field, delay),
                None => field,
            };
            let field = match c.idle_timeout_ms {
                Some(ms) => crate::dataflow::source::idle_timeout_field(field, ms),
                None => field,
            };
            let field = match &c.time_from {
                Some(from) => crate::format::record::time_from_field(field, from),
                None => field,
            };
            fields.push(match c.key {
                true => crate::format::record::key_field(field),
                false => field,
            });
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    pub(super) fn register(&self, o: &Object) -> Result<()> {
        match o {
            Object::Stream {
                name,
                topic,
                columns,
                format,
                avro,
                key_avro,
                key_format,
                sql,
            } => {
                let rel = TopicRelation::new(
                    name,
                    topic,
                    self.stream_layout(columns, *format, *avro, *key_avro, *key_format)?,
                    Arc::clone(&self.log),
                    Arc::clone(&self.errors),
                    Arc::clone(&self.dataflows),
                    false,
                );
                self.ctx
                    .register_table(TableReference::bare(name.as_str()), Arc::new(rel))?;
                self.plans.invalidate();
                self.start_generator(name, topic, sql);
            }
            Object::Table {
                name,
                topic,
                columns,
                primary_key,
                ..
            } => {
                let layout = Self::table_layout(columns, primary_key)?;
                let version = self.lock()?.version(name);
                self.dataflows
                    .add_table(name, topic, layout.clone(), version)?;
                let rel = TopicRelation::new(
                    name,
                    topic,
                    layout,
                    Arc::clone(&self.log),
                    Arc::clone(&self.errors),
                    Arc::clone(&self.dataflows),
                    true,
                );
                self.ctx
                    .register_table(TableReference::bare(name.as_str()), Arc::new(rel))?;
                self.plans.invalidate();
            }
            Object::View { .. }
            | Object::MaterializedView { .. }
            | Object::Sink { .. }
            | Object::Index { .. }
            | Object::Connection { .. } => {}
        }
        Ok(())
    }

    /// Start the load generator of stream `name` if its CREATE SOURCE
    /// made one (`generator.rs`): at its creation and at every start.
    fn start_generator(&self, name: &str, topic: &str, sql: &str) {
        if !sql.to_ascii_lowercase().contains("generator") {
            return;
        }
        let counter = match self.parse(sql).ok().and_then(|mut s| s.pop()) {
            Some(statement::Statement::Ddl(statement::Ddl::CreateStream { options, .. })) => {
                super::generator::Generator::from_options(&options)
            }
            _ => None,
        };
        let Some(generator) = counter else {
            return;
        };
        let task = tokio::spawn(super::generator::run(
            topic.to_string(),
            generator,
            Arc::clone(&self.log),
        ));
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some(old) = tasks.insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
    }

    /// Start sink `name` (its task runs until dropped; see `sink.rs`).
    pub(super) async fn start_sink(
        &self,
        name: &str,
        from: &str,
        topic: &str,
        envelope: crate::catalog::Envelope,
        avro: Option<crate::catalog::SinkAvro>,
        key_format: Option<crate::format::key::KeyFormat>,
    ) -> Result<()> {
        let schema = self
            .ctx
            .table_provider(TableReference::bare(from))
            .await?
            .schema();
        let envelope = sink::Envelope::new(envelope, &schema, key_format)?;
        let codec = |id| crate::format::avro::AvroCodec::new(Arc::clone(&self.registry), id, false);
        let avro = avro.map(|a| sink::Avro {
            value: codec(a.value),
            key: a.key.map(codec),
        });
        // Subscribed and caught up before CREATE SINK is answered: the
        // topic holds the relation as of its creation, and every change
        // after is one.
        let start = self.dataflows.subscribe(from)?;
        let n = sink::catch_up(topic, &schema, &envelope, avro.as_ref(), &*self.log, &start)?;
        tracing::info!(sink = name, rows = n, "sink caught up");
        let task = tokio::spawn(sink::run(
            name.to_string(),
            from.to_string(),
            topic.to_string(),
            schema,
            envelope,
            avro,
            Arc::clone(&self.dataflows),
            Arc::clone(&self.log),
            start,
        ));
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some(old) = tasks.insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }
}
