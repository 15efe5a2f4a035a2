//! Connections: who may connect (no passwords: loopback is trusted, others
//! only with `--pg-allow-remote`), their registration for CancelRequest,
//! and the cancel of a query's result rows while they stream. Knows
//! nothing of statements or values.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::future::FutureExt;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::results::QueryResponse;
use pgwire::api::{ClientInfo, ConnectionHandle, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::error::user_error;

/// No passwords: loopback connections are trusted, others refused unless
/// the server was started with `--pg-allow-remote`.
pub struct Startup {
    pub(super) allow_remote: bool,
    pub(super) connections: Arc<ConnectionManager>,
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
            // FATAL, not ERROR: pgwire closes the connection only after a
            // FATAL error; an ERROR here left the session open for queries.
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                format!(
                    "connections from {} are refused: only loopback clients are trusted without authentication (start eddy with --pg-allow-remote)",
                    client.socket_addr().ip()
                ),
            ))));
        }
        Ok(())
    }
}

/// Rows that stop with 57014 when a CancelRequest (psql's Ctrl-C) arrives
/// while they stream: DataFusion runs a query as its rows are pulled, after
/// `do_query` returned, and pgwire's own cancel covers `do_query` only. The
/// connection's cancel signal is taken at the first pull, once pgwire's has
/// been released.
pub(super) fn cancellable(client: &impl ClientInfo, mut resp: QueryResponse) -> QueryResponse {
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
