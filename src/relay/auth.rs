//! Authenticating requests by SIP digest (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! The relay challenges with `qop=auth` and stateless nonces bound to the client's source
//! address (any node holding the shared secret can verify them, but only for a request from
//! the address the nonce was issued to). Credentials buy a request only when all of these hold:
//!
//! - the nonce verifies for this source under a current or previous secret and is not stale;
//! - the response uses `qop=auth` (RFC 2069 responses carry no nonce count: replayable);
//! - `uri=` is the Request-URI, or a SIP URI without user part naming this relay (sipp writes
//!   the relay's address there), so credentials for another service cannot be reused;
//! - `nc` is higher than any this node accepted for the nonce ([`NcCache`]);
//! - the response matches the user's stored HA1.
//!
//! A request failing one of the first four gets a fresh challenge and is never forwarded.
//!
//! An unknown user and a wrong password get the same answer after the same work, so a caller
//! cannot learn which user names exist. Only wrong passwords carrying a nonce this relay
//! issued to the very source count toward throttling (such a nonce proves the source can
//! receive at its address, so a flood with spoofed source addresses or made-up nonces cannot
//! lock out a victim), per source address and per user name; see
//! [`crate::relay::throttle`].

use crate::relay::directory::Snapshot;
use crate::relay::routing::LocalIdentity;
use crate::relay::throttle::{SourceThrottle, UserThrottle};
use crate::sip::digest::{self, Algorithm, Credentials, NonceId, NonceKeys, NonceStatus};
use rsipstack::sip::{Header, Request, Uri};
use std::collections::BTreeMap;
use std::hash::RandomState;
use std::net::IpAddr;
use tokio::sync::watch;

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
    /// Answer with a fresh challenge (`stale` when the nonce was ours but can no longer be
    /// used: expired, or forgotten by the nonce-count cache).
    Challenge { stale: bool },
    /// Credentials were wrong (unknown user or wrong password: indistinguishable).
    Forbidden,
    /// The source or the user had too many wrong credentials; retry after this many seconds.
    Blocked { retry_after_secs: u64 },
    /// The credentials header could not be parsed.
    Malformed,
}

/// Settings of the authenticator.
pub struct AuthSettings {
    pub realm: String,
    /// The nonce secrets, kept current by whoever rotates them.
    pub nonce_keys: watch::Receiver<NonceKeys>,
    pub nonce_lifetime_ms: i64,
    /// Wrong credentials per source address within the window before it is blocked.
    pub failure_limit: u32,
    /// Wrong credentials per user name within the window before it is blocked.
    pub user_failure_limit: u32,
    pub failure_window_ms: i64,
    pub block_ms: i64,
    /// Offered in this order, one challenge each.
    pub algorithms: Vec<Algorithm>,
    /// How many nonces' counts are remembered.
    pub nc_cache_entries: usize,
}

/// Digest verification with its nonce keys, nonce counts and failure throttles; owned by the
/// relay core.
pub struct Authenticator {
    realm: String,
    keys: watch::Receiver<NonceKeys>,
    nonce_lifetime_ms: i64,
    sources: SourceThrottle,
    users: UserThrottle,
    user_hasher: RandomState,
    counts: NcCache,
    algorithms: Vec<Algorithm>,
}

/// An HA1 that matches no password; used for unknown users so both paths do the same work.
const DECOY_HA1: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            keys: settings.nonce_keys,
            nonce_lifetime_ms: settings.nonce_lifetime_ms,
            sources: SourceThrottle::new(
                settings.failure_limit,
                settings.failure_window_ms,
                settings.block_ms,
            ),
            users: UserThrottle::new(
                settings.user_failure_limit,
                settings.failure_window_ms,
                settings.block_ms,
            ),
            user_hasher: RandomState::new(),
            counts: NcCache::new(settings.nc_cache_entries),
            realm: settings.realm,
            algorithms: settings.algorithms,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Checks the credentials of `req` for our realm; `source` is where it came from.
    pub fn check(
        &mut self,
        req: &Request,
        kind: ChallengeKind,
        directory: &Snapshot,
        local: &LocalIdentity,
        source: IpAddr,
        now_ms: i64,
    ) -> AuthOutcome {
        if let Some(retry_after_secs) = self.sources.is_blocked(source, now_ms) {
            return AuthOutcome::Blocked { retry_after_secs };
        }
        let Some(value) = credentials_for_realm(req, kind, &self.realm) else {
            return AuthOutcome::Challenge { stale: false };
        };
        let creds = match digest::parse_credentials(value) {
            Ok(c) => c,
            Err(_) => return AuthOutcome::Malformed,
        };
        let status = self
            .keys
            .borrow()
            .check(&creds.nonce, source, now_ms, self.nonce_lifetime_ms);
        let id = match status {
            NonceStatus::Valid(id) => id,
            NonceStatus::Stale => return AuthOutcome::Challenge { stale: true },
            // Forged, or issued to another address: proves nothing about the source, so it
            // does not count toward throttling.
            NonceStatus::Invalid => return AuthOutcome::Challenge { stale: false },
        };
        let Some(nc) = creds.nc.filter(|_| is_qop_auth(&creds)) else {
            return AuthOutcome::Challenge { stale: false };
        };
        if !uri_names_request(&creds.uri, req, local) {
            return AuthOutcome::Challenge { stale: false };
        }
        self.counts.expire(now_ms, self.nonce_lifetime_ms);
        match self.counts.admit(id, nc) {
            NcVerdict::Fresh => {}
            NcVerdict::Replayed => return AuthOutcome::Challenge { stale: false },
            NcVerdict::Forgotten => return AuthOutcome::Challenge { stale: true },
        }
        let user_key = UserThrottle::user_key(&self.user_hasher, &creds.username);
        if let Some(retry_after_secs) = self.users.is_blocked(user_key, now_ms) {
            return AuthOutcome::Blocked { retry_after_secs };
        }
        let user = directory.users.get(&creds.username);
        let ha1 = match (user, creds.algorithm) {
            (Some(u), Algorithm::Md5) => u.ha1_md5.as_str(),
            (Some(u), Algorithm::Sha256) => u.ha1_sha256.as_str(),
            _ => DECOY_HA1,
        };
        let method = req.method.to_string();
        if digest::verify(&creds, &method, ha1) && user.is_some() {
            self.counts.record(id, nc);
            self.sources.record_success(source);
            AuthOutcome::Authenticated(creds.username)
        } else {
            self.sources.record_failure(source, now_ms);
            self.users.record_failure(user_key, now_ms);
            AuthOutcome::Forbidden
        }
    }

    /// The challenge headers for a 401/407 to a client at `source` (one per offered
    /// algorithm, in the configured order).
    pub fn challenge(
        &self,
        kind: ChallengeKind,
        stale: bool,
        source: IpAddr,
        now_ms: i64,
    ) -> Vec<Header> {
        let nonce = self.keys.borrow().issue(now_ms, source);
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

fn is_qop_auth(creds: &Credentials) -> bool {
    creds
        .qop
        .as_deref()
        .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
}

/// Whether a digest `uri=` may stand for `req`: its Request-URI, or a URI without a user part
/// that names this relay.
fn uri_names_request(digest_uri: &str, req: &Request, local: &LocalIdentity) -> bool {
    let Ok(uri) = Uri::try_from(digest_uri) else {
        return false;
    };
    uri == req.uri || uri.auth.is_none() && local.is_me(&uri)
}

/// What the nonce-count cache says about a `(nonce, nc)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NcVerdict {
    /// Higher than any count accepted for this nonce.
    Fresh,
    /// Not higher than one already accepted: a replay.
    Replayed,
    /// The cache had to drop this nonce's count to stay bounded; the client must get a new
    /// nonce.
    Forgotten,
}

