//! Authenticating requests by SIP digest (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! The relay offers SHA-256 and MD5 challenges with `qop=auth` and stateless nonces (any node
//! holding the shared secret can verify them). An unknown user and a wrong password get the
//! same answer after the same work, so a caller cannot learn which user names exist. Wrong
//! credentials from one source address are counted and the source is blocked for a while.

use crate::relay::directory::Snapshot;
use crate::relay::throttle::AuthThrottle;
use crate::sip::digest::{self, Algorithm, NonceKey, NonceStatus};
use rsipstack::sip::{Header, Request};
use std::net::IpAddr;

/// Which pair of headers carries the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 407 Proxy-Authenticate / Proxy-Authorization.
    Proxy,
    /// 401 WWW-Authenticate / Authorization.
    Www,
}

impl ChallengeKind {
    pub fn status(self) -> u16 {
        match self {
            ChallengeKind::Proxy => 407,
            ChallengeKind::Www => 401,
        }
    }
}

/// What to do with a request after checking its credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The request carries valid credentials of this user.
    Authenticated(String),
    /// Answer with a challenge (`stale` when the nonce was ours but expired).
    Challenge { stale: bool },
    /// Credentials were wrong (unknown user or wrong password: indistinguishable).
    Forbidden,
    /// The source sent too many wrong credentials; retry after this many seconds.
    Blocked { retry_after_secs: u64 },
    /// The credentials header could not be parsed.
    Malformed,
}

/// Settings of the authenticator.
pub struct AuthSettings {
    pub realm: String,
    pub nonce_secret: Vec<u8>,
    pub nonce_lifetime_ms: i64,
    pub failure_limit: u32,
    pub failure_window_ms: i64,
    pub block_ms: i64,
    /// Offered in this order, one challenge each.
    pub algorithms: Vec<Algorithm>,
}

/// Digest verification with its nonce key and failure throttle; owned by the relay core.
pub struct Authenticator {
    realm: String,
    nonces: NonceKey,
    nonce_lifetime_ms: i64,
    throttle: AuthThrottle,
    algorithms: Vec<Algorithm>,
}

/// An HA1 that matches no password; used for unknown users so both paths do the same work.
const DECOY_HA1: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            nonces: NonceKey::new(&settings.nonce_secret),
            nonce_lifetime_ms: settings.nonce_lifetime_ms,
            throttle: AuthThrottle::new(
                settings.failure_limit,
                settings.failure_window_ms,
                settings.block_ms,
            ),
            realm: settings.realm,
            algorithms: settings.algorithms,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Checks the credentials of `req` for our realm.
    pub fn check(
        &mut self,
        req: &Request,
        kind: ChallengeKind,
        directory: &Snapshot,
        source: IpAddr,
        now_ms: i64,
    ) -> AuthOutcome {
        if let Some(retry_after_secs) = self.throttle.is_blocked(source, now_ms) {
            return AuthOutcome::Blocked { retry_after_secs };
        }
        let Some(value) = credentials_for_realm(req, kind, &self.realm) else {
            return AuthOutcome::Challenge { stale: false };
        };
        let creds = match digest::parse_credentials(value) {
            Ok(c) => c,
            Err(_) => return AuthOutcome::Malformed,
        };
        match self
            .nonces
            .check(&creds.nonce, now_ms, self.nonce_lifetime_ms)
        {
            NonceStatus::Valid => {}
            NonceStatus::Stale => return AuthOutcome::Challenge { stale: true },
            NonceStatus::Invalid => {
                self.throttle.record_failure(source, now_ms);
                return AuthOutcome::Challenge { stale: false };
            }
        }
        let user = directory.users.get(&creds.username);
        let ha1 = match (user, creds.algorithm) {
            (Some(u), Algorithm::Md5) => u.ha1_md5.as_str(),
            (Some(u), Algorithm::Sha256) => u.ha1_sha256.as_str(),
            _ => DECOY_HA1,
        };
        let method = req.method.to_string();
        if digest::verify(&creds, &method, ha1) && user.is_some() {
            self.throttle.record_success(source);
            AuthOutcome::Authenticated(creds.username)
        } else {
            self.throttle.record_failure(source, now_ms);
            AuthOutcome::Forbidden
        }
    }

    /// The challenge headers for a 401/407 (one per offered algorithm, SHA-256 first).
    pub fn challenge(&self, kind: ChallengeKind, stale: bool, now_ms: i64) -> Vec<Header> {
        let nonce = self.nonces.issue(now_ms);
        digest::challenge_headers(&self.realm, &nonce, stale, &self.algorithms)
            .into_iter()
            .map(|value| match kind {
                ChallengeKind::Proxy => {
                    Header::ProxyAuthenticate(rsipstack::sip::ProxyAuthenticate::new(value))
                }
                ChallengeKind::Www => {
                    Header::WwwAuthenticate(rsipstack::sip::WwwAuthenticate::new(value))
                }
            })
            .collect()
    }
}

/// The credentials header value addressed to `realm`, if any.
fn credentials_for_realm<'a>(
    req: &'a Request,
    kind: ChallengeKind,
    realm: &str,
) -> Option<&'a str> {
    let needle = format!("realm=\"{realm}\"");
    req.headers.iter().find_map(|h| {
        let value = match (kind, h) {
            (ChallengeKind::Proxy, Header::ProxyAuthorization(v)) => v.value(),
            (ChallengeKind::Www, Header::Authorization(v)) => v.value(),
            _ => return None,
        };
        value
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
            .then_some(value)
    })
}
