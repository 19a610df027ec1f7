//! The relay's published keys, cached: a [`TokenVerifier`] built from the JWK set, refetched
//! when a token names a `kid` the cache does not know (a rotation happened) — at most once per
//! [`REFETCH_INTERVAL`], so a flood of made-up kids costs the relay one request, not one each
//! — and otherwise every [`MAX_AGE`], so retired keys drop out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::relay_api::RelayApi;
use super::ShopError;
use crate::clock::Millis;
use crate::tokens::{Claims, TokenError, TokenVerifier};

/// The shortest time between two fetches of the JWK set.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a fetched JWK set is used without looking again.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// Verifies session tokens for one shop against the relay's cached JWK set.
#[derive(Clone)]
pub struct KeyCache {
    api: RelayApi,
    issuer: String,
    audience: String,
    current: Arc<Mutex<Cached>>,
}

struct Cached {
    verifier: TokenVerifier,
    fetched: Instant,
}

impl KeyCache {
    /// Fetches the JWK set once; tokens must come from `issuer` (the relay's public URL) for
    /// `audience` (this shop's application-server id).
    pub async fn load(api: RelayApi, issuer: &str, audience: &str) -> Result<KeyCache, ShopError> {
        let verifier = fetch(&api, issuer, audience).await?;
        Ok(KeyCache {
            api,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            current: Arc::new(Mutex::new(Cached {
                verifier,
                fetched: Instant::now(),
            })),
        })
    }

    /// Verifies `token` at `now_ms`, refetching the keys once when it names an unknown `kid`
    /// (or the cache is older than [`MAX_AGE`]).
    pub async fn verify(&self, token: &str, now_ms: Millis) -> Result<Claims, TokenError> {
        let mut cached = self.current.lock().await;
        if cached.fetched.elapsed() >= MAX_AGE {
            self.refresh(&mut cached).await;
        }
        match cached.verifier.verify(token, now_ms) {
            Err(TokenError::UnknownKey(_)) if cached.fetched.elapsed() >= REFETCH_INTERVAL => {
                self.refresh(&mut cached).await;
                cached.verifier.verify(token, now_ms)
            }
            other => other,
        }
    }

    async fn refresh(&self, cached: &mut Cached) {
        // Whatever happens, wait REFETCH_INTERVAL before asking again.
        cached.fetched = Instant::now();
        match fetch(&self.api, &self.issuer, &self.audience).await {
            Ok(v) => cached.verifier = v,
            Err(e) => tracing::warn!(error = %e, "JWK set refetch failed; keeping the old keys"),
        }
    }
}

async fn fetch(api: &RelayApi, issuer: &str, audience: &str) -> Result<TokenVerifier, ShopError> {
    let jwks = api.jwks().await?;
    TokenVerifier::new(&jwks, issuer, audience)
        .map_err(|e| ShopError::Relay(format!("the relay's JWK set: {e}")))
}
