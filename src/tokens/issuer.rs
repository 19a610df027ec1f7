//! [`TokenIssuer`]: the relay's signing side.
//!
//! Everything [`TokenIssuer::mint`] needs (the current key, parsed and ready, and a prebuilt
//! header) sits in one immutable [`Keyring`] behind an `ArcSwap`: minting takes a lock-free
//! snapshot, never touches the database, and never waits. [`TokenIssuer::reload`] builds a new
//! keyring from the database and swaps it in; tokens being minted meanwhile finish on the old
//! one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Header;

use super::keys::{self, PrivateKey, Signer};
use super::verifier::{TokenVerifier, VerifyKey};
use super::{ensure_keys, rotate, Algorithm, Claims, RotationReport, TokenConfig, TokenError};
use super::{DEFAULT_LEEWAY, TOKEN_TYPE};
use crate::clock::Millis;
use crate::store::{KeyStatus, SigningKeyRecord, Store};

/// Mints session tokens and publishes the keys that verify them.
///
/// Cheap to clone (one `Arc`), `Send + Sync`: share one among every task of the relay and the
/// HTTP server. `Debug` shows key ids only.
#[derive(Clone)]
pub struct TokenIssuer {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TokenConfig,
    ring: ArcSwap<Keyring>,
}

/// One consistent view of the keys, as of one read of the database.
struct Keyring {
    current_kid: String,
    current_alg: Algorithm,
    signer: Signer,
    /// The JWS header of every token, base64url-encoded once.
    encoded_header: String,
    jwks: JwkSet,
    verify_keys: Arc<HashMap<String, VerifyKey>>,
}

impl TokenIssuer {
    /// Reads the signing keys from `store`, first creating a current and a next key (of
    /// `cfg.algorithm`) when either is missing, as on a relay's first start. Retired keys whose
    /// grace period has ended by `now_ms` are not published.
    ///
    /// This is the relay's start for its keys: every stored private key must open with
    /// `cfg.key_encryption_key` (a missing or wrong one fails, naming the key), keys stored in
    /// the clear are sealed when there is one, and without one a warning says that private
    /// keys are stored in the clear.
    pub async fn load(
        store: &Store,
        cfg: TokenConfig,
        now_ms: Millis,
    ) -> Result<TokenIssuer, TokenError> {
        cfg.validate()?;
        if cfg.key_encryption_key.is_none() {
            tracing::warn!(
                "token signing keys are stored in the clear in the database: set [tokens] \
                 key_encryption_key or TOLLGATE_KEY_ENCRYPTION_KEY (make one with `tollgate \
                 keys generate-kek`) to encrypt them"
            );
        }
        let records = ensure_keys(store, &cfg, now_ms).await?;
        TokenIssuer::from_records(cfg, &records, now_ms)
    }

    /// An issuer over keys already read (no database); the keys must include a current one.
    pub(super) fn from_records(
        cfg: TokenConfig,
        records: &[SigningKeyRecord],
        now_ms: Millis,
    ) -> Result<TokenIssuer, TokenError> {
        cfg.validate()?;
        let ring = Keyring::build(&cfg, records, now_ms)?;
        Ok(TokenIssuer {
            inner: Arc::new(Inner {
                cfg,
                ring: ArcSwap::from_pointee(ring),
            }),
        })
    }

    /// Reads the keys again, picking up a rotation made by another process or relay node, and
    /// drops retired keys whose grace period has ended by `now_ms` from the JWK set. Creates
    /// nothing: if the database has lost its current key, this fails and the issuer keeps its
    /// keys. Call it periodically (every minute, say): well within the grace period.
    pub async fn reload(&self, store: &Store, now_ms: Millis) -> Result<(), TokenError> {
        let records = store.signing_keys().await?;
        let ring = Keyring::build(&self.inner.cfg, &records, now_ms)?;
        let old = self.inner.ring.swap(Arc::new(ring));
        let new = self.inner.ring.load();
        if old.current_kid != new.current_kid {
            tracing::info!(
                kid = %new.current_kid,
                previous = %old.current_kid,
                "now signing session tokens with a new key"
            );
        }
        Ok(())
    }

    /// Rotates the keys in `store` (see [`super::rotate`]) and reloads this issuer.
    pub async fn rotate(
        &self,
        store: &Store,
        now_ms: Millis,
    ) -> Result<RotationReport, TokenError> {
        let report = rotate(store, &self.inner.cfg, now_ms).await?;
        self.reload(store, now_ms).await?;
        Ok(report)
    }

