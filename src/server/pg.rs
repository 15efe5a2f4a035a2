//! The PostgreSQL wire listener (pgwire). Simple-protocol queries are split
//! and parsed by `engine::parse`; eddy's own statements run in the engine,
//! the rest go to datafusion-postgres' `DfSessionService` over the same
//! DataFusion session (which also answers the extended protocol, SET/SHOW,
//! transactions as no-ops, and the pg_catalog queries psql sends).
//! Errors carry SQLSTATE codes.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire;
use futures::future::FutureExt;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::Type;
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::api::{ConnectionHandle, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::engine::{CopyFormat, CopyIn, Engine, EngineError, Output, SessionCommand};

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

fn engine_error(e: EngineError) -> PgWireError {
    user_error(e.sqlstate(), e.to_string())
}

/// An error parsing `query`, with the position (1-based, in characters)
/// sqlparser reports as `Line: L, Column: C`, so psql points at it.
fn parse_error(query: &str, e: EngineError) -> PgWireError {
    let message = e.to_string();
    let mut info = ErrorInfo::new("ERROR".into(), e.sqlstate().into(), message.clone());
    info.position = error_position(query, &message).map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

fn error_position(query: &str, message: &str) -> Option<usize> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let line: usize = line.trim().parse().ok()?;
    let col: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let mut pos = 0usize;
    for (i, l) in query.split('\n').enumerate() {
        if i + 1 == line {
            return Some(pos + col.min(l.chars().count() + 1));
        }
        pos += l.chars().count() + 1;
    }
    None
}

pub struct Handlers {
    simple: Arc<Simple>,
    extended: Arc<Extended>,
    startup: Arc<Startup>,
    copy: Arc<CopyLoader>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    pub fn new(engine: Arc<Engine>, allow_remote: bool) -> Handlers {
        let df = Arc::new(DfSessionService::new(engine.session()));
        let connections = Arc::new(ConnectionManager::new());
        Handlers {
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
            simple: Arc::new(Simple {
                engine: Arc::clone(&engine),
                df: Arc::clone(&df),
            }),
            extended: Arc::new(Extended {
                parser: Arc::new(PreparedParser {
                    engine: Arc::clone(&engine),
                    df: ExtendedQueryHandler::query_parser(&*df),
                }),
                df,
            }),
            startup: Arc::new(Startup {
                allow_remote,
                connections,
            }),
            copy: Arc::new(CopyLoader { engine }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.simple)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.extended)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.copy)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Rows that stop with 57014 when a CancelRequest (psql's Ctrl-C) arrives
/// while they stream: DataFusion runs a query as its rows are pulled, after
/// `do_query` returned, and pgwire's own cancel covers `do_query` only. The
/// connection's cancel signal is taken at the first pull, once pgwire's has
/// been released.
fn cancellable(client: &impl ClientInfo, mut resp: QueryResponse) -> QueryResponse {
    let Some(handle) = client.session_extensions().get::<Arc<ConnectionHandle>>() else {
        return resp;
    };
    let handle: Arc<ConnectionHandle> = Arc::clone(&handle);
    let mut rows = Some(std::mem::replace(
        &mut resp.data_rows,
        Box::pin(stream::empty()),
    ));
    let guarded =
        stream::once(async move { (handle.start_query().await,) }).flat_map(move |(rx,)| {
            let rx = rx.shared();
            let fired = {
                let rx = rx.clone();
                async move {
                    if rx.await.is_err() {
                        // Released unfired: never cancel.
                        std::future::pending::<()>().await;
                    }
                }
            };
            let tail = stream::once(async move {
                matches!(rx.peek(), Some(Ok(()))).then(|| {
                    Err(user_error(
                        "57014",
                        "canceling statement due to user request".into(),
                    ))
                })
            })
            .filter_map(futures::future::ready);
            rows.take()
                .unwrap_or_else(|| Box::pin(stream::empty()))
                .take_until(fired)
                .chain(tail)
        });
    resp.data_rows = Box::pin(guarded);
    resp
}

/// No passwords: loopback connections are trusted, others refused unless
/// the server was started with `--pg-allow-remote`.
pub struct Startup {
    allow_remote: bool,
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for Startup {
    /// Registers each connection for CancelRequest (psql's Ctrl-C).
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.connections))
    }

    async fn post_startup<C>(&self, client: &mut C, _m: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !self.allow_remote && !client.socket_addr().ip().is_loopback() {
            return Err(user_error(
                "28000",
                format!(
                    "connections from {} are refused: only loopback clients are trusted without authentication (start eddy with --pg-allow-remote)",
                    client.socket_addr().ip()
                ),
            ));
        }
        Ok(())
    }
}

pub struct Simple {
    engine: Arc<Engine>,
    df: Arc<DfSessionService>,
}

/// The response for what one of the engine's own statements produced.
fn respond(client: &impl ClientInfo, output: Output) -> PgWireResult<Response> {
    match output {
        Output::CopyIn(copy) => {
            let columns = copy.columns.len();
            let format = i8::from(copy.options.binary);
            let state = client
                .session_extensions()
                .get_or_insert_with(|| Mutex::new(None::<PendingCopy>));
            *state
                .lock()
                .map_err(|_| user_error("XX000", "COPY state poisoned".into()))? =
                Some(PendingCopy {
                    copy,
                    data: Vec::new(),
                });
            Ok(Response::CopyIn(CopyResponse::new(
                format,
                columns,
                stream::empty(),
            )))
        }
        Output::Command(tag, n) => {
            let mut t = Tag::new(&tag);
            if let Some(n) = n {
                t = t.with_rows(n);
            }
            Ok(Response::Execution(t))
        }
        Output::CopyOut {
            schema,
            batches,
            format,
        } => copy_out(&schema, batches, format),
        Output::PassThrough(sql) => Err(user_error(
            "XX000",
            format!("statement was not planned: {sql}"),
        )),
        Output::Subscribe { name, .. } => Err(user_error(
            "XX000",
            format!("SUBSCRIBE to {name} reached the wrong path"),
        )),
        Output::Session(cmd) => Err(user_error(
            "XX000",
            format!("{cmd:?} reached the wrong path"),
        )),
    }
}

/// DEALLOCATE and DISCARD on the connection's statement and portal store.
///
/// pgwire's store cannot list its statements, so `DEALLOCATE ALL` and
/// `DISCARD ALL` close every portal but leave named statements stored:
/// drivers that send them (psycopg 3 after DDL, SQLAlchemy's pool reset)
/// parse again under names of their own choosing, and a Parse replaces a
/// statement of the same name.
fn session_command<C>(client: &C, cmd: SessionCommand) -> PgWireResult<Response>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let store = client.portal_store();
    match cmd {
        SessionCommand::Deallocate(Some(name)) => {
            if store.get_statement(&name).is_none() {
                return Err(user_error(
                    "26000",
                    format!("prepared statement \"{name}\" does not exist"),
                ));
            }
            store.rm_statement(&name);
            Ok(Response::Execution(Tag::new("DEALLOCATE")))
        }
        SessionCommand::Deallocate(None) => {
            store.clear_portals();
            Ok(Response::Execution(Tag::new("DEALLOCATE ALL")))
        }
        SessionCommand::Nothing(tag) => Ok(Response::Execution(Tag::new(tag))),
        SessionCommand::Discard(what) => {
            if what == "ALL" {
                store.clear_portals();
            }
            Ok(Response::Execution(Tag::new(&format!("DISCARD {what}"))))
        }
    }
}

