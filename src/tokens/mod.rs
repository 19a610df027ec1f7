//! Session tokens: signing keys, minting, verification and the published JWK set.
//!
//! When the relay forwards an INVITE it mints a short-lived JWT naming the user (`sub`), the
//! application server it is meant for (`aud`), the session (`sid`) and the service (`svc`), so
//! the application server verifies a token instead of asking for a password.
//!
//! - [`TokenIssuer`] is the relay's side: [`TokenIssuer::load`] reads the signing keys from
//!   the [`Store`] (creating a current and a next key on first start), [`TokenIssuer::mint`]
//!   signs on the message path (synchronous, no database), [`TokenIssuer::jwks`] is what
//!   `/.well-known/jwks.json` serves, and [`TokenIssuer::reload`] picks up a rotation made by
//!   another process or node.
//! - [`rotate`] is `tollgate keys rotate`: next → current, current → retired, a new next key.
//! - [`TokenVerifier`] is the small verification module a Rust application server can use,
//!   built from a JWK set; it applies the RFC 8725 rules (algorithm allow-list, `kid` in the
//!   set, `iss`, `aud`, `exp`, `nbf`) against an explicit clock.
//!
//! Key life cycle (one row per key in `signing_keys`, see [`crate::store::KeyStatus`]):
//!
//! ```text
//!   generate ──► next ──rotate──► current ──rotate──► retired ──grace over──► unpublished,
//!              (published,      (signs new          (published so tokens     deleted at the
//!               not signing)     tokens)             it signed still verify)   next rotation
//! ```
//!
//! Private keys leave this module only into the database, sealed with the configured
//! [`KeyEncryptionKey`] when there is one (see `kek`), in the clear otherwise: they are never
//! served, logged or shown by a `Debug` impl. Decisions and their reasons:
//! `docs/decisions/0004-session-tokens.md`, `docs/decisions/0022-signing-keys-at-rest.md`.

mod issuer;
mod kek;
mod keys;
mod verifier;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::store::{Store, StoreError};

pub use issuer::TokenIssuer;
pub use kek::{KeyEncryptionKey, SEALED_PREFIX};
pub use verifier::{TokenVerifier, MAX_TOKEN_LEN};

/// The JOSE header `typ` of a Tollgate session token (explicit typing, RFC 8725 §3.11): a
/// verifier that requires it cannot be handed some other JWT signed by the same keys.
pub const TOKEN_TYPE: &str = "tollgate-session+jwt";

/// How long a token is valid by default: 5 minutes, enough to reach the application server and
/// open its page, short enough that a leaked token is soon worthless.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// How long a retired key stays published by default: 24 hours, far longer than any token's
/// lifetime and than any sensible JWK-set cache.
pub const DEFAULT_RETIRED_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The clock skew [`TokenVerifier`] tolerates on `exp`, `nbf` and `iat` by default: 5 seconds
/// (relay nodes and shops run NTP; a minute, jsonwebtoken's default, would stretch a 5-minute
/// token by a fifth).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The signature algorithm of new keys. Only these two are ever accepted by the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), the default: every JWT library has it.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037): smaller and faster, deterministic signatures; not every library has it.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    /// The JOSE name: `ES256` or `EdDSA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// The jsonwebtoken algorithm.
    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = TokenError;

    /// `ES256` or `EdDSA` (any case; `Ed25519` is taken for `EdDSA`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "eddsa" | "ed25519" => Ok(Algorithm::EdDsa),
            _ => Err(TokenError::Config(format!(
                "unknown token algorithm {s:?}: expected ES256 or EdDSA"
            ))),
        }
    }
}

/// How tokens are minted and keys rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The relay's public base URL (`[http] public_url`), the tokens' `iss`.
    pub issuer: String,
    /// Token lifetime (`exp - iat`), whole seconds; [`DEFAULT_TTL`] by default.
    pub ttl: Duration,
    /// Algorithm of newly generated keys. A change takes effect through rotation: the next
    /// rotation generates a next key of the new algorithm, the one after makes it current.
    pub algorithm: Algorithm,
    /// How long a retired key stays published; [`DEFAULT_RETIRED_GRACE`] by default. Must be
    /// at least `ttl` plus [`DEFAULT_LEEWAY`].
    pub retired_grace: Duration,
    /// Seals private keys at rest when set (see [`KeyEncryptionKey`]); without one they are
    /// stored in the clear and [`TokenIssuer::load`] warns.
    pub key_encryption_key: Option<KeyEncryptionKey>,
}

