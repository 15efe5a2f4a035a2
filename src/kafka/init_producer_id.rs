//! InitProducerId: producer ids for idempotent producers (librdkafka's
//! `enable.idempotence`, the Java client's default). A producer that asks to
//! bump its own epoch (KIP-360, v3+) keeps its id with epoch + 1.
//! Transactions are not supported: a transactional id is refused.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Broker, RequestContext};

pub fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    ctx: &RequestContext,
) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (id, epoch) = if ctx.api_version >= 3 && req.producer_id.0 >= 0 {
        match req.producer_epoch.checked_add(1) {
            Some(e) if e < i16::MAX => (req.producer_id.0, e),
            // Epoch exhausted: a fresh id, as Kafka does.
            _ => (broker.allocate_producer_id(), 0),
        }
    } else {
        (broker.allocate_producer_id(), 0)
    };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}
