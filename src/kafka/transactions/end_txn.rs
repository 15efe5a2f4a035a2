//! EndTxn (v0–3): commit or abort the open transaction. Markers are
//! written (fsynced) into every partition before the answer, so when a
//! producer's commit returns, read_committed readers can see its records.
//! A retried EndTxn of a transaction that already ended the same way
//! answers success; ending it the other way, or ending none, is
//! INVALID_TXN_STATE.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::Status;
use crate::kafka::{Broker, RequestContext};
use crate::log::batch::Marker;

pub fn handle(broker: &Broker, req: EndTxnRequest, _ctx: &RequestContext) -> EndTxnResponse {
    let txns = broker.transactions();
    txns.ensure_reaper();
    let id = req.transactional_id.0.to_string();
    let shared = txns.shared();
    let mut state = shared.lock();
    let code = match shared.checked(&state, &id, req.producer_id.0, req.producer_epoch) {
        Err(e) => e.code(),
        Ok(mut t) => {
            if t.is_ending() {
                // An end interrupted before: finish it first.
                if let Err(code) = shared.complete(&mut state, &id, &mut t) {
                    return EndTxnResponse::default().with_error_code(code);
                }
            }
            match (t.status, req.committed) {
                (Status::Ongoing, commit) => {
                    let marker = if commit {
                        Marker::Commit
                    } else {
                        Marker::Abort
                    };
                    match shared.end(&mut state, &id, &mut t, marker) {
                        Ok(()) => {
                            broker.arrived();
                            0
                        }
                        Err(code) => code,
                    }
                }
                (Status::CompleteCommit, true) | (Status::CompleteAbort, false) => 0,
                _ => ResponseError::InvalidTxnState.code(),
            }
        }
    };
    EndTxnResponse::default().with_error_code(code)
}
