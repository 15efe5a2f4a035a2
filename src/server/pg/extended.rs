//! The extended protocol (Parse, Bind, Describe, Execute): prepared
//! statements in datafusion-postgres' statement type, with eddy's own
//! statements marked and run in the engine with their bound parameters.
//! How outputs become responses, values text and errors SQLSTATEs is the
//! other files' business.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::pgwire;
use futures::Sink;
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::block::{self, Verdict};
use super::error::{coded_errors, engine_error, parse_error, user_error, with_sqlstate};
use super::respond::{peeked_rows, respond, row_fields, rows, session_command, with_notices};
use super::startup::cancellable;
use super::subscribe::subscribe;
use crate::engine::{Dml, Engine, Output, Statement, column_names, statement};

/// A prepared statement (extended protocol), as datafusion-postgres keeps
/// it: the SQL and, where DataFusion planned it, the statement and plan.
/// The engine's own statements are kept as (SQL, None), or, when they take
/// parameters (DELETE, UPDATE, COPY … TO), with the plan of the query they
/// run, from which their parameters are described. Keeping datafusion's
/// statement type keeps its portal store, which its cursor hooks require.
type Prepared = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Whether a prepared statement is a query (a user's, planned by eddy, or
/// one of PostgreSQL's catalogs, planned by datafusion-postgres): run and
/// encoded here either way.
fn is_query(stmt: &Prepared) -> bool {
    matches!(
        &stmt.1,
        Some((datafusion::sql::sqlparser::ast::Statement::Query(_), _))
    )
}

/// `portal` with its uuid, json and jsonb parameters respelled as text
/// parameters (arrow-pg reads those types into no value: a uuid's 16
/// bytes become its hyphenated text, jsonb's binary form loses its
/// version byte), or None when it has none. eddy holds these types as
/// text; the text is checked where it is stored.
fn as_text_parameters(portal: &Portal<Prepared>, server: &[Type]) -> Option<Portal<Prepared>> {
    let n = portal.parameter_len();
    let type_of = |i: usize| {
        portal
            .statement
            .parameter_types
            .get(i)
            .and_then(Clone::clone)
            .or_else(|| server.get(i).cloned())
    };
    let special = |t: &Option<Type>| matches!(t, Some(t) if *t == Type::UUID || *t == Type::JSON || *t == Type::JSONB);
    if !(0..n).any(|i| special(&type_of(i))) {
        return None;
    }
    let mut types = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let ty = type_of(i);
        let binary = portal.parameter_format.is_binary(i);
        let value = portal.parameters.get(i).cloned().flatten();
        if !special(&ty) {
            types.push(portal.statement.parameter_types.get(i).cloned().flatten());
            formats.push(i16::from(binary));
            values.push(value);
            continue;
        }
        let text = value.map(|v| match (&ty, binary) {
            (Some(t), true) if *t == Type::UUID => uuid::Uuid::from_slice(&v)
                .map(|u| bytes::Bytes::from(u.hyphenated().to_string()))
                .unwrap_or(v),
            (Some(t), true) if *t == Type::JSONB && v.first() == Some(&1) => v.slice(1..),
            _ => v,
        });
        types.push(Some(Type::TEXT));
        formats.push(0);
        values.push(text);
    }
    let statement = pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        types,
    );
    let mut respelled: Portal<Prepared> = Portal::default();
    respelled.name = portal.name.clone();
    respelled.statement = Arc::new(statement);
    respelled.parameter_format = Format::Individual(formats);
    respelled.parameters = values;
    respelled.result_column_format = portal.result_column_format.clone();
    respelled.state = Arc::clone(&portal.state);
    Some(respelled)
}

/// Whether a prepared statement is one of the engine's own.
fn is_own(stmt: &Prepared) -> bool {
    match &stmt.1 {
        None => true,
        Some((ast, _)) => Engine::is_own_sql(ast),
    }
}

pub struct PreparedParser {
    pub(super) engine: Arc<Engine>,
    pub(super) df: Arc<datafusion_postgres::Parser>,
}

