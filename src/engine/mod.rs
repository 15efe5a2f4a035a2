//! The database: owns the log (through `LogStore`), the catalog and the
//! DataFusion session in which streams, tables and views are registered.
//! A statement is parsed once (`statement/`) into its family and run by
//! that family's file, from the one match in [`Engine::execute_with`]:
//!
//! | family | file |
//! |---|---|
//! | `Ddl`: topics, streams, tables, views, materialized views, sinks, DROP | `ddl.rs` (objects into the session and dataflows: `objects.rs`) |
//! | `Dml`: INSERT, UPDATE, DELETE | `dml.rs` (transaction blocks: `txn.rs`) |
//! | `Copy`: COPY … TO STDOUT / FROM STDIN | `copy.rs`, `copy_binary.rs` |
//! | `Query`: SELECT, VALUES, WITH, EXPLAIN, SHOW | `query.rs` (+ `names.rs`, `apply.rs`, `using.rs`, `windows.rs`) |
//! | `Subscribe`, `Flush`, `Session` | here |
//! | `CatalogQuery`, `Other` (SET/SHOW settings, BEGIN/COMMIT, cursors) | passed back to the protocol layer (datafusion-postgres) |

mod access;
mod aliases;
mod apply;
mod copy;
mod copy_binary;
mod ddl;
pub use ddl::Transient;
mod dml;
mod functions;
mod generator;
mod index_table;
mod indexes;
mod intervals;
pub mod jsonb;
mod ksql_windows;
pub mod limits;
mod names;
mod objects;
pub mod peek;
mod persistent;
pub mod pg_compat;
mod plans;
mod query;
pub mod relation;
mod set_ops;
mod sink;
pub mod statement;
pub mod system;
mod to_char;
mod to_char_number;
pub mod txn;
mod using;
mod whole_rows;
mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use crate::catalog::Catalog;
use crate::dataflow::DataflowError;
use crate::dataflow::decode_errors::DecodeErrors;
use crate::dataflow::runtime::{self as views, Dataflows};
use crate::log::{LogError, LogStore};
pub use copy::{CopyIn, CopyInOptions};
pub use limits::Limits;
pub use names::{column_names, renamed as renamed_schema};
pub use query::is_user_query;
pub use statement::{Access, Copy, Ddl, Dml, DropKind, Statement, parse};

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
    /// Roles and privileges: 42501 permission denied, 42704 no such
    /// role, 42710 role exists.
    #[error("{message}")]
    Access { code: &'static str, message: String },
    /// A statement PostgreSQL refuses with this SQLSTATE and message, as
    /// it words it (`too many column names were specified`, 42601).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
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
            // connection_failure.
            EngineError::Log(LogError::Upstream(_)) => "08006",
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
            EngineError::Limit { code, .. }
            | EngineError::Access { code, .. }
            | EngineError::Refused { code, .. } => code,
        }
    }
}

pub use crate::sqlstate::datafusion_sqlstate;

tokio::task_local! {
    /// Where the statement running in this task sends its NOTICEs (a
    /// view's backfill progress): set by the front end around a statement,
    /// which forwards them to its client as they come.
    pub static NOTICES: tokio::sync::mpsc::UnboundedSender<String>;
}

