//! The PostgreSQL wire listener (pgwire). Simple-protocol queries are split
//! and parsed by `engine::parse`; eddy's own statements run in the engine,
//! the rest go to datafusion-postgres' `DfSessionService` over the same
//! DataFusion session (which also answers the extended protocol, SET/SHOW,
//! transactions as no-ops, and the pg_catalog queries psql sends).
//! Errors carry SQLSTATE codes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, QueryResponse, Response, Tag,
};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::engine::{CopyFormat, Engine, EngineError, Output};

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

pub struct Handlers {
    simple: Arc<Simple>,
    df: Arc<DfSessionService>,
    startup: Arc<Startup>,
}

impl Handlers {
    pub fn new(engine: Arc<Engine>, allow_remote: bool) -> Handlers {
        let df = Arc::new(DfSessionService::new(engine.session()));
        Handlers {
            simple: Arc::new(Simple {
                engine,
                df: Arc::clone(&df),
            }),
            df,
            startup: Arc::new(Startup { allow_remote }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.simple)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.df)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// No passwords: loopback connections are trusted, others refused unless
/// the server was started with `--pg-allow-remote`.
pub struct Startup {
    allow_remote: bool,
}

#[async_trait]
impl NoopStartupHandler for Startup {
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

fn rows(schema: &SchemaRef, batches: Vec<RecordBatch>) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        schema,
        &Format::UnifiedText,
        None,
    )?);
    let mut out = Vec::new();
    for b in batches {
        out.extend(encode_recordbatch(Arc::clone(&fields), b));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(out),
    )))
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
fn pg_text_floats(mut resp: QueryResponse) -> QueryResponse {
    use pgwire::api::Type;
    use pgwire::api::results::FieldFormat;
    let kinds: Vec<Option<bool>> = resp
        .row_schema
        .iter()
        .map(|f| match (f.datatype(), f.format()) {
            (t, FieldFormat::Text) if *t == Type::FLOAT8 => Some(true),
            (t, FieldFormat::Text) if *t == Type::FLOAT4 => Some(false),
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

fn rewrite_floats(mut row: DataRow, kinds: &[Option<bool>]) -> DataRow {
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
            (Some(true), Some(t)) => t.parse::<f64>().ok().map(pg_float),
            (Some(false), Some(t)) => t.parse::<f32>().ok().map(pg_float4),
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

/// Floats as PostgreSQL prints them (COPY must be byte-identical): float
/// columns become text columns holding `pg_float` of each value.
fn pg_floats(batch: &RecordBatch) -> PgWireResult<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema};
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Float32 | DataType::Float64))
    {
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
            .map(pg_floats)
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
        for row in 0..b.num_rows() {
            for (col, f) in b.schema().fields().iter().enumerate() {
                encode_value(&mut enc, b.column(col), row, f, &fields[col])?;
            }
            data.push(Ok(enc.take_copy()));
        }
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
        let statements = crate::engine::parse(query).map_err(engine_error)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(statements.len());
        for stmt in statements {
            let result = match self.engine.execute(stmt).await {
                Ok(Output::Command(tag, n)) => {
                    let mut t = Tag::new(&tag);
                    if let Some(n) = n {
                        t = t.with_rows(n);
                    }
                    Ok(vec![Response::Execution(t)])
                }
                Ok(Output::Rows(schema, batches)) => rows(&schema, batches).map(|r| vec![r]),
                Ok(Output::CopyOut {
                    schema,
                    batches,
                    format,
                }) => copy_out(&schema, batches, format).map(|r| vec![r]),
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
                Err(e) => Err(engine_error(e)),
            };
            match result {
                Ok(rs) => out.extend(rs.into_iter().map(|r| match r {
                    Response::Query(q) => Response::Query(pg_text_floats(q)),
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
    use super::{pg_float, pg_float4};

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
