//! The PostgreSQL wire listener (pgwire): the accept loop (`serve`) and
//! the handler set pgwire calls for each connection (`Handlers`). Simple-
//! protocol queries are split and parsed by `engine::parse`; eddy's own
//! statements run in the engine, the rest go to datafusion-postgres'
//! `DfSessionService` over the same DataFusion session (which also answers
//! the extended protocol, SET/SHOW, the replies to BEGIN/COMMIT/ROLLBACK
//! — whose work `block` does first — and the pg_catalog queries psql
//! sends). Errors carry SQLSTATE codes.
//!
//! One concern per file:
//!
//! - `startup`: who may connect and as whom (trust, md5, SCRAM-SHA-256),
//!   the connection registry and
//!   the cancel of a running query's rows;
//! - `simple`: the simple query protocol;
//! - `extended`: the extended protocol (Parse/Bind/Execute);
//! - `respond`: the response for what an engine statement produced, shared
//!   by both protocols;
//! - `block`: transaction blocks (what BEGIN … COMMIT makes of a
//!   statement; `engine::txn` holds the writes);
//! - `copy`: COPY … FROM STDIN (collect, then load) and COPY … TO STDOUT;
//! - `subscribe`: SUBSCRIBE's COPY stream;
//! - `encode`: the one value encoder (query rows text and binary, COPY,
//!   SUBSCRIBE), values as PostgreSQL prints and sends them;
//! - `error`: SQLSTATEs and error positions.
//!
//! This file wires them together and owns the sockets; it must not know
//! how a statement is run or a value printed.

mod block;
mod connection;
mod copy;
mod encode;
mod error;
mod extended;
mod respond;
mod simple;
mod startup;
mod subscribe;

use std::sync::Arc;

use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire;
use pgwire::api::ConnectionManager;
use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::engine::Engine;
use copy::CopyLoader;
use extended::{Extended, PreparedParser};
use simple::Simple;
use startup::{Login, Startup};

pub use connection::PgTls;
pub use startup::PgAuth;

pub use encode::{pg_float, pg_float4};

/// PostgreSQL's text form of the value at `row` of `a` (None for NULL):
/// the encoder query results, COPY and SUBSCRIBE use, for the console.
pub fn text_value(
    a: &dyn datafusion::arrow::array::Array,
    row: usize,
) -> Result<Option<String>, String> {
    if a.is_null(row) {
        return Ok(None);
    }
    let mut out = bytes::BytesMut::new();
    encode::text(&mut out, a, row).map_err(|e| e.to_string())?;
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

/// The name of the PostgreSQL type a column is sent as (`int8`, `text`).
pub fn type_name(f: &Arc<datafusion::arrow::datatypes::Field>) -> String {
    encode::pg_type(f).map_or_else(|_| "unknown".into(), |t| t.name().to_string())
}

/// An engine error as a client gets it: (SQLSTATE, message, hint).
pub fn describe_error(e: crate::engine::EngineError) -> (String, String, Option<String>) {
    match error::engine_error(e) {
        pgwire::error::PgWireError::UserError(info) => (info.code, info.message, info.hint),
        other => ("XX000".into(), other.to_string(), None),
    }
}

/// The handlers pgwire calls for a connection, over one engine and one
/// DataFusion session. `Handlers::new` makes the server's set;
/// `for_connection` gives each connection its own startup (a password
/// exchange's state) and shares the rest.
pub struct Handlers {
    simple: Arc<Simple>,
    extended: Arc<Extended>,
    startup: Arc<Startup>,
    copy: Arc<CopyLoader>,
    cancel: Arc<DefaultCancelHandler>,
    sockets: Arc<Sockets>,
    connections: Arc<ConnectionManager>,
    login: Arc<Login>,
    allow_remote: bool,
}

/// The open connections by peer address, each with a way to close it from
/// inside a handler (a SUBSCRIBE client that stopped reading: its socket
/// is full, so not even an error message could reach it).
/// `socket` and a duplicate of its descriptor to watch it by (None if the
/// descriptor cannot be duplicated: the connection is served unwatched).
fn with_watch(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, Option<tokio::net::TcpStream>)> {
    let std = socket.into_std()?;
    let watch = std
        .try_clone()
        .ok()
        .and_then(|d| tokio::net::TcpStream::from_std(d).ok());
    Ok((tokio::net::TcpStream::from_std(std)?, watch))
}

/// An open connection: how to close it, and its watched descriptor.
type Open = (Arc<Notify>, Option<Arc<tokio::net::TcpStream>>);

/// A second handle on each socket (a duplicate of its descriptor) lets a
/// SUBSCRIBE notice its client leaving while pgwire, busy running the
/// handler, reads nothing from the socket.
#[derive(Default)]
pub(super) struct Sockets {
    open: std::sync::Mutex<std::collections::HashMap<SocketAddr, Open>>,
}

impl Sockets {
    fn register(&self, peer: SocketAddr, watch: Option<tokio::net::TcpStream>) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut open) = self.open.lock() {
            open.insert(peer, (Arc::clone(&n), watch.map(Arc::new)));
        }
        n
    }

    /// Resolves when the client at `peer` has closed its connection or
    /// sent Terminate; never when it cannot be watched. What the client
    /// sent meanwhile stays unread, for pgwire after the handler; once
    /// something waits there the socket stays readable, so the closing is
    /// then looked for twice a second (the poller's read-closed flag).
    pub(super) async fn gone(&self, peer: &SocketAddr) {
        let watch = self
            .open
            .lock()
            .ok()
            .and_then(|o| o.get(peer).and_then(|(_, w)| w.clone()));
        let Some(w) = watch else {
            return std::future::pending().await;
        };
        loop {
            let Ok(ready) = w.ready(tokio::io::Interest::READABLE).await else {
                return;
            };
            if ready.is_read_closed() || ready.is_error() {
                return;
            }
            // A whole Terminate message, not an 'X' that may be a byte
            // inside a message pgwire has read only part of.
            let mut b = [0u8; 5];
            match w.peek(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(5) if b == [b'X', 0, 0, 0, 4] => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    }

    fn unregister(&self, peer: &SocketAddr) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(peer);
        }
    }

    /// Close the connection from `peer` (its task ends at once).
    pub(super) fn close(&self, peer: &SocketAddr) {
        if let Some(n) = self
            .open
            .lock()
            .ok()
            .and_then(|o| o.get(peer).map(|(n, _)| Arc::clone(n)))
        {
            n.notify_one();
        }
    }
}

