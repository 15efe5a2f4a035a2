//! The simple query protocol: a query string is split and parsed by
//! `engine::parse`, each statement runs in the engine or passes through to
//! datafusion-postgres, and the first failing one ends the string (as
//! PostgreSQL does). How outputs become responses, values text and errors
//! SQLSTATEs is the other files' business.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tracing::debug;

use super::block::{self, Verdict};
use super::error::{coded_errors, engine_error, parse_error, refine_code, sqlstate_of};
use super::respond::{catalog_query, peeked_rows, respond, rows, session_command, with_notices};
use super::startup::cancellable;
use super::subscribe::subscribe;
use crate::engine::{Engine, Output, Statement};

pub struct Simple {
    pub(super) engine: Arc<Engine>,
    pub(super) df: Arc<DfSessionService>,
    pub(super) sockets: Arc<super::Sockets>,
    pub(super) login: Arc<super::Login>,
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
        let statements = self
            .engine
            .parse(query)
            .map_err(|e| parse_error(query, e))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(statements.len());
        let role = self.login.role(client);
        for stmt in statements {
            let verdict = match self.engine.authorize(&role, &stmt) {
                Err(e) => Err(engine_error(e)),
                Ok(()) => block::before(client, &self.engine, &stmt, None).await,
            };
            let result = match verdict {
                Err(e) => Err(e),
                Ok(Verdict::Done(r)) => Ok(vec![r]),
                Ok(Verdict::Run) => match peek(&self.engine, &stmt) {
                    Some(r) => r.map(|r| vec![r]),
                    None => match with_notices(client, self.engine.execute(stmt)).await {
                        // A query of PostgreSQL's catalogs, planned by
                        // datafusion-postgres' compatibility rules.
                        Ok(Output::CatalogQuery(sql)) => {
                            catalog_query(client, &self.df.query_parser(), &self.engine, &sql)
                                .await
                                .map(|r| vec![r])
                        }
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
                        Ok(Output::Rows { df, names }) => {
                            rows(client, df, &names, &Format::UnifiedText)
                                .await
                                .map(|r| vec![r])
                        }
                        Ok(Output::Subscribe {
                            name,
                            schema,
                            snapshot,
                            start,
                            transient,
                        }) => {
                            // A subscription's own dataflow lives as long as it.
                            let _dataflow = transient;
                            subscribe(
                                client,
                                name,
                                schema,
                                snapshot,
                                start,
                                &self.engine,
                                &self.sockets,
                            )
                            .await
                            .map(|r| vec![r])
                        }
                        Ok(Output::Session(cmd)) => {
                            session_command(client, &self.engine, cmd, None)
                                .await
                                .map(|r| vec![r])
                        }
                        Ok(output) => respond(client, output).map(|r| vec![r]),
                        Err(e) => Err(engine_error(e)),
                    },
                },
            };
            match result {
                Ok(rs) => out.extend(rs.into_iter().map(|r| match r {
                    Response::Query(q) => {
                        Response::Query(cancellable(client, &self.sockets, coded_errors(q)))
                    }
                    other => other,
                })),
                Err(e) => {
                    block::failed(client);
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

/// A query answered by a fast-path peek (`engine::peek`), or None when it
/// is not one.
fn peek(engine: &Engine, stmt: &Statement) -> Option<PgWireResult<Response>> {
    let Statement::Query(q, _) = stmt else {
        return None;
    };
    let p = crate::engine::peek::peek_of(q)?;
    match engine.peek(&p, None) {
        Ok(Some(found)) => Some(peeked_rows(found, &Format::UnifiedText)),
        Ok(None) => None,
        Err(e) => Some(Err(engine_error(e))),
    }
}
