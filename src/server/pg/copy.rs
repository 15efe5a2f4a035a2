//! COPY on the wire: FROM STDIN (the connection's CopyData collected in
//! its session extensions, bounded, and loaded by the engine at CopyDone,
//! so an aborted COPY writes nothing) and TO STDOUT (text, csv, binary).
//! Parsing the COPY data and writing rows is the engine's; how values
//! print is `encode`'s.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, stream};
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};

use super::encode::{CopyStyle, copy_binary_header, copy_binary_trailer, copy_rows};
use super::error::{engine_error, user_error};
use crate::engine::{CopyFormat, CopyIn, Engine};

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

/// The CopyInResponse that starts COPY … FROM STDIN, with the COPY
/// pending on the connection until its CopyDone or CopyFail.
pub(super) fn start_copy_in(client: &impl ClientInfo, copy: CopyIn) -> PgWireResult<Response> {
    let columns = copy.columns.len();
    let format = i8::from(copy.options.binary);
    let state = client
        .session_extensions()
        .get_or_insert_with(|| Mutex::new(None::<PendingCopy>));
    *state
        .lock()
        .map_err(|_| user_error("XX000", "COPY state poisoned".into()))? = Some(PendingCopy {
        copy,
        data: Vec::new(),
    });
    Ok(Response::CopyIn(CopyResponse::new(
        format,
        columns,
        stream::empty(),
    )))
}

fn take_copy(client: &impl ClientInfo) -> Option<PendingCopy> {
    client
        .session_extensions()
        .get::<CopyState>()
        .and_then(|s| s.lock().ok().and_then(|mut s| s.take()))
}

/// Loads COPY … FROM STDIN data.
pub struct CopyLoader {
    pub(super) engine: Arc<Engine>,
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
        // Inside a transaction block the rows wait for its COMMIT.
        let txn = super::block::transaction(client);
        let n = self
            .engine
            .copy_in(&p.copy, &p.data, txn.is_open().then_some(&txn))
            .await
            .map_err(|e| {
                super::block::failed(client);
                engine_error(e)
            })?;
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

/// COPY … TO STDOUT: the rows of `batches` in `format`, one CopyData
/// per row (binary COPY's header and trailer in messages of their own).
pub(super) fn copy_out(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: CopyFormat,
) -> PgWireResult<Response> {
    let types = schema
        .fields()
        .iter()
        .map(super::encode::pg_type)
        .collect::<PgWireResult<Vec<_>>>()?;
    let style = match format {
        CopyFormat::Text => CopyStyle::Text,
        CopyFormat::Csv { .. } => CopyStyle::Csv,
        CopyFormat::Binary => CopyStyle::Binary,
    };
    let mut data = Vec::new();
    if let CopyFormat::Csv { header: true } = format {
        // The result's column names (PostgreSQL's, from the statement).
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut line = names.join(",");
        line.push('\n');
        data.push(Bytes::from(line));
    }
    if style == CopyStyle::Binary {
        data.push(copy_binary_header());
    }
    for b in &batches {
        data.extend(copy_rows(b, style, &types)?);
    }
    if style == CopyStyle::Binary {
        data.push(copy_binary_trailer());
    }
    let code = i8::from(style == CopyStyle::Binary);
    Ok(Response::CopyOut(CopyResponse::new(
        code,
        types.len(),
        stream::iter(data.into_iter().map(|d| Ok(CopyData::new(d)))),
    )))
}