impl Handlers {
    pub fn new(engine: Arc<Engine>, auth: PgAuth, allow_remote: bool) -> Handlers {
        let df = Arc::new(DfSessionService::new(engine.session()));
        let connections = Arc::new(ConnectionManager::new());
        let sockets = Arc::new(Sockets::default());
        let login = Arc::new(Login {
            roles: Arc::clone(engine.roles()),
            method: auth,
        });
        Handlers {
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
            simple: Arc::new(Simple {
                engine: Arc::clone(&engine),
                df: Arc::clone(&df),
                sockets: Arc::clone(&sockets),
                login: Arc::clone(&login),
            }),
            extended: Arc::new(Extended {
                parser: Arc::new(PreparedParser {
                    engine: Arc::clone(&engine),
                    df: ExtendedQueryHandler::query_parser(&*df),
                }),
                df,
                sockets: Arc::clone(&sockets),
                login: Arc::clone(&login),
            }),
            sockets,
            startup: Arc::new(Startup::new(
                auth,
                engine.roles(),
                &connections,
                allow_remote,
            )),
            connections,
            login,
            allow_remote,
            copy: Arc::new(CopyLoader { engine }),
        }
    }

    /// The longest query string the engine accepts.
    fn max_query_bytes(&self) -> usize {
        self.simple.engine.limits().max_query_bytes
    }

    /// The handlers for one new connection: its own startup state, the
    /// rest shared.
    fn for_connection(&self) -> Handlers {
        Handlers {
            simple: Arc::clone(&self.simple),
            extended: Arc::clone(&self.extended),
            startup: Arc::new(Startup::new(
                self.login.method,
                &self.login.roles,
                &self.connections,
                self.allow_remote,
            )),
            copy: Arc::clone(&self.copy),
            cancel: Arc::clone(&self.cancel),
            sockets: Arc::clone(&self.sockets),
            connections: Arc::clone(&self.connections),
            login: Arc::clone(&self.login),
            allow_remote: self.allow_remote,
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

/// Accept pgwire connections until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<PgTls>,
    mut stop: watch::Receiver<bool>,
) {
    connection::quiet_guarded_panics();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let h = Arc::new(handlers.for_connection());
                    let (socket, watch) = match with_watch(socket) {
                        Ok(w) => w,
                        Err(e) => {
                            warn!(error = %e, %peer, "pg connection dropped: its socket could not be set up");
                            continue;
                        }
                    };
                    let closed = handlers.sockets.register(peer, watch);
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        let _open = crate::metrics::connected("pg");
                        let sockets = Arc::clone(&h.sockets);
                        // A panic in a handler (a bug) ends this one
                        // connection: caught here, so the socket and its
                        // watched duplicate are closed and the client sees
                        // the end instead of waiting forever.
                        let served = std::panic::AssertUnwindSafe(connection::serve(socket, tls, h));
                        tokio::select! {
                            r = futures::FutureExt::catch_unwind(served) => match r {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => debug!(error = %e, "pg connection ended with an error"),
                                Err(_) => tracing::error!(%peer, "pg connection closed: a statement panicked (a bug; the panic is reported above)"),
                            },
                            _ = closed.notified() => debug!(%peer, "pg connection closed by the server"),
                        }
                        sockets.unregister(&peer);
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
    // End the connections. A task busy in a long computation ends at its
    // next await; shutdown does not wait for it past a bound (the log is
    // closed after this, and the process exits).
    tasks.abort_all();
    let ended = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(5), ended)
        .await
        .is_err()
    {
        warn!("connections still busy 5 s after shutdown began; not waiting for them");
        tasks.detach_all();
    }
}
