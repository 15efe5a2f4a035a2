//! Who is who and who may do what, for both protocols: roles with their
//! password secrets and privileges, kept in the compacted internal topic
//! `__eddy_roles` (key: role name, value: the role as JSON, a null value
//! drops it) and replayed at start, as the catalog is.
//!
//! - A role's password is never stored. Its [`Secret`] holds what each
//!   mechanism needs to check a proof: the SCRAM salted passwords for
//!   SHA-256 (pgwire and Kafka) and SHA-512 (Kafka), and PostgreSQL's md5
//!   hash of password and name (pgwire `md5`). SASL/PLAIN is checked by
//!   salting the offered password again.
//! - Privileges are PostgreSQL's SELECT/INSERT/UPDATE/DELETE on relations
//!   (streams, tables, views); a superuser has all of them. A Kafka
//!   principal is a role: producing to a topic needs INSERT, fetching from
//!   it SELECT, on a stream or table over that topic ([`TopicAccess`]).
//! - `__eddy_roles` is never served to Kafka clients.
//!
//! pgwire's own md5 and SCRAM-SHA-256 handlers run the PostgreSQL
//! exchanges (`server::pg::startup`); Kafka's SCRAM exchange is in
//! [`scram`], on `ring`'s HMAC, digests and PBKDF2.

pub mod scram;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::log::batch::{self, NewRecord};
use crate::log::{Durability, LogError, LogStore, now_ms};

/// The topic roles are kept in.
pub const TOPIC: &str = "__eddy_roles";

/// SCRAM iteration count for new secrets (PostgreSQL's and pgwire's
/// default; Kafka's minimum is 4096).
pub const ITERATIONS: u32 = 4096;

/// A privilege on a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    pub const ALL: [Privilege; 4] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }
}

/// What proves a role's password, per mechanism (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    /// Base64 of the SCRAM salt.
    pub salt: String,
    pub iterations: u32,
    /// Base64 of SaltedPassword for SCRAM-SHA-256.
    pub scram_sha256: String,
    /// Base64 of SaltedPassword for SCRAM-SHA-512.
    pub scram_sha512: String,
    /// Hex of md5(password || role name), as PostgreSQL's md5 method uses.
    pub md5: String,
}

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn pbkdf2(self) -> ring::pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    pub(crate) fn hmac(self) -> ring::hmac::Algorithm {
        match self {
            Hash::Sha256 => ring::hmac::HMAC_SHA256,
            Hash::Sha512 => ring::hmac::HMAC_SHA512,
        }
    }

    pub(crate) fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            Hash::Sha256 => &ring::digest::SHA256,
            Hash::Sha512 => &ring::digest::SHA512,
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }
}

/// `count` random bytes from the system's generator.
pub(crate) fn random_bytes(count: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; count];
    // The system generator fails only where the OS has none at all.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        panic!("the operating system's random number generator failed");
    }
    out
}

/// SCRAM's Hi(): PBKDF2 with HMAC of `hash` (RFC 5802). PostgreSQL and
/// Kafka apply SASLprep to the password first; passwords that SASLprep
/// would change (non-ASCII spaces, control characters) are used as given.
pub(crate) fn salted_password(hash: Hash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; hash.len()];
    let iterations = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        hash.pbkdf2(),
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

impl Secret {
    /// A new secret for `role`'s `password` with a fresh random salt.
    pub fn new(role: &str, password: &str) -> Secret {
        let salt = random_bytes(16);
        Secret {
            salt: B64.encode(&salt),
            iterations: ITERATIONS,
            scram_sha256: B64.encode(salted_password(Hash::Sha256, password, &salt, ITERATIONS)),
            scram_sha512: B64.encode(salted_password(Hash::Sha512, password, &salt, ITERATIONS)),
            md5: format!("{:x}", md5::compute(format!("{password}{role}"))),
        }
    }

