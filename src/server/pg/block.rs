//! Transaction blocks on a connection (`engine::txn` has the semantics):
//! what a statement becomes when a block is open, decided before it runs,
//! for both protocols. BEGIN, COMMIT and ROLLBACK still answer through
//! datafusion-postgres (which keeps pgwire's transaction status); this
//! file does their work first: COMMIT appends what the block holds.
//! The block's open flag is kept here, not read from pgwire, because the
//! status pgwire holds changes only when responses are sent (after a
//! whole `BEGIN; INSERT …; COMMIT` query string).

use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion_postgres::pgwire;
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::PgWireResult;
use pgwire::messages::response::TransactionStatus;

use super::error::{engine_error, user_error};
use crate::engine::txn::Transaction;
use crate::engine::{Copy, Dml, Engine, Statement};

/// What to do with a statement.
pub(super) enum Verdict {
    /// Run it as usual.
    Run,
    /// Done here; this is its response.
    Done(Response),
}

/// The connection's transaction block state.
pub(super) fn transaction(client: &impl ClientInfo) -> Arc<Transaction> {
    client
        .session_extensions()
        .get_or_insert_with(Transaction::default)
}

/// A statement in the block failed: the block is aborted (PostgreSQL), so
/// what it held will never commit.
pub(super) fn failed(client: &impl ClientInfo) {
    let txn = transaction(client);
    if txn.is_open() {
        txn.discard();
    }
}

/// Decide `stmt` (with its bound `params` in the extended protocol)
/// against the connection's block.
pub(super) async fn before<C>(
    client: &C,
    engine: &Engine,
    stmt: &Statement,
    params: Option<ParamValues>,
) -> PgWireResult<Verdict>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let txn = transaction(client);
    let ast = stmt.sql();
    if matches!(
        ast,
        Some(
            SqlStatement::Commit { .. }
                | SqlStatement::Rollback {
                    savepoint: None,
                    ..
                }
        )
    ) {
        super::respond::close_block_cursors(client);
    }
    match ast {
        Some(SqlStatement::StartTransaction { .. }) => {
            txn.begin();
            return Ok(Verdict::Run);
        }
        Some(SqlStatement::Commit { .. }) => {
            let aborted = client.transaction_status() == TransactionStatus::Error;
            let committed = if aborted || !txn.is_open() {
                Ok(())
            } else {
                engine.commit(&txn).await
            };
            txn.end();
            committed.map_err(engine_error)?;
            return Ok(Verdict::Run);
        }
        Some(SqlStatement::Rollback {
            savepoint: None, ..
        }) => {
            txn.end();
            return Ok(Verdict::Run);
        }
        Some(SqlStatement::Rollback {
            savepoint: Some(name),
            ..
        }) => {
            if !txn.is_open() {
                return Err(no_block("ROLLBACK TO SAVEPOINT"));
            }
            return if txn.rollback_to(&name.value) {
                Ok(Verdict::Done(Response::Execution(Tag::new("ROLLBACK"))))
            } else {
                Err(no_savepoint(&name.value))
            };
        }
        Some(SqlStatement::Savepoint { name }) => {
            if !txn.is_open() {
                return Err(no_block("SAVEPOINT"));
            }
            if client.transaction_status() == TransactionStatus::Error {
                return Err(aborted());
            }
            txn.savepoint(&name.value);
            return Ok(Verdict::Done(Response::Execution(Tag::new("SAVEPOINT"))));
        }
        Some(SqlStatement::ReleaseSavepoint { name }) => {
            if !txn.is_open() {
                return Err(no_block("RELEASE SAVEPOINT"));
            }
            return if txn.release(&name.value) {
                Ok(Verdict::Done(Response::Execution(Tag::new("RELEASE"))))
            } else {
                Err(no_savepoint(&name.value))
            };
        }
        _ => {}
    }
    if !txn.is_open() {
        return Ok(Verdict::Run);
    }
    if client.transaction_status() == TransactionStatus::Error {
        return Err(aborted());
    }
    match stmt {
        Statement::Dml(Dml::Insert(ast)) => {
            let n = engine
                .insert((**ast).clone(), params, Some(&txn))
                .await
                .map_err(engine_error)?;
            Ok(Verdict::Done(Response::Execution(
                Tag::new("INSERT").with_oid(0).with_rows(n as usize),
            )))
        }
        Statement::Dml(Dml::Update(_)) | Statement::Dml(Dml::Delete(_)) => Err(refused(stmt)),
        Statement::Other(s, _)
            if matches!(**s, SqlStatement::Merge { .. } | SqlStatement::Truncate { .. }) =>
        {
            Err(refused(stmt))
        }
        // COPY … FROM STDIN: its rows are held like an INSERT's
        // (`copy::on_copy_done`).
        Statement::Copy(Copy::From { .. }) => Ok(Verdict::Run),
        Statement::Session(_) => Ok(Verdict::Run),
        Statement::Other(s, _)
            if matches!(**s, SqlStatement::Set(_) | SqlStatement::ShowVariable { .. }) =>
        {
            Ok(Verdict::Run)
        }
        _ if txn.has_writes() => Err(user_error(
            "25000",
            "transaction in write-only mode: a transaction block that has written may only INSERT until COMMIT or ROLLBACK (its writes are invisible until then, as in Materialize)".into(),
        )),
        _ => Ok(Verdict::Run),
    }
}

/// UPDATE, DELETE, MERGE, TRUNCATE in a block: refused (0A000).
fn refused(stmt: &Statement) -> pgwire::error::PgWireError {
    user_error(
        "0A000",
        format!(
            "{} inside a transaction block is not supported: eddy's transaction blocks hold INSERTs until COMMIT (run it outside BEGIN … COMMIT, where it is atomic on its own)",
            verb(stmt)
        ),
    )
}

fn verb(s: &Statement) -> &'static str {
    match s {
        Statement::Dml(Dml::Update(_)) => "UPDATE",
        Statement::Dml(Dml::Delete(_)) => "DELETE",
        Statement::Other(s, _) if matches!(**s, SqlStatement::Merge { .. }) => "MERGE",
        _ => "TRUNCATE",
    }
}

fn aborted() -> pgwire::error::PgWireError {
    user_error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block".into(),
    )
}

fn no_block(what: &str) -> pgwire::error::PgWireError {
    user_error(
        "25P01",
        format!("{what} can only be used in transaction blocks"),
    )
}

fn no_savepoint(name: &str) -> pgwire::error::PgWireError {
    user_error("3B001", format!("savepoint \"{name}\" does not exist"))
}