impl TokenConfig {
    /// The token settings of a relay configuration. The issuer is `[http] public_url`, or
    /// `http://` plus `http_addr` (the bound HTTP address) when that is unset. A malformed
    /// key-encryption key is refused here, naming the setting.
    pub fn from_config(
        config: &crate::config::Config,
        http_addr: std::net::SocketAddr,
    ) -> Result<TokenConfig, TokenError> {
        let issuer = config
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}"));
        Ok(TokenConfig {
            ttl: Duration::from_secs(config.tokens.ttl_secs),
            algorithm: config.tokens.algorithm.parse()?,
            retired_grace: Duration::from_secs(config.tokens.retired_grace_secs),
            key_encryption_key: config
                .tokens
                .key_encryption_key
                .as_ref()
                .map(|text| {
                    KeyEncryptionKey::from_base64(text.expose()).map_err(|e| {
                        TokenError::Config(format!(
                            "[tokens] key_encryption_key (or TOLLGATE_KEY_ENCRYPTION_KEY): {e}"
                        ))
                    })
                })
                .transpose()?,
            ..TokenConfig::new(issuer)
        })
    }

    /// The defaults for a relay reachable at `issuer`: no key-encryption key.
    pub fn new(issuer: impl Into<String>) -> TokenConfig {
        TokenConfig {
            issuer: issuer.into(),
            ttl: DEFAULT_TTL,
            algorithm: Algorithm::default(),
            retired_grace: DEFAULT_RETIRED_GRACE,
            key_encryption_key: None,
        }
    }

    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), TokenError> {
        if self.issuer.trim().is_empty() {
            return Err(TokenError::Config(
                "the token issuer (the relay's public URL) must not be empty".into(),
            ));
        }
        if self.ttl.as_secs() == 0 {
            return Err(TokenError::Config(
                "the token lifetime must be at least one second".into(),
            ));
        }
        if self.retired_grace < self.ttl + DEFAULT_LEEWAY {
            return Err(TokenError::Config(format!(
                "the retired-key grace period ({} s) must be at least the token lifetime \
                 ({} s) plus the {} s leeway, or tokens would stop verifying before they expire",
                self.retired_grace.as_secs(),
                self.ttl.as_secs(),
                DEFAULT_LEEWAY.as_secs()
            )));
        }
        Ok(())
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }

    fn grace_ms(&self) -> Millis {
        i64::try_from(self.retired_grace.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The claims of a session token. Times are NumericDate: seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The relay's public base URL.
    pub iss: String,
    /// The authenticated user.
    pub sub: String,
    /// The application server the token is for (its id).
    pub aud: String,
    /// The session id.
    pub sid: String,
    /// The service, `name@domain`.
    pub svc: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// A unique token id.
    pub jti: String,
}

impl Claims {
    /// `exp` in milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> Millis {
        self.exp.saturating_mul(1000)
    }
}

/// What went wrong minting, verifying, or managing keys.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token settings are unusable.
    #[error("{0}")]
    Config(String),
    /// A stored or generated key is unusable (never carries key material).
    #[error("signing key: {0}")]
    Key(String),
    /// A stored private key is sealed and no key-encryption key is configured.
    #[error(
        "signing key {kid} is encrypted at rest and no key-encryption key is configured: set \
         [tokens] key_encryption_key or TOLLGATE_KEY_ENCRYPTION_KEY to the key it was \
         encrypted with"
    )]
    KeyEncryptionKeyMissing { kid: String },
    /// A stored private key does not open with the configured key-encryption key.
    #[error(
        "signing key {kid} does not decrypt with the configured key-encryption key: it was \
         encrypted with another one, or its stored value was altered or moved from another row"
    )]
    KeyEncryptionKeyWrong { kid: String },
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed, or a claim to sign is empty.
    #[error("cannot mint a token: {0}")]
    Mint(String),
    /// Not a compact JWS, or its header or claims do not parse, or it is not a session token.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm outside the allow-list (ES256, EdDSA), e.g. `none` or
    /// `HS256`, or one that differs from its key's.
    #[error("token algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    /// The header's `kid` is missing or not in the key set.
    #[error("token key {0:?} is not in the key set")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("token issuer is not the expected one")]
    WrongIssuer,
    /// `aud` is not the expected audience.
    #[error("token is for another audience")]
    WrongAudience,
    /// A required claim is absent or has the wrong type.
    #[error("token claim {0} is missing or malformed")]
    MissingClaim(String),
}

impl TokenError {
    /// Whether this error is about the token presented (answer 401, or `active: false`),
    /// rather than a failure of the relay itself (answer 500).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            TokenError::Malformed(_)
                | TokenError::AlgorithmNotAllowed(_)
                | TokenError::UnknownKey(_)
                | TokenError::BadSignature
                | TokenError::Expired
                | TokenError::NotYetValid
                | TokenError::WrongIssuer
                | TokenError::WrongAudience
                | TokenError::MissingClaim(_)
        )
    }
}

