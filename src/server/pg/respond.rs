//! The response for what one of the engine's own statements produced
//! (`Output`), and the session commands (DEALLOCATE, DISCARD) run on the
//! connection's statement store; shared by both protocols. Knows the
//! shape of an `Output`, not how a statement was parsed or run.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::dataframe::DataFrame;
use datafusion_postgres::pgwire;
use futures::{StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::PgWireError;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use super::copy::{copy_out, start_copy_in};
use super::encode;
use super::error::user_error;
use crate::engine::{Output, SessionCommand};

/// The response for what one of the engine's own statements produced.
pub(super) fn respond(client: &impl ClientInfo, output: Output) -> PgWireResult<Response> {
    match output {
        Output::CopyIn(copy) => start_copy_in(client, copy),
        Output::Command(tag, n) => {
            let mut t = Tag::new(&tag);
            // PostgreSQL's INSERT tag carries an OID (0): `INSERT 0 n`.
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
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
        Output::Rows { .. } => Err(user_error(
            "XX000",
            "query rows reached the wrong path".into(),
        )),
        Output::PassThrough(sql) | Output::CatalogQuery(sql) => Err(user_error(
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

/// The rows of a query, its columns named `names` (PostgreSQL's, which
/// may repeat), encoded as the client asked (`format`) with the session's
/// output settings (DateStyle, IntervalStyle, …).
pub(super) async fn rows(
    client: &impl ClientInfo,
    df: DataFrame,
    names: &[String],
    format: &Format,
) -> PgWireResult<Response> {
    let _ = client;
    let fields = Arc::new(row_fields(df.schema().as_arrow(), names, format)?);
    let batches = df
        .execute_stream()
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let encoder_fields = Arc::clone(&fields);
    let rows = batches
        .map(move |batch| {
            let rows: Vec<PgWireResult<DataRow>> =
                match batch.map_err(|e| PgWireError::ApiError(Box::new(e))) {
                    Ok(b) => match encode::data_rows(&b, &encoder_fields) {
                        Ok(rows) => rows.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e)],
                    },
                    Err(e) => vec![Err(e)],
                };
            stream::iter(rows)
        })
        .flatten();
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

/// The rows a fast-path peek found (`engine::peek`), encoded as `rows`
/// encodes a query's.
pub(super) fn peeked_rows(
    found: crate::engine::peek::Peeked,
    format: &Format,
) -> PgWireResult<Response> {
    let fields = Arc::new(row_fields(&found.schema, &found.names, format)?);
    let rows = encode::data_rows(&found.batch, &fields)?;
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows.into_iter().map(Ok)),
    )))
}

/// A query datafusion-postgres plans (one reading PostgreSQL's catalogs,
/// rewritten by its compatibility rules), run in the engine's session and
/// encoded as every other result.
pub(super) async fn catalog_query(
    client: &(impl ClientInfo + Unpin + Send + Sync),
    parser: &datafusion_postgres::Parser,
    engine: &crate::engine::Engine,
    sql: &str,
) -> PgWireResult<Response> {
    use pgwire::api::stmt::QueryParser;
    let Some((_, Some((ast, plan)))) = parser.parse_sql(client, sql, &[]).await? else {
        return Ok(Response::EmptyQuery);
    };
    let names = crate::engine::column_names(&ast, plan.schema().as_arrow());
    let df = engine.runnable(plan).map_err(super::error::engine_error)?;
    rows(client, df, &names, &Format::UnifiedText).await
}

/// The row description of a query result whose columns are `names`.
pub(super) fn row_fields(
    schema: &Schema,
    names: &[String],
    format: &Format,
) -> PgWireResult<Vec<FieldInfo>> {
    encode::fields(schema, names, format)
}

/// DEALLOCATE and DISCARD on the connection's statement and portal store.
///
/// pgwire's store cannot list its statements, so `DEALLOCATE ALL` and
/// `DISCARD ALL` close every portal but leave named statements stored:
/// drivers that send them (psycopg 3 after DDL, SQLAlchemy's pool reset)
/// parse again under names of their own choosing, and a Parse replaces a
/// statement of the same name.
pub(super) async fn session_command<C>(
    client: &C,
    engine: &crate::engine::Engine,
    cmd: SessionCommand,
    params: Option<datafusion::common::ParamValues>,
) -> PgWireResult<Response>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let store = client.portal_store();
    match cmd {
        SessionCommand::Declare { name, query, hold } => {
            let response = declare(client, engine, name.clone(), query, params).await?;
            if !hold {
                client
                    .session_extensions()
                    .get_or_insert_with(BlockCursors::default)
                    .add(name);
            }
            Ok(response)
        }
        SessionCommand::Fetch { forward: false, .. } => {
            Err(user_error("55000", "cursor can only scan forward".into()))
        }
        SessionCommand::Fetch { name, count, .. } => {
            let cursor = cursors(client)?
                .get_portal(&name)
                .and_then(|p| p.value().cloned())
                .ok_or_else(|| user_error("34000", format!("cursor \"{name}\" does not exist")))?;
            let fetched = cursor.fetch(count.unwrap_or(0)).await?;
            let mut response = fetched.response;
            // An exhausted cursor still describes its columns.
            if response.row_schema().is_empty()
                && let Some((ast, plan)) = &cursor.statement.statement.1
            {
                let schema = plan.schema().as_arrow();
                let names = crate::engine::column_names(ast, schema);
                let fields = row_fields(schema, &names, &Format::UnifiedText)?;
                response = QueryResponse::new(Arc::new(fields), stream::empty());
            }
            response.set_command_tag("FETCH");
            Ok(Response::Query(response))
        }
        SessionCommand::Close(name) => {
            match name {
                None => store.clear_portals(),
                Some(name) => {
                    if cursors(client)?.get_portal(&name).is_none() {
                        return Err(user_error(
                            "34000",
                            format!("cursor \"{name}\" does not exist"),
                        ));
                    }
                    store.rm_portal(&name);
                }
            }
            Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
        }
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

/// The statements portals hold (the extended protocol's `Prepared`).
type Prepared = (
    String,
    Option<(
        datafusion::sql::sqlparser::ast::Statement,
        datafusion::logical_expr::LogicalPlan,
    )>,
);

/// The connection's portal store, where cursors are portals (so a
/// Describe of the cursor's name describes its rows, as psycopg's named
/// cursors ask).
fn cursors<C>(client: &C) -> PgWireResult<&pgwire::api::store::MemPortalStore<Prepared>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<pgwire::api::store::MemPortalStore<Prepared>>()
        .ok_or_else(|| user_error("XX000", "cursors need the connection's portal store".into()))
}

/// DECLARE: the query planned by the engine (its parameters bound), its
/// rows started as a portal named after the cursor; FETCH pulls them.
async fn declare<C>(
    client: &C,
    engine: &crate::engine::Engine,
    name: String,
    query: Box<datafusion::sql::sqlparser::ast::Query>,
    params: Option<datafusion::common::ParamValues>,
) -> PgWireResult<Response>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    use super::error::engine_error;
    let api = |e: datafusion::error::DataFusionError| PgWireError::ApiError(Box::new(e));
    let store = cursors(client)?;
    if store.get_portal(&name).is_some() {
        return Err(user_error(
            "42P03",
            format!("cursor \"{name}\" already exists"),
        ));
    }
    let stmt = datafusion::sql::sqlparser::ast::Statement::Query(query);
    let text = stmt.to_string();
    let (ast, plan) = engine.plan_query(stmt).await.map_err(engine_error)?;
    let bound = match params {
        Some(p) => plan.clone().replace_params_with_values(&p).map_err(api)?,
        None => plan.clone(),
    };
    let names = crate::engine::column_names(&ast, bound.schema().as_arrow());
    let df = engine.runnable(bound).map_err(engine_error)?;
    let Response::Query(rows) = rows(client, df, &names, &Format::UnifiedText).await? else {
        return Err(user_error(
            "XX000",
            "a cursor's query returned no rows".into(),
        ));
    };
    let stored = Arc::new(pgwire::api::stmt::StoredStatement::new(
        name.clone(),
        (text, Some((ast, plan))),
        vec![],
    ));
    let portal = pgwire::api::portal::Portal::new_cursor(name, stored);
    portal.start(rows).await;
    store.put_portal(Arc::new(portal));
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

/// The cursors declared without HOLD, which end with their transaction
/// block (COMMIT or ROLLBACK closes them, as in PostgreSQL).
#[derive(Default)]
pub(super) struct BlockCursors(std::sync::Mutex<Vec<String>>);

impl BlockCursors {
    fn add(&self, name: String) {
        if let Ok(mut names) = self.0.lock() {
            names.push(name);
        }
    }
}

/// Close the cursors of the transaction block that ends.
pub(super) fn close_block_cursors<C>(client: &C)
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let Some(cursors) = client.session_extensions().get::<BlockCursors>() else {
        return;
    };
    let names = cursors
        .0
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default();
    for name in names {
        client.portal_store().rm_portal(&name);
    }
}

/// Run `statement` with the engine's NOTICEs (a view's backfill progress)
/// going to `client` as they come, before the statement's own answer.
pub(super) async fn with_notices<C, T>(
    client: &mut C,
    statement: impl std::future::Future<Output = T>,
) -> T
where
    C: futures::Sink<pgwire::messages::PgWireBackendMessage> + Unpin,
{
    use futures::SinkExt;
    let notice = |msg: String| {
        pgwire::messages::PgWireBackendMessage::NoticeResponse(
            pgwire::error::ErrorInfo::new("NOTICE".into(), "00000".into(), msg).into(),
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let statement = crate::engine::NOTICES.scope(tx, statement);
    tokio::pin!(statement);
    loop {
        tokio::select! {
            out = &mut statement => {
                while let Ok(msg) = rx.try_recv() {
                    let _ = client.send(notice(msg)).await;
                }
                return out;
            }
            Some(msg) = rx.recv() => {
                // A client gone is the statement's to find out.
                let _ = client.send(notice(msg)).await;
            }
        }
    }
}