#[async_trait]
impl QueryParser for PreparedParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.engine.parse(sql).map_err(|e| parse_error(sql, e))?;
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        match statements.pop() {
            // Queries of the user's, planned from eddy's parse.
            Some(Statement::Query(s, text)) => {
                let (ast, plan) = self.engine.plan_query(*s).await.map_err(engine_error)?;
                Ok(Some((text, Some((ast, plan)))))
            }
            Some(Statement::CatalogQuery(_, text) | Statement::Other(_, text)) => self
                .df
                .parse_sql(client, &text, types)
                .await
                .map_err(with_sqlstate),
            // eddy's own, with the plan its parameters are typed from;
            // Execute runs it from the kept statement when there is one.
            Some(stmt) => {
                let plan = self
                    .engine
                    .parameter_plan(&stmt)
                    .await
                    .map_err(engine_error)?;
                Ok(Some((sql.to_string(), stmt.into_sql().zip(plan))))
            }
            None => self
                .df
                .parse_sql(client, sql, types)
                .await
                .map_err(with_sqlstate),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let mut types = self.df.get_parameter_types(stmt)?;
        // A parameter bound for a jsonb or uuid column is one of that type
        // (datafusion-postgres sees only the column's text type).
        if let (_, Some((_, plan))) = stmt
            && let Ok(fields) = plan.get_parameter_fields()
        {
            for (id, field) in fields {
                let Some(i) = id
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                else {
                    continue;
                };
                let tagged = match field.as_deref().and_then(crate::types::pg_type_of) {
                    Some("jsonb") => Type::JSONB,
                    Some("uuid") => Type::UUID,
                    _ => continue,
                };
                if let Some(t) = types.get_mut(i) {
                    *t = tagged;
                }
            }
        }
        // `$n::jsonb` (parsed into `jsonb($n)`) is a jsonb parameter.
        if let (_, Some((ast, _))) = stmt {
            for n in crate::engine::jsonb::jsonb_parameters(ast) {
                if let Some(t) = n.checked_sub(1).and_then(|i| types.get_mut(i)) {
                    *t = Type::JSONB;
                }
            }
        }
        Ok(types)
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        if is_own(stmt) {
            // DDL and DML return no rows, COPY sends its own description.
            return Ok(vec![]);
        }
        if let (_, Some((ast, plan))) = stmt
            && is_query(stmt)
        {
            let schema = plan.schema().as_arrow();
            let names = column_names(ast, schema);
            return row_fields(
                schema,
                &names,
                column_format.unwrap_or(&Format::UnifiedText),
            );
        }
        self.df.get_result_schema(stmt, column_format)
    }
}

/// The extended protocol (psycopg, tokio-postgres, JDBC): eddy's own
/// statements in the engine with their parameters bound, the rest in
/// datafusion-postgres; errors get SQLSTATEs and text floats print as
/// PostgreSQL's, as in the simple protocol.
pub struct Extended {
    pub(super) parser: Arc<PreparedParser>,
    pub(super) df: Arc<DfSessionService>,
    pub(super) sockets: Arc<super::Sockets>,
    pub(super) login: Arc<super::Login>,
}

impl Extended {
    /// The bound parameters of `portal`, typed from its plan.
    fn params(&self, portal: &Portal<Prepared>) -> PgWireResult<ParamValues> {
        let (_, planned) = &portal.statement.statement;
        let arrow: Vec<Option<DataType>> = match planned {
            Some((_, plan)) => {
                let types = plan
                    .get_parameter_types()
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let mut ordered: Vec<(usize, Option<DataType>)> = types
                    .into_iter()
                    .filter_map(|(k, t)| Some((k.trim_start_matches('$').parse().ok()?, t)))
                    .collect();
                ordered.sort_by_key(|(i, _)| *i);
                ordered.into_iter().map(|(_, t)| t).collect()
            }
            None => vec![],
        };
        let wire = self
            .parser
            .get_parameter_types(&portal.statement.statement)?;
        let arrow_refs: Vec<Option<&DataType>> = arrow.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        match as_text_parameters(portal, &wire) {
            Some(p) => deserialize_parameters_with_server_types(&p, &arrow_refs, &wire_refs),
            None => deserialize_parameters_with_server_types(portal, &arrow_refs, &wire_refs),
        }
    }

