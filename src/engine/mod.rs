//! The database: owns the log, the catalog and the DataFusion session in
//! which streams, tables and views are registered; executes the statements
//! that are eddy's own (topics, streams, topic-backed tables, persisted
//! views, COPY … TO STDOUT, SHOW); every other statement is planned and run
//! by DataFusion over the same session.

mod apply;
mod copy;
mod copy_binary;
mod dml;
mod index_table;
pub mod limits;
mod names;
pub mod pg_compat;
mod query;
pub mod relation;
mod sink;
pub mod statement;
pub mod system;
pub mod txn;
mod using;
mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    ColumnDef, ColumnOption, CopySource, CopyTarget, CreateTableOptions, ObjectType, Reset,
    ResetStatement, Statement as SqlStatement, TableConstraint,
};

use crate::catalog::{Catalog, Column, Format, Object};
use crate::dataflow::DataflowError;
use crate::dataflow::checkpoint::CheckpointFile;
use crate::dataflow::decode_errors::DecodeErrors;
use crate::dataflow::runtime::{self as views, Dataflows};
use crate::format::record::Layout;
use crate::log::{Log, LogError, LogStore};
use crate::types;
pub use copy::{CopyIn, CopyInOptions};
use index_table::IndexTable;
pub use limits::Limits;
pub use names::{column_names, renamed as renamed_schema};
pub use query::is_user_query;
use relation::TopicRelation;
pub use statement::{DropKind, Statement, parse};

/// A failure with the SQLSTATE a PostgreSQL client expects.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{kind} \"{name}\" does not exist")]
    UnknownObject { kind: &'static str, name: String },
    #[error("{kind} \"{name}\" already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Dataflow(#[from] DataflowError),
    #[error(
        "cannot drop {kind} \"{name}\" because other objects depend on it: {dependents} (use DROP … CASCADE)"
    )]
    Dependents {
        kind: &'static str,
        name: String,
        dependents: String,
    },
    #[error("{0}")]
    WrongObject(String),
    #[error("column \"{0}\" does not exist")]
    UnknownColumn(String),
    /// COPY data that is not in the format the statement names.
    #[error("{0}")]
    CopyData(String),
    /// A COPY value that does not fit its column.
    #[error("{0}")]
    CopyValue(String),
    /// A binary COPY value that is not in its column type's binary format.
    #[error("{0}")]
    CopyBinary(String),
    /// A view whose query names two output columns alike (PostgreSQL
    /// allows it in a SELECT, not in a relation).
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// A request over one of the server's [`Limits`].
    #[error("{message}")]
    Limit { code: &'static str, message: String },
}

impl EngineError {
    /// The SQLSTATE code for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            EngineError::Syntax(_) => "42601",
            EngineError::UnknownObject { .. } => "42P01",
            EngineError::Exists { .. } => "42P07",
            EngineError::Unsupported(_) => "0A000",
            EngineError::Invalid(_) => "22023",
            EngineError::Log(LogError::UnknownTopic(_)) => "42P01",
            EngineError::Log(LogError::TopicExists(_)) => "42P07",
            EngineError::Log(
                LogError::InvalidConfig { .. }
                | LogError::UnknownConfig(_)
                | LogError::InvalidTopicName { .. }
                | LogError::InvalidPartitions(_),
            ) => "22023",
            EngineError::Log(_) => "58030",
            EngineError::DataFusion(e) => datafusion_sqlstate(e),
            EngineError::Dataflow(DataflowError::Unsupported(_)) => "0A000",
            EngineError::Dataflow(DataflowError::DataFusion(e)) => datafusion_sqlstate(e),
            EngineError::Dataflow(DataflowError::Row(e)) => e.code,
            EngineError::Dataflow(_) => "XX000",
            EngineError::Dependents { .. } => "2BP01",
            EngineError::WrongObject(_) => "42809",
            EngineError::UnknownColumn(_) => "42703",
            EngineError::CopyData(_) => "22P04",
            EngineError::CopyValue(_) => "22P02",
            EngineError::CopyBinary(_) => "22P03",
            EngineError::DuplicateColumn(_) => "42701",
            EngineError::Limit { code, .. } => code,
        }
    }
}