    /// Mints a token for `user` to present to the application server `audience`, for session
    /// `session_id` of `service` (`name@domain`), issued at `now_ms`. Synchronous and
    /// database-free: it runs on the relay's message path.
    ///
    /// Returns the compact JWT and its claims (`exp` gives the hand-over's `expires_at`).
    pub fn mint(
        &self,
        user: &str,
        audience: &str,
        session_id: &str,
        service: &str,
        now_ms: Millis,
    ) -> Result<(String, Claims), TokenError> {
        for (name, value) in [
            ("sub", user),
            ("aud", audience),
            ("sid", session_id),
            ("svc", service),
        ] {
            if value.is_empty() {
                return Err(TokenError::Mint(format!("claim {name} must not be empty")));
            }
        }
        let ring = self.inner.ring.load();
        let iat = now_ms.div_euclid(1000);
        let claims = Claims {
            iss: self.inner.cfg.issuer.clone(),
            sub: user.to_owned(),
            aud: audience.to_owned(),
            sid: session_id.to_owned(),
            svc: service.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(self.inner.cfg.ttl_secs()),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Mint(e.to_string()))?;
        let mut token = ring.encoded_header.clone();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = ring.signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok((token, claims))
    }

    /// The public keys to publish at `/.well-known/jwks.json`: current, next, and retired keys
    /// still in their grace period (as of the last load or reload). Each has `kid`, `alg` and
    /// `use: "sig"`; none has a private member.
    pub fn jwks(&self) -> JwkSet {
        self.inner.ring.load().jwks.clone()
    }

    /// A verifier for tokens meant for `audience`, over the keys this issuer publishes, with
    /// the default leeway. For the relay's own checks (introspection).
    pub fn verifier(&self, audience: impl Into<String>) -> TokenVerifier {
        let ring = self.inner.ring.load();
        TokenVerifier::from_parts(
            Arc::clone(&ring.verify_keys),
            self.inner.cfg.issuer.clone(),
            audience.into(),
            DEFAULT_LEEWAY,
        )
    }

    /// The `kid` new tokens are signed with.
    pub fn current_kid(&self) -> String {
        self.inner.ring.load().current_kid.clone()
    }

    /// The algorithm of the key new tokens are signed with (may differ from the configured
    /// algorithm until rotations have brought a key of that algorithm forward).
    pub fn current_algorithm(&self) -> Algorithm {
        self.inner.ring.load().current_alg
    }

    /// The settings this issuer was loaded with.
    pub fn config(&self) -> &TokenConfig {
        &self.inner.cfg
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.inner.ring.load();
        let published: Vec<_> = ring
            .jwks
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.as_deref())
            .collect();
        f.debug_struct("TokenIssuer")
            .field("cfg", &self.inner.cfg)
            .field("current_kid", &ring.current_kid)
            .field("published", &published)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keyring for `records` at `now_ms`: the current key loaded for signing, and the
    /// current, next and in-grace retired keys published.
    fn build(
        cfg: &TokenConfig,
        records: &[SigningKeyRecord],
        now_ms: Millis,
    ) -> Result<Keyring, TokenError> {
        let current = records
            .iter()
            .find(|k| k.status == KeyStatus::Current)
            .ok_or_else(|| TokenError::Key("the database holds no current signing key".into()))?;
        let current_alg: Algorithm = current.algorithm.parse()?;
        let PrivateKey { signer, public } =
            keys::load_private(current, cfg.key_encryption_key.as_ref())?;

        let grace_ms = cfg.grace_ms();
        let mut published = Vec::new();
        for record in records {
            let publish = match record.status {
                KeyStatus::Current | KeyStatus::Next => true,
                KeyStatus::Retired => record
                    .retired_at
                    .is_some_and(|at| now_ms < at.saturating_add(grace_ms)),
            };
            if !publish {
                continue;
            }
            let jwk = keys::load_public(record)?;
            if record.status == KeyStatus::Current && jwk != public {
                return Err(TokenError::Key(format!(
                    "the stored public key of {} does not match its private key",
                    record.kid
                )));
            }
            published.push(jwk);
        }
        // Current first, then next, then retired keys: the order the store returns them in.
        let jwks = JwkSet { keys: published };
        let verify_keys = Arc::new(VerifyKey::from_jwks(&jwks)?);

        let mut header = Header::new(current_alg.jwt());
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(current.kid.clone());
        let header_json = serde_json::to_vec(&header)
            .map_err(|e| TokenError::Key(format!("encode the token header: {e}")))?;
        Ok(Keyring {
            current_kid: current.kid.clone(),
            current_alg,
            signer,
            encoded_header: URL_SAFE_NO_PAD.encode(header_json),
            jwks,
            verify_keys,
        })
    }
}
