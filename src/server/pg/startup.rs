//! Connections: who may connect and as whom, their registration for
//! CancelRequest, and the cancel of a query's result rows while they
//! stream. Knows nothing of statements or values.
//!
//! Authentication is one of PostgreSQL's methods (`--pg-auth`):
//!
//! - `trust` (the default): no password. Loopback clients only, unless
//!   the server was started with `--pg-allow-remote`. A connection acts as
//!   the role it names when that role exists (its privileges apply, a
//!   NOLOGIN role is refused) and as a superuser otherwise, as eddy always
//!   has.
//! - `md5` and `scram-sha-256`: the role must exist, may log in and has a
//!   password (`CREATE ROLE … LOGIN PASSWORD '…'`); pgwire's own handlers
//!   run the exchanges, over the secrets in `auth::Roles`. Any address.
//!
//! Each connection gets its own [`Startup`]: pgwire's password handlers
//! keep the exchange's state in themselves.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::future::FutureExt;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::md5pass::Md5PasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::results::QueryResponse;
use pgwire::api::{ClientInfo, ConnectionHandle, ConnectionManager, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::error::user_error;
use crate::auth::{Hash, Role, Roles};

/// How pgwire clients prove who they are (PostgreSQL's method names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PgAuth {
    /// No password (loopback only unless `--pg-allow-remote`).
    #[default]
    Trust,
    /// PostgreSQL's md5 challenge.
    Md5,
    /// SCRAM-SHA-256 (what PostgreSQL uses by default since 14).
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

/// Who a connection's statements run as.
#[derive(Debug)]
pub struct Login {
    pub(super) roles: Arc<Roles>,
    pub(super) method: PgAuth,
}

impl Login {
    /// The role of the connection's user, as it is now (a REVOKE applies
    /// to sessions already open).
    pub(super) fn role(&self, client: &impl ClientInfo) -> Role {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .map(String::as_str)
            .unwrap_or("");
        match self.method {
            PgAuth::Trust => self.roles.trusted(user),
            _ => self.roles.get(user).unwrap_or_else(|| Role::nobody(user)),
        }
    }
}

/// The secrets pgwire's md5 and SCRAM handlers check against.
#[derive(Debug)]
pub struct Secrets {
    roles: Arc<Roles>,
    method: PgAuth,
}

#[async_trait]
impl AuthSource for Secrets {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or("");
        let (_, secret) = self
            .roles
            .login(user)
            .map_err(|e| fatal(e.sqlstate(), e.to_string()))?;
        let refused = || {
            fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            )
        };
        match self.method {
            PgAuth::Md5 => {
                let salt = crate::auth::random_bytes(4);
                let answer = secret.md5_answer(&salt);
                Ok(Password::new(Some(salt), answer.into_bytes()))
            }
            PgAuth::ScramSha256 => {
                let (salt, salted) = secret.scram(Hash::Sha256).ok_or_else(refused)?;
                Ok(Password::new(Some(salt), salted))
            }
            PgAuth::Trust => Err(refused()),
        }
    }
}

/// One connection's startup: trust, or a password exchange.
pub enum Startup {
    Trust(Trust),
    Md5(Md5PasswordAuthStartupHandler<Secrets, DefaultServerParameterProvider>),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

impl Startup {
    pub(super) fn new(
        method: PgAuth,
        roles: &Arc<Roles>,
        connections: &Arc<ConnectionManager>,
        allow_remote: bool,
    ) -> Startup {
        let params = Arc::new(DefaultServerParameterProvider::default());
        let secrets = Arc::new(Secrets {
            roles: Arc::clone(roles),
            method,
        });
        match method {
            PgAuth::Trust => Startup::Trust(Trust {
                allow_remote,
                connections: Arc::clone(connections),
                roles: Arc::clone(roles),
            }),
            PgAuth::Md5 => Startup::Md5(
                Md5PasswordAuthStartupHandler::new(secrets, params)
                    .with_connection_manager(Arc::clone(connections)),
            ),
            PgAuth::ScramSha256 => {
                let mut scram = ScramAuth::new(secrets);
                scram.set_iterations(crate::auth::ITERATIONS as usize);
                Startup::Scram(
                    SASLAuthStartupHandler::new(params)
                        .with_scram(scram)
                        .with_connection_manager(Arc::clone(connections)),
                )
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = match self {
            Startup::Trust(h) => h.on_startup(client, message).await,
            Startup::Md5(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => h.on_startup(client, message).await,
        };
        // pgwire names the SCRAM user (empty: PostgreSQL's clients send the
        // name at startup only); PostgreSQL names the role.
        result.map_err(|e| match e {
            PgWireError::InvalidPassword(_) => {
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                fatal(
                    "28P01",
                    format!("password authentication failed for user \"{user}\""),
                )
            }
            other => other,
        })
    }
}

/// Trust: loopback connections (or any with `--pg-allow-remote`), as the
/// role they name.
pub struct Trust {
    allow_remote: bool,
    connections: Arc<ConnectionManager>,
    roles: Arc<Roles>,
}

#[async_trait]
impl NoopStartupHandler for Trust {
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
        // FATAL, not ERROR: pgwire closes the connection only after a
        // FATAL error; an ERROR here left the session open for queries.
        if !self.allow_remote && !client.socket_addr().ip().is_loopback() {
            return Err(fatal(
                "28000",
                format!(
                    "connections from {} are refused: without authentication only loopback clients are trusted (start eddy with --pg-auth scram-sha-256, or --pg-allow-remote)",
                    client.socket_addr().ip()
                ),
            ));
        }
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        if self.roles.get(&user).is_some_and(|r| !r.login) {
            return Err(fatal(
                "28000",
                format!("role \"{user}\" is not permitted to log in"),
            ));
        }
        Ok(())
    }
}

/// Rows that stop with 57014 when a CancelRequest (psql's Ctrl-C) arrives
/// while they stream: DataFusion runs a query as its rows are pulled, after
/// `do_query` returned, and pgwire's own cancel covers `do_query` only. The
/// connection's cancel signal is taken at the first pull, once pgwire's has
/// been released. They also stop when the client goes away (`Sockets::
/// gone`): an abandoned query stops using CPU at once rather than when it
/// first writes a row.
pub(super) fn cancellable(
    client: &impl ClientInfo,
    sockets: &Arc<super::Sockets>,
    mut resp: QueryResponse,
) -> QueryResponse {
    let Some(handle) = client.session_extensions().get::<Arc<ConnectionHandle>>() else {
        return resp;
    };
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut gone = Some({
        let sockets = Arc::clone(sockets);
        let peer = client.socket_addr();
        let lost = Arc::clone(&lost);
        async move {
            sockets.gone(&peer).await;
            lost.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
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
                let gone = gone.take();
                let cancelled = async move {
                    if rx.await.is_err() {
                        // Released unfired: never cancel.
                        std::future::pending::<()>().await;
                    }
                };
                async move {
                    tokio::select! {
                        _ = cancelled => {}
                        _ = async move {
                            match gone {
                                Some(g) => g.await,
                                None => std::future::pending().await,
                            }
                        } => {}
                    }
                }
            };
            let lost = Arc::clone(&lost);
            let tail = stream::once(async move {
                if matches!(rx.peek(), Some(Ok(()))) {
                    return Some(Err(user_error(
                        "57014",
                        "canceling statement due to user request".into(),
                    )));
                }
                // Never a shorter result that looks whole.
                lost.load(std::sync::atomic::Ordering::Relaxed).then(|| {
                    Err(user_error(
                        "08006",
                        "the client closed its connection while the query ran".into(),
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
