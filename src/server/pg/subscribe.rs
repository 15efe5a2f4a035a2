//! SUBSCRIBE's COPY stream, written and flushed by hand as the relation
//! changes. Knows the subscription the engine hands over and the COPY
//! messages; not how the subscription is taken or how values print.

use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::results::{Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};

use super::encode::{CopyStyle, copy_rows};
use super::error::user_error;

/// SUBSCRIBE, as Materialize streams it: over COPY (text), rows of
/// `mz_timestamp` (milliseconds), `mz_diff` and the relation's columns;
/// first its contents (unless `WITH (SNAPSHOT = false)`), then each tick's
/// changes to it, sent and flushed as they happen (pgwire's own COPY path
/// flushes only at the end, which a subscription never reaches). Runs
/// until the client goes away (a send fails), stops reading for longer
/// than `stall` (its socket full: the changes it has not read are held
/// for it meanwhile; past that it is disconnected), or the engine stops.
pub(super) async fn subscribe<C>(
    client: &mut C,
    name: String,
    schema: SchemaRef,
    snapshot: bool,
    start: crate::dataflow::runtime::Subscription,
    engine: &crate::engine::Engine,
    sockets: &Arc<super::Sockets>,
) -> PgWireResult<Response>
where
    C: pgwire::api::ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use crate::dataflow::runtime::SubscriptionEnd;
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    let stall = std::time::Duration::from_millis(engine.limits().max_subscriber_stall_ms);
    let sockets_for_watch = sockets;
    let (peer, sockets) = (client.socket_addr(), Arc::clone(sockets));
    let close = move || sockets.close(&peer);
    let api = |e: datafusion::arrow::error::ArrowError| PgWireError::ApiError(Box::new(e));
    let mut fields = vec![
        Field::new("mz_timestamp", DataType::Int64, false),
        Field::new("mz_diff", DataType::Int64, false),
    ];
    fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
    let out_schema = Arc::new(Schema::new(fields));
    let rows = |batch: &RecordBatch, diffs: Vec<i64>, at: i64| -> PgWireResult<Vec<Bytes>> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![at; batch.num_rows()])),
            Arc::new(Int64Array::from(diffs)),
        ];
        cols.extend(batch.columns().iter().cloned());
        let batch = RecordBatch::try_new(Arc::clone(&out_schema), cols).map_err(api)?;
        copy_rows(&batch, CopyStyle::Text, &[])
    };
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            out_schema.fields().len() as i16,
            vec![0; out_schema.fields().len()],
        )))
        .await?;
    let mut sent = 0usize;
    let mut send = async |client: &mut C, lines: Vec<Bytes>| -> PgWireResult<()> {
        let write = async {
            for line in lines {
                client
                    .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
                    .await?;
                sent += 1;
            }
            client.flush().await?;
            Ok(())
        };
        tokio::time::timeout(stall, write).await.unwrap_or_else(|_| {
            Err(PgWireError::UserError(Box::new(
                pgwire::error::ErrorInfo::new(
                    "FATAL".into(),
                    "53000".into(),
                    format!(
                        "SUBSCRIBE client read nothing for {} ms (max_subscriber_stall_ms) and was disconnected",
                        stall.as_millis()
                    ),
                ),
            )))
        })
    };
    // A client that stopped reading is disconnected (its socket is full,
    // so not even the error could reach it).
    let mut close = Some(close);
    let mut stalled = |e: PgWireError| {
        if let PgWireError::UserError(info) = &e
            && info.code == "53000"
            && let Some(close) = close.take()
        {
            close();
        }
        e
    };
    if snapshot {
        let n = start.snapshot.num_rows();
        send(client, rows(&start.snapshot, vec![1; n], start.at_ms)?)
            .await
            .map_err(&mut stalled)?;
    }
    let mut start = start;
    let watched = Arc::clone(sockets_for_watch);
    let gone = watched.gone(&peer);
    tokio::pin!(gone);
    loop {
        let next = tokio::select! {
            next = start.next_change(&name) => next,
            // The client left: nothing to send to, nothing held for it.
            () = &mut gone => return Ok(Response::Execution(Tag::new("COPY").with_rows(sent))),
        };
        match next {
            Ok((batch, diffs, at)) => {
                let batch = crate::dataflow::with_schema(&batch, &schema)
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                send(client, rows(&batch, diffs, at)?)
                    .await
                    .map_err(&mut stalled)?;
            }
            Err(SubscriptionEnd::Removed) => {
                return Err(user_error(
                    "42P01",
                    format!("SUBSCRIBE ended: \"{name}\" was dropped or replaced"),
                ));
            }
            Err(SubscriptionEnd::Lagged(n)) => {
                return Err(user_error(
                    "53000",
                    format!("SUBSCRIBE to {name} fell {n} ticks behind and was stopped"),
                ));
            }
            Err(SubscriptionEnd::Closed) => break,
        }
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(sent)))
}
