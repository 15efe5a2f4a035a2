//! One pgwire connection from accept to close: TLS negotiation (SSLRequest
//! or PostgreSQL 17's direct TLS), the startup timeout, the refusal of
//! unencrypted clients when TLS is required, and the message loop that
//! hands each decoded message to pgwire's dispatcher.
//!
//! It is pgwire's own `process_socket` loop with two differences:
//!
//! - a frontend message pgwire cannot decode, or whose decoder panics
//!   (pgwire 0.41 reads Bind, Parse and others with `bytes::Buf::get_*`,
//!   which panic on a message shorter than its fields), closes the
//!   connection with FATAL 08P01, as PostgreSQL answers a malformed
//!   message. The panic is caught around the one poll that decodes; the
//!   guarded thread's panic message goes to the debug log, not stderr
//!   (`quiet_guarded_panics`).
//! - with `--pg-tls-required`, a client that did not negotiate TLS gets
//!   PostgreSQL's FATAL 28000 "no encryption" at its startup message.

use std::cell::Cell;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use datafusion_postgres::pgwire;
use futures::{Stream, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::Handlers;

/// As pgwire: a client has a minute to start up and authenticate.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS on the pgwire listener.
#[derive(Clone)]
pub struct PgTls {
    pub acceptor: TlsAcceptor,
    /// Refuse clients that did not negotiate TLS.
    pub required: bool,
}

thread_local! {
    /// Set while this thread polls pgwire's decoder.
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Keep the default panic report for every panic but those caught around
/// pgwire's decoder (they are a client's malformed message, logged at
/// debug). Installed once, by the first listener.
pub fn quiet_guarded_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DECODING.with(Cell::get) {
                debug!(panic = %info, "pgwire decoder panicked on a client's message");
            } else {
                previous(info);
            }
        }));
    });
}

/// The next message from `socket`: None at its end, Err if it could not
/// be decoded (a decoder panic included).
async fn next_message<S>(socket: &mut S) -> Option<Result<PgWireFrontendMessage, String>>
where
    S: Stream<Item = Result<PgWireFrontendMessage, PgWireError>> + Unpin,
{
    poll_fn(|cx| {
        DECODING.with(|d| d.set(true));
        let polled = catch_unwind(AssertUnwindSafe(|| socket.poll_next_unpin(cx)));
        DECODING.with(|d| d.set(false));
        match polled {
            Ok(Poll::Ready(Some(Err(e)))) => Poll::Ready(Some(Err(e.to_string()))),
            Ok(Poll::Ready(Some(Ok(m)))) => Poll::Ready(Some(Ok(m))),
            Ok(Poll::Ready(None)) => Poll::Ready(None),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Some(Err("a message shorter than its fields".into()))),
        }
    })
    .await
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

/// Serve one connection until it ends.
pub(super) async fn serve(
    tcp: TcpStream,
    tls: Option<PgTls>,
    handlers: Arc<Handlers>,
) -> std::io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        s = negotiate_tls(tcp, acceptor) => s?,
    };
    // None: direct TLS from a client while none is configured.
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let tls_required = tls.as_ref().is_some_and(|t| t.required);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                m = next_message(&mut socket) => m,
            }
        } else {
            next_message(&mut socket).await
        };
        let msg = match msg {
            None => break,
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => break,
            Some(Ok(m)) => m,
            Some(Err(why)) => {
                debug!(peer = %socket.socket_addr(), %why, "closing pg connection: malformed message");
                let e = fatal("08P01", format!("invalid frontend message: {why}"));
                let _ = process_error(&mut socket, e, false).await;
                break;
            }
        };
        if let PgWireFrontendMessage::Startup(s) = &msg
            && tls_required
            && !socket.is_secure()
        {
            let param = |k: &str| s.parameters.get(k).cloned().unwrap_or_default();
            let e = fatal(
                "28000",
                format!(
                    "no pg_hba.conf entry for host \"{}\", user \"{}\", database \"{}\", no encryption",
                    socket.socket_addr().ip(),
                    param("user"),
                    param("database"),
                ),
            );
            let _ = process_error(&mut socket, e, false).await;
            break;
        }
        let extended_protocol = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            msg,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_protocol).await?;
        }
    }
    Ok(())
}