/// SUBSCRIBE, as Materialize streams it: over COPY (text), rows of
/// `mz_timestamp` (milliseconds), `mz_diff` and the relation's columns;
/// first its contents (unless `WITH (SNAPSHOT = false)`), then each tick's
/// changes to it, sent and flushed as they happen (pgwire's own COPY path
/// flushes only at the end, which a subscription never reaches). Runs
/// until the client goes away (a send fails) or the engine stops.
async fn subscribe<C>(
    client: &mut C,
    name: String,
    schema: SchemaRef,
    snapshot: bool,
    start: crate::dataflow::runtime::Subscription,
) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use tokio::sync::broadcast::error::RecvError;
    let api = |e: datafusion::arrow::error::ArrowError| PgWireError::ApiError(Box::new(e));
    let mut fields = vec![
        Field::new("mz_timestamp", DataType::Int64, false),
        Field::new("mz_diff", DataType::Int64, false),
    ];
    fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
    let out_schema = Arc::new(Schema::new(fields));
    let rows = |batch: &RecordBatch, diffs: Vec<i64>, at: i64| -> PgWireResult<RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![at; batch.num_rows()])),
            Arc::new(Int64Array::from(diffs)),
        ];
        cols.extend(batch.columns().iter().cloned());
        pg_text_columns(&RecordBatch::try_new(Arc::clone(&out_schema), cols).map_err(api)?)
    };
    let text_schema = pg_text_columns(&RecordBatch::new_empty(Arc::clone(&out_schema)))?.schema();
    let pg_fields = Arc::new(arrow_schema_to_pg_fields(
        &text_schema,
        &Format::UnifiedText,
        None,
    )?);
    let mut enc = CopyEncoder::new_text(Arc::clone(&pg_fields), CopyTextOptions::default());
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            pg_fields.len() as i16,
            vec![0; pg_fields.len()],
        )))
        .await?;
    let mut sent = 0usize;
    let mut send = async |client: &mut C, batch: RecordBatch| -> PgWireResult<()> {
        for data in copy_rows(&mut enc, &batch, &pg_fields)? {
            client.feed(PgWireBackendMessage::CopyData(data)).await?;
            sent += 1;
        }
        client.flush().await?;
        Ok(())
    };
    if snapshot {
        let n = start.snapshot.num_rows();
        send(client, rows(&start.snapshot, vec![1; n], start.at_ms)?).await?;
    }
    let mut changes = start.changes;
    loop {
        match changes.recv().await {
            Ok(tick) if tick.removed.contains(&name) => {
                return Err(user_error(
                    "42P01",
                    format!("SUBSCRIBE ended: \"{name}\" was dropped or replaced"),
                ));
            }
            Ok(tick) if tick.epoch > start.epoch => {
                if let Some(d) = tick.changes.get(&name) {
                    let batch = crate::dataflow::with_schema(&d.batch, &schema)
                        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                    send(client, rows(&batch, d.diffs.clone(), tick.at_ms)?).await?;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                return Err(user_error(
                    "53000",
                    format!("SUBSCRIBE to {name} fell {n} ticks behind and was stopped"),
                ));
            }
            Err(RecvError::Closed) => break,
        }
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(sent)))
}