    /// Whether the connection's role may run `portal`'s statement, checked
    /// at each Execute (a REVOKE applies to statements prepared before
    /// it); superusers skip the check.
    fn authorize<C: ClientInfo>(&self, client: &C, portal: &Portal<Prepared>) -> PgWireResult<()> {
        let role = self.login.role(client);
        if role.superuser {
            return Ok(());
        }
        let (sql, kept) = &portal.statement.statement;
        let engine = &self.parser.engine;
        let stmt = match kept {
            Some((ast, _)) => statement::classify(ast.clone(), sql.clone()),
            None => match engine.parse(sql).map_err(engine_error)?.pop() {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        engine.authorize(&role, &stmt).map_err(engine_error)
    }

    /// What the connection's transaction block makes of `portal`'s
    /// statement (parsed again only inside a block or for a transaction
    /// statement).
    async fn block<C>(&self, client: &C, portal: &Portal<Prepared>) -> PgWireResult<Verdict>
    where
        C: ClientInfo + ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let (sql, _) = &portal.statement.statement;
        let first = sql
            .trim_start()
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let transactional = matches!(
            first.as_str(),
            "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release"
        );
        if !transactional && !block::transaction(client).is_open() {
            return Ok(Verdict::Run);
        }
        let Ok(Some(stmt)) = self.parser.engine.parse(sql).map(|mut v| v.pop()) else {
            return Ok(Verdict::Run);
        };
        let params = match &stmt {
            Statement::Dml(Dml::Insert(_)) => Some(self.params(portal)?),
            _ => None,
        };
        block::before(client, &self.parser.engine, &stmt, params).await
    }

    /// A query, planned at Parse.
    async fn run_query<C>(&self, client: &C, portal: &Portal<Prepared>) -> PgWireResult<Response>
    where
        C: ClientInfo,
    {
        let params = self.params(portal)?;
        let (_, Some((ast, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        if let Some(p) = crate::engine::peek::peek_of(ast) {
            match self.parser.engine.peek(&p, Some(&params)) {
                Ok(Some(found)) => return peeked_rows(found, &portal.result_column_format),
                Ok(None) => {}
                Err(e) => return Err(engine_error(e)),
            }
        }
        let api = |e| PgWireError::ApiError(Box::new(e));
        let plan = plan
            .clone()
            .replace_params_with_values(&params)
            .map_err(api)?;
        let names = column_names(ast, plan.schema().as_arrow());
        let df = self.parser.engine.runnable(plan).map_err(engine_error)?;
        rows(client, df, &names, &portal.result_column_format).await
    }

    async fn run_own<C>(&self, client: &mut C, portal: &Portal<Prepared>) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (sql, kept) = &portal.statement.statement;
        let params = self.params(portal)?;
        // Parsed at Parse: run from the kept statement where there is one
        // (DML, COPY … TO), else from the text (DDL).
        let stmt = match kept {
            Some((ast, _)) => statement::classify(ast.clone(), sql.clone()),
            None => self
                .parser
                .engine
                .parse(sql)
                .map_err(engine_error)?
                .pop()
                .ok_or_else(|| user_error("42601", "empty statement".into()))?,
        };
        let engine = &self.parser.engine;
        match with_notices(client, engine.execute_with(stmt, Some(params.clone()))).await {
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
                    &self.parser.engine,
                    &self.sockets,
                )
                .await
            }
            Ok(Output::Session(cmd)) => {
                session_command(&*client, &self.parser.engine, cmd, Some(params)).await
            }
            Ok(output) => respond(&*client, output),
            Err(e) => Err(engine_error(e)),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Extended {
    type Statement = Prepared;
    type QueryParser = PreparedParser;

    fn query_parser(&self) -> Arc<PreparedParser> {
        Arc::clone(&self.parser)
    }

    /// Describe, except that a statement with parameters and no result
    /// rows (INSERT …) is answered ParameterDescription then NoData, as
    /// PostgreSQL answers: pgwire sends a RowDescription of no columns,
    /// which pgJDBC reads as a result set (its executeBatch counted 0 rows
    /// per INSERT and executeUpdate refused the statement).
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        use pgwire::messages::data::{NoData, ParameterDescription};
        use pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT;
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(stmt)) =
                client.portal_store().get_statement(name)
            {
                let described = self.do_describe_statement(client, &stmt).await?;
                if described.fields.is_empty() && !described.parameters.is_empty() {
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(
                                described.parameters.iter().map(|t| t.oid()).collect(),
                            ),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Err(e) = self.authorize(client, portal) {
            block::failed(client);
            return Err(e);
        }
        match self.block(client, portal).await {
            Ok(Verdict::Run) => {}
            Ok(Verdict::Done(r)) => return Ok(r),
            Err(e) => {
                block::failed(client);
                return Err(e);
            }
        }
        let result = if is_own(&portal.statement.statement) {
            self.run_own(client, portal).await
        } else if is_query(&portal.statement.statement) {
            self.run_query(client, portal).await
        } else {
            ExtendedQueryHandler::do_query(&*self.df, client, portal, max_rows).await
        };
        match result {
            Ok(Response::Query(q)) => Ok(Response::Query(cancellable(
                client,
                &self.sockets,
                coded_errors(q),
            ))),
            Ok(other) => Ok(other),
            Err(e) => {
                block::failed(client);
                Err(with_sqlstate(e))
            }
        }
    }
}