/// Tell the client of the statement running in this task `msg` as a
/// NOTICE; nothing when no client listens (start, the console).
pub(crate) fn notice(msg: String) {
    let _ = NOTICES.try_with(|n| n.send(msg));
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

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
    /// A query of PostgreSQL's catalogs: plan it with datafusion-postgres'
    /// compatibility parser, then run and send it as any query.
    CatalogQuery(String),
    /// Not one of eddy's statements: run it through datafusion-postgres
    /// (SET/SHOW, transactions, cursors).
    PassThrough(String),
    /// SUBSCRIBE: stream `snapshot` (when asked) then the relation's
    /// changes, as rows of `mz_timestamp`, `mz_diff` and `schema`'s
    /// columns.
    Subscribe {
        name: String,
        schema: SchemaRef,
        snapshot: bool,
        start: views::Subscription,
        /// The dataflow made for this subscription, removed with it.
        transient: Option<ddl::Transient>,
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
    /// `DECLARE name [BINARY] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR
    /// query`: the query planned and started as a portal of that name
    /// (what psycopg's named cursors describe and fetch from).
    Declare {
        name: String,
        query: Box<datafusion::sql::sqlparser::ast::Query>,
        /// WITH HOLD: it outlives its transaction block.
        hold: bool,
    },
    /// `FETCH [NEXT | FORWARD [n | ALL] | n | ALL] [FROM | IN] name`: the
    /// next rows of that cursor (None: all of them); `forward` is false
    /// for the directions eddy's cursors (NO SCROLL) refuse.
    Fetch {
        name: String,
        count: Option<usize>,
        forward: bool,
    },
    /// `CLOSE name | ALL`.
    Close(Option<String>),
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
    /// Background tasks by the name of their object: sinks and load
    /// generators, stopped when it is dropped.
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// What one request may ask (`eddy_catalog.limits`).
    limits: Limits,
    /// How often a backfill tells its client how far it got.
    progress_notice_interval: std::time::Duration,
    /// The external clusters connections name, routed by topic name
    /// (`log` is this over eddy's own log).
    routed: Arc<crate::log::routed::Routed>,
    /// See [`EngineOptions::cluster_id`].
    cluster_id: String,
    /// Roles, their secrets and privileges (`access.rs`).
    roles: std::sync::Arc<crate::auth::Roles>,
    /// Query plans kept until the catalog changes (`plans.rs`).
    plans: Arc<plans::Plans>,
    /// The schema registry (Avro streams' writer schemas; its REST API is
    /// `server/registry.rs`).
    registry: Arc<crate::registry::Registry>,
}

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
    /// Told, while the views catch up with the log at open, how many of
    /// the stream records present they have read (read, present); a
    /// terminal's progress bar (`server::start`).
    pub catch_up: Option<CatchUp>,
    /// How often a `CREATE MATERIALIZED VIEW` that is backfilling sends
    /// its client a progress NOTICE (the first after half of it).
    pub progress_notice_interval: std::time::Duration,
    /// The cluster id this server's Kafka listener reports: a connection
    /// whose brokers report it names eddy's own log.
    pub cluster_id: String,
}

/// See [`EngineOptions::catch_up`].
#[derive(Clone)]
pub struct CatchUp(pub Arc<dyn Fn(i64, i64) + Send + Sync>);

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatchUp")
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            checkpoint_interval: Some(std::time::Duration::from_secs(30)),
            clock: crate::dataflow::temporal::Clock::wall(),
            limits: Limits::default(),
            catch_up: None,
            progress_notice_interval: std::time::Duration::from_secs(2),
            cluster_id: "eddy".into(),
        }
    }
}

impl Engine {
    /// The schema registry this engine's Avro streams and sinks use.
    pub fn registry(&self) -> &Arc<crate::registry::Registry> {
        &self.registry
    }

