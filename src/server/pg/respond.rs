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
    let df = engine
        .session()
        .execute_logical_plan(plan)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
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
pub(super) fn session_command<C>(client: &C, cmd: SessionCommand) -> PgWireResult<Response>
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
