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
//! - a Query or Parse whose header declares more than `max_query_bytes`
//!   gets FATAL 54000 as soon as the header arrives, and the connection
//!   closes, so the message is never buffered whole;
//! - with `--pg-tls-required`, a client that did not negotiate TLS gets
//!   PostgreSQL's FATAL 28000 "no encryption" at its startup message.

use std::cell::Cell;
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use datafusion_postgres::pgwire;
use futures::StreamExt;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{
    PgWireMessageServerCodec, negotiate_tls, process_error, process_message,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
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

/// Why a connection is closed before its message is decoded.
enum Refused {
    /// Not decodable (a decoder panic included): 08P01.
    Malformed(String),
    /// A Query or Parse longer than the query limit allows, refused from
    /// its header (54000), before pgwire buffers the rest.
    TooLarge { bytes: usize, limit: usize },
}

/// The declared length of the message starting `buf` if it is a Query or
/// Parse whose query text cannot fit in `limit` bytes. Parse also carries
/// a statement name and up to 65,535 parameter types.
fn oversized(buf: &[u8], limit: usize) -> Option<usize> {
    let (&tag, rest) = buf.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let allowed = match tag {
        b'Q' => limit + 5,
        b'P' => limit + 4 + 2 * 64 * 1024 + 2 + 65_535 * 4,
        _ => return None,
    };
    (len > allowed).then_some(len)
}

/// The next message from `socket`: None at its end, Err if it is refused.
async fn next_message<T, S>(
    socket: &mut Framed<T, PgWireMessageServerCodec<S>>,
    limit: usize,
) -> Option<Result<PgWireFrontendMessage, Refused>>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    poll_fn(|cx| {
        DECODING.with(|d| d.set(true));
        let polled = catch_unwind(AssertUnwindSafe(|| socket.poll_next_unpin(cx)));
        DECODING.with(|d| d.set(false));
        match polled {
            Ok(Poll::Ready(Some(Err(e)))) => {
                Poll::Ready(Some(Err(Refused::Malformed(e.to_string()))))
            }
            Ok(Poll::Ready(Some(Ok(m)))) => Poll::Ready(Some(Ok(m))),
            Ok(Poll::Ready(None)) => Poll::Ready(None),
            // Part of a message has arrived: its header says how long it
            // will be. (A startup message has no tag: its state is not
            // checked.)
            Ok(Poll::Pending) => match socket.state() {
                PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress => Poll::Pending,
                _ => match oversized(socket.read_buffer(), limit) {
                    Some(bytes) => Poll::Ready(Some(Err(Refused::TooLarge { bytes, limit }))),
                    None => Poll::Pending,
                },
            },
            Err(_) => Poll::Ready(Some(Err(Refused::Malformed(
                "a message shorter than its fields".into(),
            )))),
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
    let limit = handlers.max_query_bytes();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                m = next_message(&mut socket, limit) => m,
            }
        } else {
            next_message(&mut socket, limit).await
        };
        let msg = match msg {
            None => break,
            Some(Ok(PgWireFrontendMessage::Terminate(_))) => break,
            Some(Ok(m)) => m,
            Some(Err(Refused::Malformed(why))) => {
                debug!(peer = %socket.socket_addr(), %why, "closing pg connection: malformed message");
                let e = fatal("08P01", format!("invalid frontend message: {why}"));
                let _ = process_error(&mut socket, e, false).await;
                break;
            }
            Some(Err(Refused::TooLarge { bytes, limit })) => {
                debug!(peer = %socket.socket_addr(), bytes, "closing pg connection: query too large");
                let e = fatal(
                    "54000",
                    format!(
                        "a query message of {bytes} bytes is longer than the limit of {limit} bytes (max_query_bytes)"
                    ),
                );
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