/// COPY … FROM STDIN in progress on a connection: its data is collected
/// and loaded at CopyDone, so an aborted COPY writes nothing.
struct PendingCopy {
    copy: CopyIn,
    data: Vec<u8>,
}

/// COPY data beyond this fails the COPY (SQLSTATE 54000) instead of
/// growing the server's memory without bound.
const MAX_COPY_BYTES: usize = 1 << 30;

type CopyState = Mutex<Option<PendingCopy>>;

fn take_copy(client: &impl ClientInfo) -> Option<PendingCopy> {
    client
        .session_extensions()
        .get::<CopyState>()
        .and_then(|s| s.lock().ok().and_then(|mut s| s.take()))
}

/// Loads COPY … FROM STDIN data.
pub struct CopyLoader {
    engine: Arc<Engine>,
}

#[async_trait]
impl CopyHandler for CopyLoader {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(state) = client.session_extensions().get::<CopyState>()
            && let Ok(mut state) = state.lock()
            && let Some(p) = state.as_mut()
        {
            if p.data.len() + copy_data.data.len() > MAX_COPY_BYTES {
                *state = None;
                return Err(user_error(
                    "54000",
                    format!("COPY data exceeds {MAX_COPY_BYTES} bytes; split the load"),
                ));
            }
            p.data.extend_from_slice(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(p) = take_copy(client) else {
            return Err(user_error(
                "08P01",
                "CopyDone without a COPY FROM STDIN in progress".into(),
            ));
        };
        let n = self
            .engine
            .copy_in(&p.copy, &p.data)
            .await
            .map_err(engine_error)?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(n).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        take_copy(client);
        user_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

/// A prepared statement (extended protocol), as datafusion-postgres keeps
/// it: the SQL and, where DataFusion planned it, the statement and plan.
/// The engine's own statements are kept as (SQL, None), or, when they take
/// parameters (DELETE, UPDATE, COPY … TO), with the plan of the query they
/// run, from which their parameters are described. Keeping datafusion's
/// statement type keeps its portal store, which its cursor hooks require.
type Prepared = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Whether a prepared statement is one of the engine's own.
fn is_own(stmt: &Prepared) -> bool {
    match &stmt.1 {
        None => true,
        Some((ast, _)) => Engine::is_own_sql(ast),
    }
}

pub struct PreparedParser {
    engine: Arc<Engine>,
    df: Arc<datafusion_postgres::Parser>,
}

#[async_trait]
impl QueryParser for PreparedParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = crate::engine::parse(sql).map_err(|e| parse_error(sql, e))?;
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        match statements.pop() {
            Some(stmt) if Engine::is_own(&stmt) => {
                let plan = self
                    .engine
                    .parameter_plan(&stmt)
                    .await
                    .map_err(engine_error)?;
                let ast = match stmt {
                    crate::engine::Statement::Sql(ast, _) => Some(*ast),
                    _ => None,
                };
                Ok(Some((sql.to_string(), ast.zip(plan))))
            }
            // SHOW … arrives rewritten as a query over eddy_catalog.
            Some(crate::engine::Statement::Sql(s, text)) => {
                let text = self.engine.coerce_insert(&s).await.unwrap_or(text);
                self.df
                    .parse_sql(client, &text, types)
                    .await
                    .map_err(with_sqlstate)
            }
            _ => self
                .df
                .parse_sql(client, sql, types)
                .await
                .map_err(with_sqlstate),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        self.df.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        if is_own(stmt) {
            // DDL and DML return no rows, COPY sends its own description.
            return Ok(vec![]);
        }
        self.df.get_result_schema(stmt, column_format)
    }
}

/// The extended protocol (psycopg, tokio-postgres, JDBC): eddy's own
/// statements in the engine with their parameters bound, the rest in
/// datafusion-postgres; errors get SQLSTATEs and text floats print as
/// PostgreSQL's, as in the simple protocol.
pub struct Extended {
    parser: Arc<PreparedParser>,
    df: Arc<DfSessionService>,
}

impl Extended {
    async fn run_own<C>(&self, client: &mut C, portal: &Portal<Prepared>) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (sql, planned) = &portal.statement.statement;
        let arrow: Vec<Option<DataType>> = match planned {
            Some((_, plan)) => {
                let types = plan
                    .get_parameter_types()
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let mut ordered: Vec<(usize, Option<DataType>)> = types
                    .into_iter()
                    .filter_map(|(k, t)| Some((k.trim_start_matches('$').parse().ok()?, t)))
                    .collect();
                ordered.sort_by_key(|(i, _)| *i);
                ordered.into_iter().map(|(_, t)| t).collect()
            }
            None => vec![],
        };
        let wire = self
            .parser
            .get_parameter_types(&portal.statement.statement)?;
        let arrow_refs: Vec<Option<&DataType>> = arrow.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        let params = deserialize_parameters_with_server_types(portal, &arrow_refs, &wire_refs)?;
        let stmt = crate::engine::parse(sql)
            .map_err(engine_error)?
            .pop()
            .ok_or_else(|| user_error("42601", "empty statement".into()))?;
        match self.parser.engine.execute_with(stmt, Some(params)).await {
            Ok(Output::Subscribe {
                name,
                schema,
                snapshot,
                start,
            }) => subscribe(client, name, schema, snapshot, start).await,
            Ok(Output::Session(cmd)) => session_command(&*client, cmd),
            Ok(output) => respond(&*client, output),
            Err(e) => Err(engine_error(e)),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = Prepared;
    type QueryParser = PreparedParser;

    fn query_parser(&self) -> Arc<PreparedParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = if is_own(&portal.statement.statement) {
            self.run_own(client, portal).await
        } else {
            ExtendedQueryHandler::do_query(&*self.df, client, portal, max_rows).await
        };
        match result {
            Ok(Response::Query(q)) => Ok(Response::Query(cancellable(
                client,
                pg_text_values(coded_errors(q)),
            ))),
            Ok(other) => Ok(other),
            Err(e) => Err(with_sqlstate(e)),
        }
    }
}

/// PostgreSQL's text form of a float8: the shortest digits that round-trip,
/// plain notation for decimal exponents in [-4, 15), otherwise `1e+20`
/// style; `NaN`, `Infinity`, `-Infinity`.
pub fn pg_float(x: f64) -> String {
    pg_float_text(x, format!("{x:e}"), || format!("{x}"), 15)
}

/// PostgreSQL's text form of a float4: the shortest digits that round-trip
/// as an f32, plain notation for decimal exponents in [-4, 6).
pub fn pg_float4(x: f32) -> String {
    pg_float_text(x as f64, format!("{x:e}"), || format!("{x}"), 6)
}

fn pg_float_text(x: f64, sci: String, plain: impl FnOnce() -> String, max_exp: i32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..max_exp).contains(&exp) {
        plain()
    } else {
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// Rewrite the float4/float8 columns of text-format result rows (encoded
/// by datafusion-postgres as Rust prints floats, `2.0`) as PostgreSQL
/// prints them (`2`). Other columns pass through untouched.
/// Errors raised while the rows stream (DataFusion runs a query as its
/// rows are pulled: a division by zero, a view in an error state) carry
/// their SQLSTATE as errors before the first row do.
fn coded_errors(mut resp: QueryResponse) -> QueryResponse {
    let rows = std::mem::replace(&mut resp.data_rows, Box::pin(stream::empty()));
    resp.data_rows = Box::pin(rows.map(|row| row.map_err(with_sqlstate)));
    resp
}

fn pg_text_values(mut resp: QueryResponse) -> QueryResponse {
    use pgwire::api::Type;
    use pgwire::api::results::FieldFormat;
    let kinds: Vec<Option<TextFix>> = resp
        .row_schema
        .iter()
        .map(|f| match (f.datatype(), f.format()) {
            (t, FieldFormat::Text) if *t == Type::FLOAT8 => Some(TextFix::Float8),
            (t, FieldFormat::Text) if *t == Type::FLOAT4 => Some(TextFix::Float4),
            (t, FieldFormat::Text) if *t == Type::NUMERIC => Some(TextFix::Numeric),
            (t, FieldFormat::Text)
                if *t == Type::TIMESTAMP || *t == Type::TIMESTAMPTZ || *t == Type::INTERVAL =>
            {
                Some(TextFix::Timestamp)
            }
            _ => None,
        })
        .collect();
    if kinds.iter().all(Option::is_none) {
        return resp;
    }
    let rows = std::mem::replace(&mut resp.data_rows, Box::pin(stream::empty()));
    resp.data_rows = Box::pin(rows.map(move |row| row.map(|r| rewrite_floats(r, &kinds))));
    resp
}

/// Text values datafusion-postgres prints differently from PostgreSQL.
#[derive(Debug, Clone, Copy)]
enum TextFix {
    Float8,
    Float4,
    /// `…:07.000000+00` → `…:07+00`, `.500000` → `.5` (timestamps and
    /// intervals).
    Timestamp,
    /// An unconstrained `numeric` (see [`trim_numeric`]).
    Numeric,
}

/// An unconstrained `numeric` column is an Arrow decimal of scale 10 (and
/// what arithmetic derives from it, of more): its values print without
/// the trailing zeros of that fixed scale, as Materialize and RisingWave
/// print numerics (`21`, `2.5`; PostgreSQL keeps each value's input scale,
/// which a fixed-scale decimal does not remember). A value with fewer
/// fraction digits is of a declared `numeric(p, s)` and keeps its scale.
/// None: leave the text as it is.
fn trim_numeric(t: &str) -> Option<String> {
    let dot = t.find('.')?;
    let frac = &t[dot + 1..];
    if frac.len() < UNCONSTRAINED_NUMERIC_SCALE as usize
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let kept = frac.trim_end_matches('0');
    Some(if kept.is_empty() {
        t[..dot].to_string()
    } else {
        format!("{}.{kept}", &t[..dot])
    })
}

const UNCONSTRAINED_NUMERIC_SCALE: i8 = crate::types::UNCONSTRAINED_NUMERIC_SCALE;

/// A timestamp's text with PostgreSQL's fraction: only the significant
/// digits, none when whole.
fn trim_fraction(t: &str) -> String {
    let Some(dot) = t.find('.') else {
        return t.to_string();
    };
    let digits = t[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(t.len(), |n| dot + 1 + n);
    let frac = t[dot + 1..digits].trim_end_matches('0');
    let mut out = t[..dot].to_string();
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out.push_str(&t[digits..]);
    out
}

/// PostgreSQL's text form of a timestamp in µs since the epoch (UTC).
pub fn pg_timestamp(us: i64, with_tz: bool) -> Option<String> {
    let dt = chrono::DateTime::from_timestamp_micros(us)?.naive_utc();
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = us.rem_euclid(1_000_000);
    if frac != 0 {
        s.push('.');
        s.push_str(format!("{frac:06}").trim_end_matches('0'));
    }
    if with_tz {
        s.push_str("+00");
    }
    Some(s)
}

fn rewrite_floats(mut row: DataRow, kinds: &[Option<TextFix>]) -> DataRow {
    let data = &row.data[..];
    let mut out = bytes::BytesMut::with_capacity(data.len());
    let mut at = 0usize;
    for kind in kinds {
        let Some(len_bytes) = data.get(at..at + 4) else {
            return row;
        };
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if len < 0 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let Some(value) = data.get(at..at + len as usize) else {
            return row;
        };
        at += len as usize;
        let text = std::str::from_utf8(value).ok();
        let fixed = match (kind, text) {
            (Some(TextFix::Float8), Some(t)) => t.parse::<f64>().ok().map(pg_float),
            (Some(TextFix::Float4), Some(t)) => t.parse::<f32>().ok().map(pg_float4),
            (Some(TextFix::Timestamp), Some(t)) => Some(trim_fraction(t)),
            (Some(TextFix::Numeric), Some(t)) => trim_numeric(t),
            _ => None,
        };
        match fixed {
            Some(f) => {
                out.extend_from_slice(&(f.len() as i32).to_be_bytes());
                out.extend_from_slice(f.as_bytes());
            }
            None => {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    row.data = out;
    row
}

/// Floats, timestamps and intervals as PostgreSQL prints them (COPY must
/// be byte-identical): such columns become text columns holding
/// PostgreSQL's text of each value.
fn pg_text_columns(batch: &RecordBatch) -> PgWireResult<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{
        DataType, Field, Float32Type, Float64Type, Int64Type, IntervalMonthDayNanoType,
        IntervalUnit, Schema, TimeUnit,
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| {
        matches!(
            f.data_type(),
            DataType::Float32 | DataType::Float64 | DataType::Timestamp(..) | DataType::Interval(_)
        ) || matches!(f.data_type(), DataType::Decimal128(_, s) if *s >= UNCONSTRAINED_NUMERIC_SCALE)
    }) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut cols: Vec<Arc<dyn Array>> = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let text: Option<StringArray> = match f.data_type() {
            DataType::Float64 => Some(
                c.as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map(pg_float))
                    .collect(),
            ),
            DataType::Float32 => Some(
                c.as_primitive::<Float32Type>()
                    .iter()
                    .map(|v| v.map(pg_float4))
                    .collect(),
            ),
            DataType::Timestamp(_, tz) => {
                let us = cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    .and_then(|t| cast(&t, &DataType::Int64))
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    us.as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.and_then(|us| pg_timestamp(us, tz.is_some())))
                        .collect(),
                )
            }
            DataType::Decimal128(_, s) if *s >= UNCONSTRAINED_NUMERIC_SCALE => {
                let text =
                    cast(c, &DataType::Utf8).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    text.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(|t| trim_numeric(t).unwrap_or_else(|| t.to_string())))
                        .collect(),
                )
            }
            DataType::Interval(_) => {
                let iv = cast(c, &DataType::Interval(IntervalUnit::MonthDayNano))
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some(
                    iv.as_primitive::<IntervalMonthDayNanoType>()
                        .iter()
                        .map(|v| v.map(crate::types::input::pg_interval_text))
                        .collect(),
                )
            }
            _ => None,
        };
        match text {
            Some(t) => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                cols.push(Arc::new(t));
            }
            None => {
                fields.push(f.as_ref().clone());
                cols.push(Arc::clone(c));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| PgWireError::ApiError(Box::new(e)))
}

/// One COPY data message per row of `batch`.
fn copy_rows(
    enc: &mut CopyEncoder,
    batch: &RecordBatch,
    fields: &[FieldInfo],
) -> PgWireResult<Vec<CopyData>> {
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (col, f) in batch.schema().fields().iter().enumerate() {
            encode_value(enc, batch.column(col), row, f, &fields[col])?;
        }
        out.push(enc.take_copy());
    }
    Ok(out)
}