pub use crate::sqlstate::datafusion_sqlstate;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

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
/// `name` (as the catalog writes names: unquoted ones as typed).
fn view_reads(sql: &str, name: &str) -> bool {
    let Ok(statements) = parse(sql) else {
        return false;
    };
    statements.iter().any(|s| match s {
        Statement::Sql(s, _) => datafusion::sql::sqlparser::ast::visit_relations(s.as_ref(), |r| {
            let full = r.to_string();
            let last = r.0.last().map(|p| p.to_string()).unwrap_or_default();
            if full.eq_ignore_ascii_case(name) || last.eq_ignore_ascii_case(name) {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .is_break(),
        _ => false,
    })
}

/// The changelog topic of table `name` (as written, quotes and all):
/// `__table_<name>` with what a topic name cannot hold (quotes, spaces)
/// made `_`.
fn table_topic(name: &str) -> String {
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

/// What a statement produced.
pub enum Output {
    /// A command tag (`CREATE STREAM`, `DROP TABLE`, …) with an optional row
    /// count.
    Command(String, Option<usize>),
    /// `COPY … TO STDOUT`: rows to send in COPY format.
    CopyOut {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        format: CopyFormat,
    },
    /// `COPY … FROM STDIN`: ask the client for the data, then load it with
    /// `Engine::copy_in`.
    CopyIn(CopyIn),
    /// A query planned from eddy's parse (`query.rs`), to run and send,
    /// with PostgreSQL's names for its columns (which may repeat).
    Rows {
        df: datafusion::dataframe::DataFrame,
        names: Vec<String>,
    },
    /// Not one of eddy's statements: run it through datafusion-postgres
    /// (introspection queries, SET/SHOW, transactions, cursors).
    PassThrough(String),
    /// SUBSCRIBE: stream `snapshot` (when asked) then the relation's
    /// changes, as rows of `mz_timestamp`, `mz_diff` and `schema`'s
    /// columns.
    Subscribe {
        name: String,
        schema: SchemaRef,
        snapshot: bool,
        start: views::Subscription,
    },
    /// A statement about the connection's own state (prepared statements,
    /// portals), which only the protocol layer holds.
    Session(SessionCommand),
}

/// Statements drivers send about their connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `DEALLOCATE [PREPARE] name` (None: `ALL`).
    Deallocate(Option<String>),
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`: the word, upper-case.
    Discard(String),
    /// A statement about state eddy's sessions do not have (`UNLISTEN`:
    /// nothing listens; `RESET ALL`): answered with its tag, as
    /// PostgreSQL answers it when there is nothing to undo.
    Nothing(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv { header: bool },
    Binary,
}

pub struct Engine {
    /// The log, only through its trait: another store (an external Kafka
    /// cluster) is another implementation, not an edit here.
    log: Arc<dyn LogStore>,
    /// Where the engine keeps its own state (checkpoints).
    state_dir: std::path::PathBuf,
    ctx: Arc<SessionContext>,
    catalog: Mutex<Catalog>,
    errors: Arc<DecodeErrors>,
    dataflows: Arc<Dataflows>,
    /// One UPDATE/DELETE at a time (each reads the table, then writes).
    dml: tokio::sync::Mutex<()>,
    /// Tables and views whose state came from the checkpoint at start.
    restored: Mutex<Vec<String>>,
    /// Running sinks by name.
    sinks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// What one request may ask (`eddy_catalog.limits`).
    limits: Limits,
}

/// Partitions of topics created for streams and tables when unspecified.
const DEFAULT_PARTITIONS: i32 = 1;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How often the state of tables and views is checkpointed (None:
    /// never; restarts rebuild everything from the log).
    pub checkpoint_interval: Option<std::time::Duration>,
    /// The time `mz_now()` and temporal filters read (the wall clock but
    /// in tests).
    pub clock: crate::dataflow::temporal::Clock,
    /// What one request may ask of the server.
    pub limits: Limits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            checkpoint_interval: Some(std::time::Duration::from_secs(30)),
            clock: crate::dataflow::temporal::Clock::wall(),
            limits: Limits::default(),
        }
    }
}

impl Engine {
    /// What one request may ask of this server.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Split and parse a query string within this server's [`Limits`].
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        statement::parse_with(sql, &self.limits)
    }

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
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("eddy", "public");
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
        let errors = Arc::new(DecodeErrors::default());
        let dataflows = Dataflows::new(
            Arc::clone(&log),
            state_dir.clone(),
            Arc::clone(&errors),
            options.clock.clone(),
        );
        pg_compat::install(&ctx, "eddy", &dataflows)?;
        ctx.register_udf(crate::dataflow::temporal::mz_now_udf(options.clock.clone()));
        let engine = Arc::new(Engine {
            log,
            state_dir,
            ctx,
            catalog: Mutex::new(catalog),
            errors,
            dataflows,
            dml: tokio::sync::Mutex::new(()),
            restored: Mutex::new(Vec::new()),
            sinks: Mutex::new(HashMap::new()),
            limits: options.limits.clone(),
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
        // Streams and tables first; then views and materialized views, in
        // as many rounds as their dependencies on each other need. Nothing
        // ticks until all are in place, so restored relations and those
        // rebuilt from the log start from the same epoch.
        let (sinks, objects): (Vec<Object>, Vec<Object>) = objects
            .into_iter()
            .partition(|o| matches!(o, Object::Sink { .. }));
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
                    Object::MaterializedView { name, query, .. } => {
                        engine.install_view(name, query, false).await
                    }
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
        let restored = engine.dataflows.end_restore()?;
        if !restored.is_empty() {
            tracing::info!(relations = %restored.join(", "), "restored from checkpoint");
        }
        if let Ok(mut r) = engine.restored.lock() {
            *r = restored;
        }
        engine.tick().await?;
        // Sinks last: each catches its topic up with its relation.
        for o in sinks {
            if let Object::Sink {
                name, from, topic, ..
            } = &o
                && let Err(e) = engine.start_sink(name, from, topic).await
            {
                tracing::warn!(sink = %name, error = %e, "sink does not start");
            }
        }
        engine.dataflows.start_timer(options.checkpoint_interval);
        Ok(engine)
    }

    /// Run ticks until every table and view has caught up with the log.
    pub async fn tick(&self) -> Result<u64> {
        let d = Arc::clone(&self.dataflows);
        Ok(tokio::task::spawn_blocking(move || d.tick())
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??)
    }

    /// Plan `query`, lower it into a dataflow and register the view; with
    /// `backfill`, tick until it has caught up. At start (no backfill) it
    /// may take its state from the checkpoint.
    async fn install_view(&self, name: &str, query: &str, backfill: bool) -> Result<()> {
        let plan = self.ctx.sql(query).await?.into_optimized_plan()?;
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
            .install(name, &plan, &state, &streams, version)?;
        self.ctx.register_table(
            name,
            Arc::new(IndexTable::new(name, schema, Arc::clone(&self.dataflows))),
        )?;
        if backfill {
            self.tick().await?;
        }
        Ok(())
    }

    /// The tables and views that took their state from the checkpoint at
    /// start (the rest were rebuilt from the log).
    pub fn restored(&self) -> Vec<String> {
        self.restored.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Write a checkpoint now (also done on a timer and at shutdown).
    pub fn checkpoint(&self) -> Result<Option<views::CheckpointInfo>> {
        Ok(self.dataflows.checkpoint()?)
    }

    /// The catalog's streams: name → (topic, record layout).
    fn streams(&self) -> Result<std::collections::HashMap<String, (String, Layout)>> {
        let mut out = std::collections::HashMap::new();
        for o in self.lock()?.objects() {
            if let Object::Stream {
                name,
                topic,
                columns,
                format,
                ..
            } = o
            {
                out.insert(
                    name.clone(),
                    (topic.clone(), Self::layout_of(columns, *format)?),
                );
            }
        }
        Ok(out)
    }

    /// How a table's rows map onto its changelog records: keyed by the
    /// primary key (an upsert changelog) when it has one.
    fn table_layout(columns: &[Column], primary_key: &[String]) -> Result<Layout> {
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
    fn layout_of(columns: &[Column], format: Format) -> Result<Layout> {
        Layout::stream(Self::schema_of(columns)?, format).map_err(EngineError::Invalid)
    }

    pub fn dataflows(&self) -> &Arc<Dataflows> {
        &self.dataflows
    }

    pub fn session(&self) -> Arc<SessionContext> {
        Arc::clone(&self.ctx)
    }

    pub fn log(&self) -> &Arc<dyn LogStore> {
        &self.log
    }

    pub fn decode_errors(&self) -> &Arc<DecodeErrors> {
        &self.errors
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Catalog>> {
        self.catalog
            .lock()
            .map_err(|_| EngineError::Invalid("catalog lock poisoned".into()))
    }

    fn schema_of(columns: &[Column]) -> Result<SchemaRef> {
        let mut fields = Vec::with_capacity(columns.len());
        for c in columns {
            let parsed = statement::parse_type(&c.sql_type)?;
            let t = types::to_arrow(&parsed)
                .map_err(|e| EngineError::Unsupported(format!("type {}", e.0)))?;
            fields.push(Field::new(&c.name, t, true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    fn register(&self, o: &Object) -> Result<()> {
        match o {
            Object::Stream {
                name,
                topic,
                columns,
                format,
                ..
            } => {
                let rel = TopicRelation::new(
                    name,
                    topic,
                    Self::layout_of(columns, *format)?,
                    Arc::clone(&self.log),
                    Arc::clone(&self.errors),
                    Arc::clone(&self.dataflows),
                    false,
                );
                self.ctx.register_table(name.as_str(), Arc::new(rel))?;
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
                self.ctx.register_table(name.as_str(), Arc::new(rel))?;
            }
            Object::View { .. } | Object::MaterializedView { .. } | Object::Sink { .. } => {}
        }
        Ok(())
    }

    /// That `name` is a table or materialized view (what `reader`, a sink
    /// or SUBSCRIBE, can follow): else 42P01, or 42809 for another kind.
    fn ensure_maintained(&self, name: &str, reader: &str) -> Result<()> {
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

    /// Start sink `name` (its task runs until dropped; see `sink.rs`).
    async fn start_sink(&self, name: &str, from: &str, topic: &str) -> Result<()> {
        let schema = self.ctx.table_provider(from).await?.schema();
        // Subscribed before CREATE SINK is answered: the sink starts from
        // the relation as of its creation, and every change after is one.
        let start = self.dataflows.subscribe(from)?;
        let task = tokio::spawn(sink::run(
            name.to_string(),
            from.to_string(),
            topic.to_string(),
            schema,
            Arc::clone(&self.dataflows),
            Arc::clone(&self.log),
            start,
        ));
        if let Ok(mut sinks) = self.sinks.lock()
            && let Some(old) = sinks.insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }

    fn columns(defs: &[ColumnDef]) -> Result<Vec<Column>> {
        let mut out = Vec::new();
        for d in defs {
            types::to_arrow(&d.data_type)
                .map_err(|e| EngineError::Unsupported(format!("type {}", e.0)))?;
            out.push(Column {
                name: d.name.value.clone(),
                sql_type: d.data_type.to_string(),
            });
        }
        if out.is_empty() {
            return Err(EngineError::Invalid(
                "a relation needs at least one column".into(),
            ));
        }
        Ok(out)
    }

    fn ensure_free(&self, name: &str) -> Result<()> {
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

    fn ensure_topic(&self, topic: &str, options: &BTreeMap<String, String>) -> Result<()> {
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

    /// Execute one parsed statement.
    pub async fn execute(&self, stmt: Statement) -> Result<Output> {
        self.execute_with(stmt, None).await
    }

    /// Run a query with the values of its `$n` parameters, if any.
    async fn query(&self, sql: &str, params: Option<ParamValues>) -> Result<Vec<RecordBatch>> {
        let mut df = self.ctx.sql(sql).await?;
        if let Some(p) = params {
            df = df.with_param_values(p)?;
        }
        Ok(df.collect().await?)
    }

    /// Whether the engine runs `stmt` itself; the rest pass through to
    /// DataFusion (`Output::PassThrough`).
    pub fn is_own(stmt: &Statement) -> bool {
        match stmt {
            Statement::Sql(s, _) => Self::is_own_sql(s),
            _ => true,
        }
    }

    /// Whether `execute_sql` runs `s` itself (must match its arms).
    pub fn is_own_sql(s: &SqlStatement) -> bool {
        matches!(
            s,
            SqlStatement::CreateTable(_)
                | SqlStatement::Deallocate { .. }
                | SqlStatement::Discard { .. }
                | SqlStatement::UNLISTEN { .. }
                | SqlStatement::Reset(ResetStatement {
                    reset: Reset::ALL,
                    ..
                })
                | SqlStatement::CreateView(_)
                | SqlStatement::Delete(_)
                | SqlStatement::Update(_)
                | SqlStatement::Copy { .. }
                | SqlStatement::Drop {
                    object_type: ObjectType::Table
                        | ObjectType::View
                        | ObjectType::MaterializedView,
                    ..
                }
        )
    }

    /// For one of the engine's own statements that takes `$n` parameters
    /// (DELETE, UPDATE, COPY … TO), the plan of the query it runs, with the
    /// parameters' types inferred: a prepared statement describes its
    /// parameters from it.
    pub async fn parameter_plan(&self, stmt: &Statement) -> Result<Option<LogicalPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::{Expr, expr::Placeholder};
        let Statement::Sql(s, _) = stmt else {
            return Ok(None);
        };
        let (query, typed) = match &**s {
            SqlStatement::Delete(d) => (self.delete_query(d)?.1, vec![]),
            SqlStatement::Update(u) => {
                let (_, q, typed) = self.update_query(u)?;
                (q, typed)
            }
            SqlStatement::Copy {
                source, to: true, ..
            } => (Self::copy_query(source), vec![]),
            _ => return Ok(None),
        };
        let plan = self.ctx.state().create_logical_plan(&query).await?;
        if typed.is_empty() {
            return Ok(Some(plan));
        }
        // `SET col = $n`: the parameter has the column's type.
        let typed: BTreeMap<String, DataType> = typed.into_iter().collect();
        let plan = plan
            .transform_up_with_subqueries(|p| {
                p.map_expressions(|e| {
                    e.transform_up(|e| match e {
                        Expr::Placeholder(Placeholder { id, field: None })
                            if typed.contains_key(&id) =>
                        {
                            let field = Field::new(&id, typed[&id].clone(), true);
                            Ok(Transformed::yes(Expr::Placeholder(Placeholder {
                                id,
                                field: Some(Arc::new(field)),
                            })))
                        }
                        e => Ok(Transformed::no(e)),
                    })
                })
            })?
            .data;
        Ok(Some(plan))
    }

    /// Execute one parsed statement with the values of its `$n` parameters
    /// (extended protocol).
    pub async fn execute_with(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        match stmt {
            Statement::CreateTopic {
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
            Statement::AlterTopic { name, set, reset } => {
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
            Statement::CreateStream {
                name,
                columns,
                options,
                if_not_exists,
                sql,
            } => {
                if if_not_exists && self.lock()?.get(&name).is_some() {
                    return Ok(Output::Command("CREATE STREAM".into(), None));
                }
                self.ensure_free(&name)?;
                let topic = options
                    .get("topic")
                    .or_else(|| options.get("kafka_topic"))
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                let format_name = options
                    .get("format")
                    .or_else(|| options.get("value_format"))
                    .map(String::as_str)
                    .unwrap_or("json");
                let format = Format::parse(format_name).ok_or_else(|| {
                    EngineError::Unsupported(format!(
                        "format '{format_name}' (formats: json, csv, text, bytes)"
                    ))
                })?;
                let columns = Self::columns(&columns)?;
                Layout::stream(Self::schema_of(&columns)?, format).map_err(EngineError::Invalid)?;
                self.ensure_topic(&topic, &options)?;
                let o = Object::Stream {
                    name,
                    topic,
                    format,
                    columns,
                    sql,
                };
                self.register(&o)?;
                self.lock()?.insert(o)?;
                Ok(Output::Command("CREATE STREAM".into(), None))
            }
            Statement::Drop {
                kind,
                names,
                if_exists,
                cascade,
            } => self.drop(kind, names, if_exists, cascade).await,
            Statement::CreateSink {
                name,
                from,
                topic,
                if_not_exists,
                sql,
            } => {
                if self.lock()?.get(&name).is_some() && if_not_exists {
                    return Ok(Output::Command("CREATE SINK".into(), None));
                }
                self.ensure_free(&name)?;
                self.ensure_maintained(&from, "a sink")?;
                if self.log.topic_info(&topic).is_err() {
                    self.log.create_topic(&topic, 1, BTreeMap::new())?;
                }
                self.lock()?.insert(Object::Sink {
                    name: name.clone(),
                    from: from.clone(),
                    topic: topic.clone(),
                    sql,
                })?;
                self.start_sink(&name, &from, &topic).await?;
                Ok(Output::Command("CREATE SINK".into(), None))
            }
            Statement::Subscribe { name, snapshot } => {
                self.ensure_maintained(&name, "SUBSCRIBE")?;
                let provider = self.ctx.table_provider(name.as_str()).await?;
                let schema = provider.schema();
                let mut start = self.dataflows.subscribe(&name)?;
                start.snapshot = crate::dataflow::with_schema(&start.snapshot, &schema)?;
                Ok(Output::Subscribe {
                    name,
                    schema,
                    snapshot,
                    start,
                })
            }
            Statement::Flush => {
                self.tick().await?;
                Ok(Output::Command("FLUSH".into(), None))
            }
            Statement::Sql(s, text) => self.execute_sql(*s, text, params).await,
        }
    }

    async fn drop(
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
                Some(o) if o.kind() == kind.noun() => self.drop_object(o, cascade)?,
                Some(o) => {
                    return Err(EngineError::WrongObject(format!(
                        "\"{name}\" is a {}, not a {}",
                        o.kind(),
                        kind.noun()
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
    fn drop_object(&self, o: Object, cascade: bool) -> Result<()> {
        let name = o.name().to_string();
        let mut dependents = self.dataflows.dependents(&name);
        dependents.extend(self.lock()?.objects().filter_map(|x| match x {
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
        if let Object::Sink { .. } = o {
            if let Some(task) = self.sinks.lock().ok().and_then(|mut s| s.remove(&name)) {
                task.abort();
            }
            self.lock()?.remove(&name)?;
            return Ok(());
        }
        self.ctx.deregister_table(name.as_str())?;
        self.dataflows.remove(&name)?;
        self.lock()?.remove(&name)?;
        // A table's own changelog goes with it; a topic it was created
        // over (`WITH (topic = …)`) stays, as a stream's does.
        if let Object::Table { topic, .. } = o
            && topic == table_topic(&name)
        {
            self.log.delete_topic(&topic)?;
        }
        Ok(())
    }

    /// The query a `COPY … TO` reads.
    fn copy_query(source: &CopySource) -> String {
        match source {
            CopySource::Query(q) => q.to_string(),
            CopySource::Table {
                table_name,
                columns,
            } => {
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("SELECT {cols} FROM {table_name}")
            }
        }
    }

    async fn execute_sql(
        &self,
        s: SqlStatement,
        text: String,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        match s {
            SqlStatement::Deallocate { name, .. } => {
                let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
                Ok(Output::Session(SessionCommand::Deallocate(
                    (!all).then_some(name.value),
                )))
            }
            SqlStatement::Discard { object_type } => Ok(Output::Session(SessionCommand::Discard(
                object_type.to_string().to_ascii_uppercase(),
            ))),
            SqlStatement::UNLISTEN { .. } => {
                Ok(Output::Session(SessionCommand::Nothing("UNLISTEN")))
            }
            SqlStatement::Reset(r) if matches!(r.reset, Reset::ALL) => {
                Ok(Output::Session(SessionCommand::Nothing("RESET")))
            }
            SqlStatement::CreateTable(ct) => {
                let name = ct.name.to_string();
                if ct.if_not_exists && self.lock()?.get(&name).is_some() {
                    return Ok(Output::Command("CREATE TABLE".into(), None));
                }
                if ct.query.is_some() {
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
                    .map(|c| c.name.value.clone())
                    .collect();
                for c in &ct.constraints {
                    if let TableConstraint::PrimaryKey(pk) = c {
                        primary_key.extend(pk.columns.iter().map(|c| c.to_string()));
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
            SqlStatement::CreateView(v) if v.materialized => {
                let name = v.name.to_string();
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
                pg_compat::now_as_mz_now(&mut v.query);
                pg_compat::printable(&mut v.query);
                let mut q = SqlStatement::Query(v.query.clone());
                query::set_returning_in_select_list(&mut q);
                using::merge_join_columns(&self.ctx, &mut q).await;
                if let SqlStatement::Query(q) = q {
                    v.query = q;
                }
                // A column list renames the query's columns, all of them:
                // as aliases of its SELECT list where it has one without a
                // wildcard (its own names may then repeat), else around it.
                let mut aliased = SqlStatement::Query(v.query.clone());
                let columns: Vec<_> = v.columns.iter().map(|c| c.name.clone()).collect();
                let query = if v.columns.is_empty() {
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
                };
                if let Err(e) = self.install_view(&name, &query, true).await {
                    let _ = self.dataflows.remove(&name);
                    let _ = self.ctx.deregister_table(name.as_str());
                    return Err(not_maintainable_subquery(e));
                }
                let version = self.lock()?.insert(Object::MaterializedView {
                    name: name.clone(),
                    query,
                    sql: text,
                })?;
                self.dataflows.set_version(&name, version)?;
                Ok(Output::Command("CREATE MATERIALIZED VIEW".into(), None))
            }
            SqlStatement::CreateView(v) => {
                let name = v.name.to_string();
                if v.or_replace {
                    let _ = self.ctx.deregister_table(name.as_str());
                } else {
                    self.ensure_free(&name)?;
                }
                self.ctx.sql(&text).await?;
                self.lock()?.insert(Object::View { name, sql: text })?;
                Ok(Output::Command("CREATE VIEW".into(), None))
            }
            SqlStatement::Drop {
                object_type,
                names,
                if_exists,
                cascade,
                ..
            } if matches!(
                object_type,
                ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
            ) =>
            {
                let kind = match object_type {
                    ObjectType::Table => DropKind::Table,
                    ObjectType::View => DropKind::View,
                    _ => DropKind::MaterializedView,
                };
                self.drop(
                    kind,
                    names.iter().map(|n| n.to_string()).collect(),
                    if_exists,
                    cascade,
                )
                .await
            }
            SqlStatement::Delete(d) => self.delete(d, params).await,
            SqlStatement::Update(u) => self.update(u, params).await,
            SqlStatement::Copy {
                source,
                to: true,
                target: CopyTarget::Stdout,
                options,
                legacy_options,
                ..
            } => {
                let format = statement::copy_format(&options, &legacy_options)?;
                let query = match source {
                    CopySource::Query(q) => SqlStatement::Query(q),
                    table => {
                        let text = Self::copy_query(&table);
                        match parse(&text)?.pop() {
                            Some(Statement::Sql(s, _)) => *s,
                            _ => return Err(EngineError::Invalid(text)),
                        }
                    }
                };
                let (query, plan) = self.plan_query(query).await?;
                let plan = match params {
                    Some(p) => plan.replace_params_with_values(&p)?,
                    None => plan,
                };
                let names = names::column_names(&query, plan.schema().as_arrow());
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(names::renamed(df.schema().as_arrow(), &names));
                let batches = df.collect().await?;
                Ok(Output::CopyOut {
                    schema,
                    batches,
                    format,
                })
            }
            SqlStatement::Copy {
                source:
                    CopySource::Table {
                        table_name,
                        columns,
                    },
                to: false,
                target: CopyTarget::Stdin,
                options,
                legacy_options,
                ..
            } => {
                let relation = table_name.to_string();
                let provider = self
                    .ctx
                    .table_provider(relation.as_str())
                    .await
                    .map_err(|_| EngineError::UnknownObject {
                        kind: "relation",
                        name: relation.clone(),
                    })?;
                let schema = provider.schema();
                let columns: Vec<String> = if columns.is_empty() {
                    schema.fields().iter().map(|f| f.name().clone()).collect()
                } else {
                    columns.iter().map(|c| c.value.clone()).collect()
                };
                for c in &columns {
                    if schema.column_with_name(c).is_none() {
                        return Err(EngineError::UnknownColumn(c.clone()));
                    }
                }
                Ok(Output::CopyIn(CopyIn {
                    relation,
                    columns,
                    options: CopyInOptions::parse(&options, &legacy_options)?,
                }))
            }
            SqlStatement::Copy { .. } => Err(EngineError::Unsupported(
                "this form of COPY (supported: COPY … TO STDOUT and COPY … FROM STDIN)".into(),
            )),
            SqlStatement::Query(q) if query::select_into(&q).is_some() => {
                // SELECT … INTO t: CREATE TABLE t AS SELECT ….
                let mut q = *q;
                let into = query::take_select_into(&mut q);
                let text = format!("CREATE TABLE {into} AS {q}");
                match parse(&text)?.pop() {
                    Some(Statement::Sql(s, _)) => match *s {
                        SqlStatement::CreateTable(ct) => Box::pin(self.create_table_as(ct)).await,
                        _ => Err(EngineError::Invalid(text)),
                    },
                    _ => Err(EngineError::Invalid(text)),
                }
            }
            other if query::is_user_query(&other) => Box::pin(self.run_query(other, params)).await,
            other => Ok(Output::PassThrough(
                self.coerce_insert(&other).await.unwrap_or(text),
            )),
        }
    }

    /// The text of an `INSERT … VALUES` whose string literals bound for
    /// `interval` / `bytea` columns were made casts PostgreSQL-style
    /// (`pg_compat::coerce_insert_literals`); None if nothing changed.
    pub async fn coerce_insert(&self, s: &SqlStatement) -> Option<String> {
        let SqlStatement::Insert(insert) = s else {
            return None;
        };
        let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table else {
            return None;
        };
        let provider = self
            .ctx
            .table_provider(name.to_string().as_str())
            .await
            .ok()?;
        // Only a table with such a column pays for copying the statement.
        let schema = provider.schema();
        if !schema.fields().iter().any(|f| {
            matches!(
                f.data_type(),
                DataType::Interval(_) | DataType::Binary | DataType::List(_)
            )
        }) {
            return None;
        }
        let mut stmt = s.clone();
        pg_compat::coerce_insert_literals(&mut stmt, &schema).then(|| stmt.to_string())
    }
}