    /// The salt, and SaltedPassword for `hash`.
    pub fn scram(&self, hash: Hash) -> Option<(Vec<u8>, Vec<u8>)> {
        let salt = B64.decode(&self.salt).ok()?;
        let salted = B64
            .decode(match hash {
                Hash::Sha256 => &self.scram_sha256,
                Hash::Sha512 => &self.scram_sha512,
            })
            .ok()?;
        Some((salt, salted))
    }

    /// Whether `password` is this secret's (SASL/PLAIN), in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let Some((salt, salted)) = self.scram(Hash::Sha256) else {
            return false;
        };
        let iterations = NonZeroU32::new(self.iterations.max(1)).unwrap_or(NonZeroU32::MIN);
        ring::pbkdf2::verify(
            Hash::Sha256.pbkdf2(),
            iterations,
            &salt,
            password.as_bytes(),
            &salted,
        )
        .is_ok()
    }

    /// The answer a client gives to PostgreSQL's md5 challenge `salt`:
    /// `md5` followed by hex(md5(hex(md5(password || user)) || salt)).
    pub fn md5_answer(&self, salt: &[u8]) -> String {
        let mut bytes = self.md5.as_bytes().to_vec();
        bytes.extend_from_slice(salt);
        format!("md5{:x}", md5::compute(bytes))
    }
}

/// A role: who may log in, with what proof, and what it may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    /// None: no password (password logins refused).
    pub secret: Option<Secret>,
    /// Privileges by relation name.
    #[serde(default)]
    pub grants: BTreeMap<String, BTreeSet<Privilege>>,
}

impl Role {
    /// Whether the role holds `privilege` on `relation`.
    pub fn may(&self, privilege: Privilege, relation: &str) -> bool {
        self.superuser
            || self
                .grants
                .get(relation)
                .is_some_and(|p| p.contains(&privilege))
    }

    /// A role that holds nothing (a logged-in role dropped since).
    pub fn nobody(name: &str) -> Role {
        Role {
            name: name.to_string(),
            login: false,
            superuser: false,
            secret: None,
            grants: BTreeMap::new(),
        }
    }

    /// The role a connection has when nobody checked who it is (trust
    /// authentication for a name that is no role): all privileges, as
    /// eddy has always given a trusted connection.
    pub fn trusted(name: &str) -> Role {
        Role {
            name: name.to_string(),
            login: true,
            superuser: true,
            secret: None,
            grants: BTreeMap::new(),
        }
    }
}

/// Whether a Kafka principal may use a topic: the engine knows which
/// relations read which topic (`Engine` implements this).
pub trait TopicAccess: Send + Sync {
    /// Whether `role` holds `privilege` on a stream or table over `topic`.
    fn may(&self, role: &Role, privilege: Privilege, topic: &str) -> bool;
}

/// The roles, in memory and mirrored to their topic.
pub struct Roles {
    log: Arc<dyn LogStore>,
    roles: RwLock<BTreeMap<String, Role>>,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roles({})", self.names().join(", "))
    }
}