/// What [`rotate`] did, for `tollgate keys rotate` to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// The key that now signs (the former next key).
    pub current_kid: String,
    /// The newly generated next key.
    pub next_kid: String,
    /// The former current key, now retired and still published for the grace period.
    pub retired_kid: String,
    /// Retired keys past their grace period, deleted by this rotation.
    pub deleted_kids: Vec<String>,
}

impl fmt::Display for RotationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "current {}\nnext {}\nretired {}",
            self.current_kid, self.next_kid, self.retired_kid
        )?;
        for kid in &self.deleted_kids {
            write!(f, "\ndeleted {kid}")?;
        }
        Ok(())
    }
}

/// Rotates the signing keys (`tollgate keys rotate`): the next key becomes current, the current
/// key is retired at `now_ms` and stays published for `cfg.retired_grace`, a new next key of
/// `cfg.algorithm` is generated, and retired keys past their grace period are deleted.
///
/// Works on a database that has no keys yet (they are created first). Running relays pick the
/// change up on their next [`TokenIssuer::reload`]; until then they keep signing with the
/// retired key, whose tokens verify for the whole grace period.
pub async fn rotate(
    store: &Store,
    cfg: &TokenConfig,
    now_ms: Millis,
) -> Result<RotationReport, TokenError> {
    cfg.validate()?;
    ensure_keys(store, cfg, now_ms).await?;
    let new_next = keys::generate(cfg.algorithm, cfg.key_encryption_key.as_ref())?;
    let delete_before = now_ms.saturating_sub(cfg.grace_ms());
    let done = store
        .rotate_signing_keys(new_next, now_ms, delete_before)
        .await?;
    tracing::info!(
        current = %done.current,
        next = %done.next,
        retired = %done.retired,
        deleted = done.deleted.len(),
        "rotated the token signing keys"
    );
    Ok(RotationReport {
        current_kid: done.current,
        next_kid: done.next,
        retired_kid: done.retired,
        deleted_kids: done.deleted,
    })
}

/// The stored keys, after creating a current and a next key where either is missing, and
/// after checking that every stored private key opens with `cfg`'s key-encryption key (the
/// start of a relay, or `tollgate keys rotate`, refuses a missing or wrong one before it
/// writes anything). With a key-encryption key, keys still stored in the clear are sealed in
/// place.
async fn ensure_keys(
    store: &Store,
    cfg: &TokenConfig,
    now_ms: Millis,
) -> Result<Vec<crate::store::SigningKeyRecord>, TokenError> {
    use crate::store::KeyStatus;
    let kek = cfg.key_encryption_key.as_ref();
    let stored = store.signing_keys().await?;
    for record in &stored {
        kek::open(&record.kid, &record.private_key, kek)?;
    }
    let stored = match kek {
        Some(kek) => seal_clear_keys(store, kek, stored).await?,
        None => stored,
    };
    let has = |status| stored.iter().any(|k| k.status == status);
    if has(KeyStatus::Current) && has(KeyStatus::Next) {
        return Ok(stored);
    }
    let keys = store
        .ensure_signing_keys(
            keys::generate(cfg.algorithm, kek)?,
            keys::generate(cfg.algorithm, kek)?,
            now_ms,
        )
        .await?;
    tracing::info!(algorithm = %cfg.algorithm, "created token signing keys");
    Ok(keys)
}

/// Seals the private keys in `stored` that are in the clear (an install from before a
/// key-encryption key was set) and returns the keys as stored afterwards. A row another node
/// sealed first is left as that node wrote it, and checked to open with `kek`.
async fn seal_clear_keys(
    store: &Store,
    kek: &KeyEncryptionKey,
    stored: Vec<crate::store::SigningKeyRecord>,
) -> Result<Vec<crate::store::SigningKeyRecord>, TokenError> {
    let clear: Vec<_> = stored
        .iter()
        .filter(|k| !kek::is_sealed(&k.private_key))
        .collect();
    if clear.is_empty() {
        return Ok(stored);
    }
    let mut sealed = Vec::new();
    for record in clear {
        let pem = kek::open(&record.kid, &record.private_key, None)?;
        let replacement = kek.seal(&record.kid, &pem)?;
        if store
            .replace_private_key(&record.kid, &record.private_key, replacement)
            .await?
        {
            sealed.push(record.kid.clone());
        }
    }
    let now = store.signing_keys().await?;
    for record in &now {
        kek::open(&record.kid, &record.private_key, Some(kek))?;
    }
    if !sealed.is_empty() {
        tracing::warn!(
            count = sealed.len(),
            kids = %sealed.join(","),
            "encrypted token signing keys found unencrypted, with the key-encryption key"
        );
    }
    Ok(now)
}
