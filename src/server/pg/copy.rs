//! COPY on the wire: FROM STDIN (the connection's CopyData collected in
//! its session extensions, bounded, and loaded by the engine at CopyDone,
//! so an aborted COPY writes nothing) and TO STDOUT (text, csv, binary).
//! Parsing the COPY data and writing rows is the engine's; how values
//! print is `text`'s.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, stream};
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, Response, Tag,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};

use super::error::{engine_error, user_error};
use super::text::pg_text_columns;
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

/// One COPY data message per row of `batch`.
pub(super) fn copy_rows(
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

pub(super) fn copy_out(
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
    // The result's column names (PostgreSQL's, from the statement) for
    // the header; the types of the values as sent.
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
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