/// The highest `nc` accepted per nonce, bounded. When full, the oldest nonces are dropped and
/// every nonce issued no later than the newest dropped one counts as forgotten (answered
/// with a `stale` challenge), so dropping an entry can never let a replay through.
struct NcCache {
    max_entries: usize,
    counts: BTreeMap<NonceId, u32>,
    /// Nonces up to this one may have been dropped.
    floor: Option<NonceId>,
}

impl NcCache {
    fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            counts: BTreeMap::new(),
            floor: None,
        }
    }

    fn admit(&self, id: NonceId, nc: u32) -> NcVerdict {
        match self.counts.get(&id) {
            Some(&last) if nc <= last => NcVerdict::Replayed,
            Some(_) => NcVerdict::Fresh,
            None if self.floor.is_some_and(|f| id <= f) => NcVerdict::Forgotten,
            None => NcVerdict::Fresh,
        }
    }

    fn record(&mut self, id: NonceId, nc: u32) {
        self.counts.insert(id, nc);
        while self.counts.len() > self.max_entries {
            if let Some((dropped, _)) = self.counts.pop_first() {
                self.floor = Some(self.floor.map_or(dropped, |f| f.max(dropped)));
            }
        }
    }

    /// Drops the counts of nonces too old to be accepted anyway.
    fn expire(&mut self, now_ms: i64, lifetime_ms: i64) {
        while let Some(entry) = self.counts.first_entry() {
            if now_ms.saturating_sub(entry.key().issued_ms) <= lifetime_ms {
                break;
            }
            entry.remove();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(issued_ms: i64, random: u64) -> NonceId {
        NonceId { issued_ms, random }
    }

    #[test]
    fn nc_must_grow_per_nonce() {
        let mut c = NcCache::new(10);
        assert_eq!(c.admit(id(1, 1), 1), NcVerdict::Fresh);
        c.record(id(1, 1), 1);
        assert_eq!(c.admit(id(1, 1), 1), NcVerdict::Replayed);
        assert_eq!(c.admit(id(1, 1), 0), NcVerdict::Replayed);
        assert_eq!(c.admit(id(1, 1), 2), NcVerdict::Fresh);
        assert_eq!(c.admit(id(1, 2), 1), NcVerdict::Fresh, "another nonce");
        c.record(id(1, 1), 5);
        assert_eq!(c.admit(id(1, 1), 3), NcVerdict::Replayed);
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_and_never_lets_them_replay() {
        let mut c = NcCache::new(3);
        for t in 0..5 {
            c.record(id(t, 0), 1);
        }
        assert_eq!(c.counts.len(), 3);
        // Dropped nonces (issued at 0 and 1) and any unseen nonce no newer are forgotten.
        assert_eq!(c.admit(id(0, 0), 1), NcVerdict::Forgotten);
        assert_eq!(c.admit(id(1, 0), 2), NcVerdict::Forgotten);
        assert_eq!(c.admit(id(0, 9), 1), NcVerdict::Forgotten);
        assert_eq!(c.admit(id(4, 0), 1), NcVerdict::Replayed);
        assert_eq!(c.admit(id(9, 0), 1), NcVerdict::Fresh);
    }

    #[test]
    fn expired_nonces_leave_the_cache() {
        let mut c = NcCache::new(100);
        c.record(id(0, 0), 1);
        c.record(id(500, 0), 1);
        c.expire(1_000, 600);
        assert_eq!(c.counts.len(), 1);
        assert_eq!(c.floor, None, "expiry is not eviction");
    }
}
