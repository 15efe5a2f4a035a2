//! FindCoordinator (v0–4): this single node coordinates every group and
//! every transactional id. v4 answers a batch of keys.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator as KeyCoordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::Coordinator;
use crate::kafka::{BrokerConfig, RequestContext, str_bytes};

/// Key types: 0 group, 1 transactional id.
fn check_key_type(key_type: i8) -> Result<(), ResponseError> {
    match key_type {
        0 | 1 => Ok(()),
        _ => Err(ResponseError::InvalidRequest),
    }
}

impl Coordinator {
    pub fn find_coordinator(
        &self,
        config: &BrokerConfig,
        r: FindCoordinatorRequest,
        ctx: &RequestContext,
    ) -> FindCoordinatorResponse {
        let version = ctx.api_version;
        let checked = check_key_type(r.key_type);
        let mut resp = FindCoordinatorResponse::default();
        if version >= 4 {
            resp.coordinators = r
                .coordinator_keys
                .iter()
                .map(|key| {
                    let c = KeyCoordinator::default().with_key(key.clone());
                    match checked {
                        Ok(()) => c
                            .with_node_id(BrokerId(config.node_id))
                            .with_host(str_bytes(&config.advertised_host))
                            .with_port(config.advertised_port)
                            .with_error_code(0)
                            .with_error_message(None),
                        Err(e) => c
                            .with_node_id(BrokerId(-1))
                            .with_host(str_bytes(""))
                            .with_port(-1)
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(&e.to_string()))),
                    }
                })
                .collect();
            return resp;
        }
        match checked {
            Ok(()) => {
                resp.node_id = BrokerId(config.node_id);
                resp.host = str_bytes(&config.advertised_host);
                resp.port = config.advertised_port;
                resp.error_message = None;
            }
            Err(e) => {
                resp.error_code = e.code();
                resp.node_id = BrokerId(-1);
                resp.port = -1;
                resp.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        resp
    }
}