fn copy_out(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: CopyFormat,
) -> PgWireResult<Response> {
    // Binary COPY sends floats as floats; text and CSV as PostgreSQL prints them.
    let batches = if format == CopyFormat::Binary {
        batches
    } else {
        batches
            .iter()
            .map(pg_text_columns)
            .collect::<PgWireResult<Vec<_>>>()?
    };
    let schema = &batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::clone(schema));
    let pg_format = if format == CopyFormat::Binary {
        Format::UnifiedBinary
    } else {
        Format::UnifiedText
    };
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, &pg_format, None)?);
    let mut enc = match format {
        CopyFormat::Text => CopyEncoder::new_text(Arc::clone(&fields), CopyTextOptions::default()),
        CopyFormat::Csv { .. } => {
            CopyEncoder::new_csv(Arc::clone(&fields), CopyCsvOptions::default())
        }
        CopyFormat::Binary => CopyEncoder::new_binary(Arc::clone(&fields)),
    };
    let mut data = Vec::new();
    if let CopyFormat::Csv { header: true } = format {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut line = names.join(",");
        line.push('\n');
        data.push(Ok(pgwire::messages::copy::CopyData::new(
            line.into_bytes().into(),
        )));
    }
    for b in &batches {
        data.extend(copy_rows(&mut enc, b, &fields)?.into_iter().map(Ok));
    }
    let code = if format == CopyFormat::Binary { 1 } else { 0 };
    Ok(Response::CopyOut(CopyResponse::new(
        code,
        fields.len(),
        stream::iter(data),
    )))
}