    /// What one request may ask of this server.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Split and parse a query string within this server's [`Limits`].
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        statement::parse_with(sql, &self.limits)
    }

    /// Run ticks until every table and view has caught up with the log.
    pub async fn tick(&self) -> Result<u64> {
        let d = Arc::clone(&self.dataflows);
        Ok(tokio::task::spawn_blocking(move || d.tick())
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??)
    }
    /// The tables and views that took their state from the checkpoint at
    /// start (the rest were rebuilt from the log).
    pub fn restored(&self) -> Vec<String> {
        self.restored.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// What the Kafka front end signals when a produce appended records:
    /// the dataflows tick at once (`Dataflows::arrivals`).
    pub fn arrivals(&self) -> Arc<tokio::sync::Notify> {
        self.dataflows.arrivals()
    }

    /// Write a checkpoint now (also done on a timer and at shutdown).
    pub fn checkpoint(&self) -> Result<Option<views::CheckpointInfo>> {
        Ok(self.dataflows.checkpoint()?)
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

    /// Whether the engine runs sqlparser statement `s` itself (by the same
    /// classification as the parse).
    pub fn is_own_sql(s: &SqlStatement) -> bool {
        statement::classify(s.clone(), String::new()).is_own()
    }

    /// For one of the engine's own statements that takes `$n` parameters
    /// (INSERT, DELETE, UPDATE, COPY … TO), the plan of the query it runs, with the
    /// parameters' types inferred: a prepared statement describes its
    /// parameters from it.
    pub async fn parameter_plan(&self, stmt: &Statement) -> Result<Option<LogicalPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::{Expr, expr::Placeholder};
        let (query, typed) = match stmt {
            Statement::Dml(Dml::Insert(s)) => {
                let mut s = (**s).clone();
                self.coerce_insert(&mut s).await;
                let plan = self
                    .ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(s)))
                    .await?;
                return Ok(Some(plan));
            }
            Statement::Dml(Dml::Delete(d)) => (self.delete_query(d)?.1, vec![]),
            Statement::Dml(Dml::Update(u)) => {
                let (_, q, typed) = self.update_query(u)?;
                (q, typed)
            }
            Statement::Copy(Copy::To { source, .. }) => (Self::copy_query(source), vec![]),
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
    /// (extended protocol): the one dispatch, by family.
    pub async fn execute_with(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        match stmt {
            Statement::Ddl(d) => {
                // Whatever it did, no plan made before it is used after.
                let out = self.ddl(d).await;
                self.plans.invalidate();
                out
            }
            Statement::Dml(Dml::Insert(s)) => {
                let n = self.insert(*s, params, None).await?;
                Ok(Output::Command("INSERT".into(), Some(n as usize)))
            }
            Statement::Dml(Dml::Update(u)) => self.update(*u, params).await,
            Statement::Access(a) => self.access(a).await,
            Statement::Dml(Dml::Delete(d)) => self.delete(*d, params).await,
            Statement::Copy(c) => self.copy(c, params).await,
            Statement::Subscribe {
                name,
                query,
                snapshot,
            } => {
                // A query, or a relation no dataflow maintains (a stream,
                // a view), is followed through a dataflow of its own,
                // removed when the subscription ends.
                let (name, transient) = match query {
                    None if self.dataflows.maintains(&name) => (name, None),
                    None => {
                        if self.lock()?.get(&name).is_none() {
                            self.ensure_maintained(&name, "SUBSCRIBE")?;
                        }
                        let q = statement::parse_query(&format!(
                            "SELECT * FROM {}",
                            names::quoted(&name)
                        ))?;
                        let t = self.transient_view(q).await?;
                        (t.name.clone(), Some(t))
                    }
                    Some(q) => {
                        let t = self.transient_view(q).await?;
                        (t.name.clone(), Some(t))
                    }
                };
                let provider = self.ctx.table_provider(name.as_str()).await?;
                let schema = provider.schema();
                let mut start = self.dataflows.subscribe(&name)?;
                start.snapshot = crate::dataflow::with_schema(&start.snapshot, &schema)?;
                Ok(Output::Subscribe {
                    name,
                    schema,
                    snapshot,
                    start,
                    transient,
                })
            }
            Statement::Flush => {
                self.tick().await?;
                Ok(Output::Command("FLUSH".into(), None))
            }
            Statement::Session(cmd) => Ok(Output::Session(cmd)),
            Statement::Query(s, _) => Box::pin(self.run_query(*s, params)).await,
            Statement::CatalogQuery(_, text) => Ok(Output::CatalogQuery(text)),
            Statement::Other(_, text) => Ok(Output::PassThrough(text)),
        }
    }
}
