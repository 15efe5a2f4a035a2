//! ApiVersions: the APIs and version ranges this broker serves (the table in
//! `SUPPORTED`). APIs eddy does not implement are omitted, so clients never
//! send them.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{RequestContext, SUPPORTED};

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

pub fn handle(_req: ApiVersionsRequest, _ctx: &RequestContext) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(table())
}

/// The v0 answer to a client asking with a version we do not know.
pub fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table())
}
