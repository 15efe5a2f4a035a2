//! SASL on the Kafka listener (SaslHandshake v1, SaslAuthenticate v0–2)
//! with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and the authorization of
//! the requests that follow: a principal is a role (`auth::Roles`),
//! producing to a topic needs INSERT and fetching SELECT on a stream or
//! table over it, topic administration needs a superuser.
//!
//! With SASL configured, a connection may send only ApiVersions,
//! SaslHandshake and SaslAuthenticate until it has authenticated; anything
//! else closes it, as Kafka does. A failed SaslAuthenticate is answered
//! with SASL_AUTHENTICATION_FAILED, then the connection is closed.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::str_bytes;
use crate::auth::scram::Exchange;
use crate::auth::{Hash, Privilege, Role, Roles, TopicAccess};

/// The listener's SASL settings.
#[derive(Clone)]
pub struct Sasl {
    /// Mechanisms required, in Kafka's names; empty: no authentication.
    mechanisms: Vec<String>,
    roles: Option<Arc<Roles>>,
    access: Option<Arc<dyn TopicAccess>>,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sasl({:?})", self.mechanisms)
    }
}

impl Sasl {
    /// No authentication: every client may use every topic but eddy's
    /// roles.
    pub fn none() -> Sasl {
        Sasl {
            mechanisms: Vec::new(),
            roles: None,
            access: None,
        }
    }

    pub fn new(mechanisms: &[String], roles: Arc<Roles>, access: Arc<dyn TopicAccess>) -> Sasl {
        Sasl {
            mechanisms: mechanisms.iter().map(|m| m.to_ascii_uppercase()).collect(),
            roles: Some(roles),
            access: Some(access),
        }
    }

    pub fn required(&self) -> bool {
        !self.mechanisms.is_empty()
    }
}

/// One connection's authentication.
#[derive(Debug, Default)]
pub struct Session {
    /// The role authenticated as (None: not yet, or no SASL configured).
    principal: Option<Role>,
    /// The mechanism SaslHandshake chose.
    mechanism: Option<String>,
    scram: Option<Exchange>,
    /// Close the connection once this response is written.
    pub close: bool,
}

impl Session {
    pub fn principal(&self) -> Option<&Role> {
        self.principal.as_ref()
    }
}

impl Sasl {
    /// Whether a request of `api` may be served on this connection now.
    pub fn admits(&self, session: &Session, api: kafka_protocol::messages::ApiKey) -> bool {
        use kafka_protocol::messages::ApiKey;
        !self.required()
            || session.principal.is_some()
            || matches!(
                api,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
    }

    /// Whether the connection may use `topic` for `privilege`. eddy's
    /// roles topic is served to nobody.
    pub fn may(&self, principal: Option<&Role>, privilege: Privilege, topic: &str) -> bool {
        if topic == crate::auth::TOPIC {
            return false;
        }
        match (principal, &self.access) {
            (Some(role), Some(access)) if self.required() => access.may(role, privilege, topic),
            _ => true,
        }
    }

    /// Whether the connection may create, delete or reconfigure topics.
    pub fn may_administer(&self, principal: Option<&Role>) -> bool {
        !self.required() || principal.is_some_and(|r| r.superuser)
    }

    pub fn handshake(
        &self,
        session: &mut Session,
        r: SaslHandshakeRequest,
        version: i16,
    ) -> SaslHandshakeResponse {
        let asked = r.mechanism.to_string().to_ascii_uppercase();
        let mut resp = SaslHandshakeResponse::default()
            .with_mechanisms(self.mechanisms.iter().map(|m| str_bytes(m)).collect());
        if !self.required() || version < 1 {
            // v0 would send the tokens next without Kafka framing.
            resp.error_code = ResponseError::IllegalSaslState.code();
            session.close = self.required();
        } else if session.principal.is_some() || session.mechanism.is_some() {
            resp.error_code = ResponseError::IllegalSaslState.code();
            session.close = true;
        } else if self.mechanisms.contains(&asked) {
            session.scram = match asked.as_str() {
                "SCRAM-SHA-256" => Some(Exchange::new(Hash::Sha256)),
                "SCRAM-SHA-512" => Some(Exchange::new(Hash::Sha512)),
                _ => None,
            };
            session.mechanism = Some(asked);
        } else {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
        }
        resp
    }

    pub fn authenticate(
        &self,
        session: &mut Session,
        r: SaslAuthenticateRequest,
    ) -> SaslAuthenticateResponse {
        let fail = |session: &mut Session, code: ResponseError, message: String| {
            session.close = true;
            tracing::info!(%message, "Kafka SASL authentication failed");
            SaslAuthenticateResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message)))
        };
        let (Some(roles), Some(mechanism)) = (&self.roles, session.mechanism.clone()) else {
            return fail(
                session,
                ResponseError::IllegalSaslState,
                "SaslAuthenticate before SaslHandshake".into(),
            );
        };
        if session.principal.is_some() {
            return fail(
                session,
                ResponseError::IllegalSaslState,
                "already authenticated".into(),
            );
        }
        let outcome: Result<(Vec<u8>, Option<Role>), String> = if mechanism == "PLAIN" {
            // authzid NUL authcid NUL password (RFC 4616).
            let parts: Vec<&[u8]> = r.auth_bytes.split(|b| *b == 0).collect();
            match parts.as_slice() {
                [authzid, user, password] => {
                    let user = String::from_utf8_lossy(user).to_string();
                    let authzid = String::from_utf8_lossy(authzid);
                    if !authzid.is_empty() && authzid != user {
                        Err("PLAIN authorization id must be empty or the user name".into())
                    } else {
                        roles
                            .check_password(&user, &String::from_utf8_lossy(password))
                            .map(|role| (Vec::new(), Some(role)))
                            .map_err(|e| e.to_string())
                    }
                }
                _ => Err("malformed PLAIN message".into()),
            }
        } else {
            match session.scram.as_mut() {
                Some(exchange) => exchange.step(roles, &r.auth_bytes),
                None => Err("no SCRAM exchange in progress".into()),
            }
        };
        match outcome {
            Ok((bytes, role)) => {
                if role.is_some() {
                    session.principal = role;
                    session.scram = None;
                }
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes))
            }
            Err(message) => fail(session, ResponseError::SaslAuthenticationFailed, message),
        }
    }
}
