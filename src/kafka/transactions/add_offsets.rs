//! AddOffsetsToTxn (v0–3): a consumer group whose offsets the transaction
//! will commit (TxnOffsetCommit follows) joins it, opening it if needed.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::Status;
use crate::kafka::{Broker, RequestContext};
use crate::log::now_ms;

pub fn handle(
    broker: &Broker,
    req: AddOffsetsToTxnRequest,
    _ctx: &RequestContext,
) -> AddOffsetsToTxnResponse {
    let txns = broker.transactions();
    txns.ensure_reaper();
    let id = req.transactional_id.0.to_string();
    let shared = txns.shared();
    let mut state = shared.lock();
    let code = match shared.checked(&state, &id, req.producer_id.0, req.producer_epoch) {
        Err(e) => e.code(),
        Ok(t) if t.is_ending() => ResponseError::ConcurrentTransactions.code(),
        Ok(mut t) => {
            let before = t.clone();
            if t.status != Status::Ongoing {
                t.status = Status::Ongoing;
                t.started_ms = now_ms();
            }
            t.groups.entry(req.group_id.0.to_string()).or_default();
            if t == before {
                0
            } else {
                shared.put(&mut state, &id, t).err().unwrap_or(0)
            }
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
