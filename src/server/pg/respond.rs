//! The response for what one of the engine's own statements produced
//! (`Output`), and the session commands (DEALLOCATE, DISCARD) run on the
//! connection's statement store; shared by both protocols. Knows the
//! shape of an `Output`, not how a statement was parsed or run.

use datafusion_postgres::pgwire;
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::PgWireResult;

use super::copy::{copy_out, start_copy_in};
use super::error::user_error;
use crate::engine::{Output, SessionCommand};

/// The response for what one of the engine's own statements produced.
pub(super) fn respond(client: &impl ClientInfo, output: Output) -> PgWireResult<Response> {
    match output {
        Output::CopyIn(copy) => start_copy_in(client, copy),
        Output::Command(tag, n) => {
            let mut t = Tag::new(&tag);
            if let Some(n) = n {
                t = t.with_rows(n);
            }
            Ok(Response::Execution(t))
        }
        Output::CopyOut {
            schema,
            batches,
            format,
        } => copy_out(&schema, batches, format),
        Output::PassThrough(sql) => Err(user_error(
            "XX000",
            format!("statement was not planned: {sql}"),
        )),
        Output::Subscribe { name, .. } => Err(user_error(
            "XX000",
            format!("SUBSCRIBE to {name} reached the wrong path"),
        )),
        Output::Session(cmd) => Err(user_error(
            "XX000",
            format!("{cmd:?} reached the wrong path"),
        )),
    }
}

/// DEALLOCATE and DISCARD on the connection's statement and portal store.
///
/// pgwire's store cannot list its statements, so `DEALLOCATE ALL` and
/// `DISCARD ALL` close every portal but leave named statements stored:
/// drivers that send them (psycopg 3 after DDL, SQLAlchemy's pool reset)
/// parse again under names of their own choosing, and a Parse replaces a
/// statement of the same name.
pub(super) fn session_command<C>(client: &C, cmd: SessionCommand) -> PgWireResult<Response>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let store = client.portal_store();
    match cmd {
        SessionCommand::Deallocate(Some(name)) => {
            if store.get_statement(&name).is_none() {
                return Err(user_error(
                    "26000",
                    format!("prepared statement \"{name}\" does not exist"),
                ));
            }
            store.rm_statement(&name);
            Ok(Response::Execution(Tag::new("DEALLOCATE")))
        }
        SessionCommand::Deallocate(None) => {
            store.clear_portals();
            Ok(Response::Execution(Tag::new("DEALLOCATE ALL")))
        }
        SessionCommand::Nothing(tag) => Ok(Response::Execution(Tag::new(tag))),
        SessionCommand::Discard(what) => {
            if what == "ALL" {
                store.clear_portals();
            }
            Ok(Response::Execution(Tag::new(&format!("DISCARD {what}"))))
        }
    }
}