#[async_trait]
impl SimpleQueryHandler for Simple {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        debug!(query, "simple query");
        let statements = crate::engine::parse(query).map_err(|e| parse_error(query, e))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(statements.len());
        for stmt in statements {
            let result = match self.engine.execute(stmt).await {
                Ok(Output::PassThrough(sql)) => {
                    SimpleQueryHandler::do_query(&*self.df, client, &sql)
                        .await
                        .map(|mut rs| {
                            for r in rs.iter_mut() {
                                if let Response::Error(info) = r {
                                    refine_code(info);
                                }
                            }
                            rs
                        })
                }
                Ok(Output::Subscribe {
                    name,
                    schema,
                    snapshot,
                    start,
                }) => subscribe(client, name, schema, snapshot, start)
                    .await
                    .map(|r| vec![r]),
                Ok(Output::Session(cmd)) => session_command(client, cmd).map(|r| vec![r]),
                Ok(output) => respond(client, output).map(|r| vec![r]),
                Err(e) => Err(engine_error(e)),
            };
            match result {
                Ok(rs) => out.extend(rs.into_iter().map(|r| match r {
                    Response::Query(q) => {
                        Response::Query(cancellable(client, pg_text_values(coded_errors(q))))
                    }
                    other => other,
                })),
                Err(e) => {
                    // PostgreSQL stops at the first failing statement of a
                    // query string and reports it after the earlier results.
                    let mut info = match e {
                        PgWireError::UserError(info) => info,
                        other => Box::new(ErrorInfo::new(
                            "ERROR".into(),
                            sqlstate_of(&other).into(),
                            other.to_string(),
                        )),
                    };
                    refine_code(&mut info);
                    out.push(Response::Error(info));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// An error as the client gets it: a user error with the SQLSTATE its
/// cause calls for (protocol and I/O errors pass through: they close the
/// session).
fn with_sqlstate(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(mut info) => {
            refine_code(&mut info);
            PgWireError::UserError(info)
        }
        PgWireError::ApiError(_) => {
            let mut info = Box::new(ErrorInfo::new(
                "ERROR".into(),
                sqlstate_of(&e).into(),
                e.to_string(),
            ));
            refine_code(&mut info);
            PgWireError::UserError(info)
        }
        other => other,
    }
}

/// Errors from DataFusion reach us through datafusion-postgres as internal
/// errors (XX000) carrying DataFusion's message; give them the SQLSTATE a
/// PostgreSQL client expects from the message's category.
fn refine_code(info: &mut ErrorInfo) {
    if info.code != "XX000" {
        return;
    }
    let m = info.message.as_str();
    let code = if m.contains("Error during planning: table") && m.contains("not found") {
        "42P01"
    } else if m.contains("Schema error: No field named") {
        "42703"
    } else if m.contains("SQL error: ParserError") || m.contains("sql parser error") {
        "42601"
    } else if m.contains("This feature is not implemented") {
        "0A000"
    } else if m.contains("Divide by zero") {
        "22012"
    } else if m.contains("Cast error") || m.contains("Cannot cast") {
        "22P02"
    } else if m.contains("Error during planning") {
        "42804"
    } else {
        return;
    };
    info.code = code.to_string();
}

/// SQLSTATE for errors coming back from DataFusion through
/// datafusion-postgres (wrapped as API errors).
fn sqlstate_of(e: &PgWireError) -> &'static str {
    if let PgWireError::ApiError(inner) = e
        && let Some(df) = inner.downcast_ref::<datafusion::error::DataFusionError>()
    {
        return crate::engine::datafusion_sqlstate(df);
    }
    "XX000"
}

/// Accept pgwire connections until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => {
                    let h = Arc::clone(&handlers);
                    tasks.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, h).await {
                            debug!(error = %e, "pg connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "pg accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::{error_position, pg_float, pg_float4, pg_timestamp, trim_fraction, trim_numeric};

    #[test]
    fn unconstrained_numerics_print_without_the_fixed_scale() {
        assert_eq!(trim_numeric("21.0000000000").as_deref(), Some("21"));
        assert_eq!(trim_numeric("-2.5000000000").as_deref(), Some("-2.5"));
        assert_eq!(
            trim_numeric("7.12345678901234").as_deref(),
            Some("7.12345678901234")
        );
        assert_eq!(trim_numeric("0.0000000000").as_deref(), Some("0"));
        // numeric(p, s) with s < 10 keeps its scale, as PostgreSQL prints it.
        assert_eq!(trim_numeric("9.90"), None);
        assert_eq!(trim_numeric("12"), None);
        assert_eq!(trim_numeric("NaN"), None);
    }

    #[test]
    fn syntax_error_positions_count_characters() {
        let m = "syntax error: sql parser error: Expected: end of statement, found: x at Line: 2, Column: 5";
        assert_eq!(error_position("SELECT 1;\nSELX x", m), Some(15));
        assert_eq!(error_position("SELECT 1", "no position"), None);
    }

    #[test]
    fn timestamps_print_as_postgresql_does() {
        assert_eq!(
            trim_fraction("2026-01-02 03:04:07.000000+00"),
            "2026-01-02 03:04:07+00"
        );
        assert_eq!(
            trim_fraction("2026-01-02 03:04:07.678000"),
            "2026-01-02 03:04:07.678"
        );
        assert_eq!(trim_fraction("2026-01-02 03:04:07"), "2026-01-02 03:04:07");
        assert_eq!(
            pg_timestamp(1_767_323_047_500_000, true).as_deref(),
            Some("2026-01-02 03:04:07.5+00")
        );
        assert_eq!(
            pg_timestamp(1_767_323_047_000_000, false).as_deref(),
            Some("2026-01-02 03:04:07")
        );
    }

    #[test]
    fn floats_print_as_postgresql_does() {
        for (x, s) in [
            (2.0, "2"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(pg_float(x), s, "{x}");
        }
        for (x, s) in [
            (0.1f32, "0.1"),
            (2.0, "2"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1.0 / 3.0, "0.33333334"),
        ] {
            assert_eq!(pg_float4(x), s, "{x}");
        }
    }
}
