//! The server side of SCRAM (RFC 5802, RFC 7677) for Kafka's
//! SCRAM-SHA-256 and SCRAM-SHA-512 SASL mechanisms: two messages from the
//! client, two answers. pgwire's SCRAM implementation serves only
//! SHA-256 and is bound to PostgreSQL's messages, and no maintained crate
//! does SHA-512's server side, so the exchange is here (about a hundred
//! lines) on `ring`'s HMAC, digests and PBKDF2.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{Hash, Role, Roles, random_bytes};

/// Where an exchange stands.
#[derive(Debug)]
enum State {
    /// Waiting for client-first.
    Start,
    /// server-first sent; waiting for client-final.
    First {
        role: Box<Role>,
        salted: Vec<u8>,
        nonce: String,
        client_nonce: String,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
    },
    Done,
}

/// One SCRAM exchange on one connection.
#[derive(Debug)]
pub struct Exchange {
    hash: Hash,
    state: State,
}

/// `=2C` and `=3D` in a SCRAM username (RFC 5802 §5.1).
fn unescape(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

fn attribute(part: &str, key: char) -> Option<&str> {
    let mut chars = part.chars();
    (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
}

impl Exchange {
    pub fn new(hash: Hash) -> Exchange {
        Exchange {
            hash,
            state: State::Start,
        }
    }

    /// Take the next client message; the server's answer, and the role
    /// once the client has proved it holds the password. An error ends
    /// the exchange (its text is for the client).
    pub fn step(&mut self, roles: &Roles, msg: &[u8]) -> Result<(Vec<u8>, Option<Role>), String> {
        let msg = std::str::from_utf8(msg).map_err(|_| "SCRAM message is not UTF-8".to_string())?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => self.client_first(roles, msg).map(|m| (m, None)),
            State::First {
                role,
                salted,
                nonce,
                client_nonce,
                auth_prefix,
            } => self
                .client_final(msg, &salted, &nonce, &client_nonce, &auth_prefix)
                .map(|m| (m, Some(*role))),
            State::Done => Err("the SCRAM exchange is already over".into()),
        }
    }

    fn client_first(&mut self, roles: &Roles, msg: &str) -> Result<Vec<u8>, String> {
        // gs2-header: "n,," (no channel binding; Kafka has none) and an
        // optional authzid we ignore, then client-first-message-bare.
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        if cbind.starts_with('p') {
            return Err("SCRAM channel binding is not supported".into());
        }
        let _authzid = parts.next();
        let bare = parts
            .next()
            .ok_or_else(|| "malformed SCRAM client-first message".to_string())?;
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| attribute(f, 'n'))
            .map(unescape)
            .ok_or_else(|| "SCRAM client-first message has no user name".to_string())?;
        let client_nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "SCRAM client-first message has no nonce".to_string())?;
        let (role, secret) = roles.login(&user).map_err(|e| e.to_string())?;
        let (salt, salted) = secret
            .scram(self.hash)
            .ok_or_else(|| format!("password authentication failed for user \"{user}\""))?;
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&salt), secret.iterations);
        self.state = State::First {
            role: Box::new(role),
            salted,
            nonce,
            client_nonce: client_nonce.to_string(),
            auth_prefix: format!("{bare},{server_first}"),
        };
        Ok(server_first.into_bytes())
    }

    fn client_final(
        &mut self,
        msg: &str,
        salted: &[u8],
        nonce: &str,
        client_nonce: &str,
        auth_prefix: &str,
    ) -> Result<Vec<u8>, String> {
        let malformed = || "malformed SCRAM client-final message".to_string();
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or_else(malformed)?;
        let mut fields = without_proof.split(',');
        let _binding = fields
            .next()
            .and_then(|f| attribute(f, 'c'))
            .ok_or_else(malformed)?;
        let got_nonce = fields
            .next()
            .and_then(|f| attribute(f, 'r'))
            .ok_or_else(malformed)?;
        // librdkafka 2.0 (Debian's kcat) echoes its own nonce before the
        // combined one; the server's part is there either way, and the
        // proof covers the message as sent.
        let echoed = got_nonce == nonce || got_nonce.strip_prefix(client_nonce) == Some(nonce);
        if !echoed {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = B64.decode(proof).map_err(|_| malformed())?;
        let auth_message = format!("{auth_prefix},{without_proof}");
        let server_signature = verify(self.hash, salted, &auth_message, &proof)
            .ok_or_else(|| "authentication failed: invalid credentials".to_string())?;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// Check a client's proof for `auth_message` against SaltedPassword; the
/// server's signature when it holds.
fn verify(hash: Hash, salted: &[u8], auth_message: &str, proof: &[u8]) -> Option<Vec<u8>> {
    let hmac = |key: &[u8], data: &[u8]| {
        ring::hmac::sign(&ring::hmac::Key::new(hash.hmac(), key), data)
            .as_ref()
            .to_vec()
    };
    let client_key = hmac(salted, b"Client Key");
    let stored_key = ring::digest::digest(hash.digest(), &client_key);
    let signature = hmac(stored_key.as_ref(), auth_message.as_bytes());
    if proof.len() != signature.len() {
        return None;
    }
    // ClientKey = proof XOR ClientSignature; the client knows the password
    // when H(ClientKey) is the stored key (compared in constant time).
    let claimed: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    let claimed_stored = ring::digest::digest(hash.digest(), &claimed);
    let differ = claimed_stored
        .as_ref()
        .iter()
        .zip(stored_key.as_ref())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differ != 0 {
        return None;
    }
    Some(hmac(&hmac(salted, b"Server Key"), auth_message.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as RFC 5802 §3 computes it.
    fn client_final(
        hash: Hash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let mut salt = Vec::new();
        let mut iters = 0;
        let mut nonce = "";
        for f in server_first.split(',') {
            if let Some(s) = f.strip_prefix("s=") {
                salt = B64.decode(s).unwrap_or_default();
            } else if let Some(i) = f.strip_prefix("i=") {
                iters = i.parse().unwrap_or(0);
            } else if let Some(r) = f.strip_prefix("r=") {
                nonce = r;
            }
        }
        let salted = super::super::salted_password(hash, password, &salt, iters);
        let hmac = |key: &[u8], data: &[u8]| {
            ring::hmac::sign(&ring::hmac::Key::new(hash.hmac(), key), data)
                .as_ref()
                .to_vec()
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let client_key = hmac(&salted, b"Client Key");
        let stored = ring::digest::digest(hash.digest(), &client_key);
        let sig = hmac(stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_sig = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            server_sig,
        )
    }

    fn roles_with(name: &str, password: &str) -> std::sync::Arc<Roles> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crate::log::Log::open(dir.path(), Default::default()).expect("log");
        let roles = Roles::open(log).expect("roles");
        roles
            .put(Role {
                name: name.into(),
                login: true,
                superuser: false,
                secret: Some(super::super::Secret::new(name, password)),
                grants: Default::default(),
            })
            .expect("put");
        std::mem::forget(dir);
        roles
    }

    #[test]
    fn rfc7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap_or_default();
        let salted = super::super::salted_password(Hash::Sha256, "pencil", &salt, 4096);
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!(
            "n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
        );
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap_or_default();
        let sig = verify(Hash::Sha256, &salted, &auth, &proof).expect("the RFC's proof holds");
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(verify(Hash::Sha256, &salted, &auth, &wrong).is_none());
    }

    #[test]
    fn exchange_proves_the_password_both_hashes() {
        let roles = roles_with("a,b", "pencil");
        for hash in [Hash::Sha256, Hash::Sha512] {
            let bare = "n=a=2Cb,r=fyko+d2lbbFgONRv9qkxdawL";
            let mut ex = Exchange::new(hash);
            let (first, role) = ex
                .step(&roles, format!("n,,{bare}").as_bytes())
                .expect("first");
            assert!(role.is_none());
            let first = String::from_utf8(first).expect("utf8");
            let (fin, server_sig) = client_final(hash, "pencil", bare, &first);
            let (last, role) = ex.step(&roles, fin.as_bytes()).expect("final");
            assert_eq!(role.map(|r| r.name), Some("a,b".to_string()));
            assert_eq!(
                String::from_utf8(last).expect("utf8"),
                format!("v={}", B64.encode(server_sig))
            );

            let mut ex = Exchange::new(hash);
            let (first, _) = ex
                .step(&roles, format!("n,,{bare}").as_bytes())
                .expect("first");
            let first = String::from_utf8(first).expect("utf8");
            let (fin, _) = client_final(hash, "pencils", bare, &first);
            assert!(ex.step(&roles, fin.as_bytes()).is_err());
        }
        let mut ex = Exchange::new(Hash::Sha256);
        assert!(ex.step(&roles, b"n,,n=nobody,r=abc").is_err());
        assert!(ex.step(&roles, b"garbage").is_err());
    }
}
