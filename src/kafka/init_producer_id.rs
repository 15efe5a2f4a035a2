//! InitProducerId: producer ids for idempotent producers (librdkafka's
//! `enable.idempotence`, the Java client's default). A producer that asks to
//! bump its own epoch (KIP-360, v3+) keeps its id with epoch + 1.
//! A transactional id is the transaction coordinator's
//! (`transactions/`): its producer id, with the epoch bumped.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Broker, RequestContext};

pub fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    ctx: &RequestContext,
) -> InitProducerIdResponse {
    if let Some(id) = req.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        let expected = (ctx.api_version >= 3 && req.producer_id.0 >= 0)
            .then_some((req.producer_id.0, req.producer_epoch));
        return match broker.transactions().init_producer(
            id,
            req.transaction_timeout_ms,
            expected,
            || broker.allocate_producer_id(),
        ) {
            Ok((pid, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(code) => InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        };
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