impl Roles {
    /// Open (creating the topic if needed) and replay every entry in order.
    /// An entry that does not parse is reported and skipped.
    pub fn open(log: Arc<dyn LogStore>) -> Result<Arc<Roles>, LogError> {
        let mut roles = BTreeMap::new();
        crate::log::replay_keyed(&*log, TOPIC, |name, offset, value| match value {
            None => {
                roles.remove(&name);
            }
            Some(v) => match serde_json::from_slice::<Role>(v) {
                Ok(role) => {
                    roles.insert(name, role);
                }
                Err(e) => warn!(role = %name, offset, error = %e,
                    "skipping role entry that does not parse"),
            },
        })?;
        Ok(Arc::new(Roles {
            log,
            roles: RwLock::new(roles),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Role>> {
        self.roles.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Role>> {
        self.roles.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Write an entry durably (before the statement is acknowledged).
    fn append(&self, name: &str, role: Option<&Role>) -> Result<(), LogError> {
        let value = match role {
            Some(r) => Some(Bytes::from(serde_json::to_vec(r).map_err(|e| {
                LogError::CorruptMetadata {
                    file: TOPIC.into(),
                    reason: e.to_string(),
                }
            })?)),
            None => None,
        };
        let rec = NewRecord {
            key: Some(Bytes::copy_from_slice(name.as_bytes())),
            value,
            timestamp: now_ms(),
            headers: vec![],
        };
        self.log
            .append(TOPIC, 0, batch::encode(&[rec])?, Durability::Fsync)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Role> {
        self.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    pub fn list(&self) -> Vec<Role> {
        self.read().values().cloned().collect()
    }

    /// Add or replace a role.
    pub fn put(&self, role: Role) -> Result<(), LogError> {
        let mut roles = self.write_map();
        self.append(&role.name, Some(&role))?;
        roles.insert(role.name.clone(), role);
        Ok(())
    }

    /// Change a role in place; None when there is no such role.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut Role)) -> Result<Option<Role>, LogError> {
        let mut roles = self.write_map();
        let Some(mut role) = roles.get(name).cloned() else {
            return Ok(None);
        };
        f(&mut role);
        self.append(name, Some(&role))?;
        roles.insert(name.to_string(), role.clone());
        Ok(Some(role))
    }

    /// Remove a role; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, LogError> {
        let mut roles = self.write_map();
        if !roles.contains_key(name) {
            return Ok(false);
        }
        self.append(name, None)?;
        roles.remove(name);
        Ok(true)
    }

    /// Drop every privilege on `relation` (it was dropped: a new relation
    /// of the same name starts with none, as in PostgreSQL).
    pub fn forget_relation(&self, relation: &str) -> Result<(), LogError> {
        let holders: Vec<String> = self
            .read()
            .values()
            .filter(|r| r.grants.contains_key(relation))
            .map(|r| r.name.clone())
            .collect();
        for name in holders {
            self.update(&name, |r| {
                r.grants.remove(relation);
            })?;
        }
        Ok(())
    }

    /// The role a trusted connection named `user` acts as: the role of
    /// that name when there is one, else [`Role::trusted`].
    pub fn trusted(&self, user: &str) -> Role {
        self.get(user).unwrap_or_else(|| Role::trusted(user))
    }

    /// The role `user` and its secret if it may log in with a password
    /// (PostgreSQL's wording when not; the same for an unknown role, a role
    /// without a password and a wrong password, so a client cannot tell
    /// which names exist).
    pub fn login(&self, user: &str) -> Result<(Role, Secret), Refused> {
        let refused = || Refused::Password(user.to_string());
        let role = self.get(user).ok_or_else(refused)?;
        if !role.login {
            return Err(Refused::NoLogin(user.to_string()));
        }
        let secret = role.secret.clone().ok_or_else(refused)?;
        Ok((role, secret))
    }

    /// SASL/PLAIN: the role if `password` is its password.
    pub fn check_password(&self, user: &str, password: &str) -> Result<Role, Refused> {
        let (role, secret) = self.login(user)?;
        if secret.verify(password) {
            Ok(role)
        } else {
            Err(Refused::Password(user.to_string()))
        }
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Unknown role, no password, or the wrong one (28P01).
    #[error("password authentication failed for user \"{0}\"")]
    Password(String),
    /// A role without LOGIN (28000).
    #[error("role \"{0}\" is not permitted to log in")]
    NoLogin(String),
}

impl Refused {
    /// PostgreSQL's SQLSTATE for it.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Refused::Password(_) => "28P01",
            Refused::NoLogin(_) => "28000",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_checks_its_password_only() {
        let s = Secret::new("alice", "s3cret");
        assert!(s.verify("s3cret"));
        assert!(!s.verify("s3cret "));
        assert!(!s.verify(""));
        // PostgreSQL's md5: md5(password || user), then md5(that || salt).
        let inner = format!("{:x}", md5::compute("s3cretalice"));
        assert_eq!(s.md5, inner);
        let mut b = inner.into_bytes();
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            s.md5_answer(&[1, 2, 3, 4]),
            format!("md5{:x}", md5::compute(b))
        );
    }
}
