//! [`TokenVerifier`]: verifying a session token with the relay's published JWK set.
//!
//! This is the module a Rust application server uses (fetch `/.well-known/jwks.json`, build a
//! verifier, call [`TokenVerifier::verify`] on every token), and the one the relay uses itself.
//! It applies RFC 8725 (JWT Best Current Practices), in this order:
//!
//! 1. the token is at most [`MAX_TOKEN_LEN`] bytes, a compact JWS of exactly three parts,
//!    and its header parses;
//! 2. `alg` is on the allow-list, ES256 or EdDSA: `none`, the `HS*` family (the classic
//!    "public key as HMAC secret" forgery) and everything else are refused before any key is
//!    touched (§3.1);
//! 3. `typ` is [`TOKEN_TYPE`] (explicit typing, §3.11), and there is no `crit` header;
//! 4. `kid` names a key of the set, and that key's own algorithm is the header's `alg`, so a
//!    key is only ever used with the one algorithm it was made for (§3.1);
//! 5. the signature verifies;
//! 6. `iss` is the expected issuer and `aud` the expected audience (§3.9, §3.10);
//! 7. `exp`, `nbf` and `iat` against the caller's clock, with a small leeway
//!    ([`DEFAULT_LEEWAY`], 5 s) for skew.
//!
//! jsonwebtoken does steps 5 and 6 (and re-checks 2). It reads the system clock for `exp`
//! and `nbf` and cannot be handed another one, so its own time checks are turned off and step 7
//! is done here, against the `now_ms` the caller passes: the relay's injected clock, and tests
//! that move time without sleeping. `nbf` is always checked (jsonwebtoken skips it unless told).
//! `exp`, `nbf`, `iss`, `aud` and `sub` must all be present.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};

use super::{Algorithm, Claims, TokenError, DEFAULT_LEEWAY, TOKEN_TYPE};
use crate::clock::Millis;

/// The longest token [`TokenVerifier::verify`] looks at; ours are well under 1 KiB. Anything
/// longer is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies session tokens for one audience against a JWK set.
///
/// Cheap to clone (the keys are shared); [`TokenVerifier::for_audience`] makes a verifier for
/// another audience over the same keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<HashMap<String, VerifyKey>>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

/// A public key of the set, with the one algorithm it may verify.
#[derive(Clone)]
pub(super) struct VerifyKey {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

impl TokenVerifier {
    /// A verifier accepting tokens signed by a key of `jwks`, issued by `issuer` (the relay's
    /// public base URL) for `audience` (the application server's id), with [`DEFAULT_LEEWAY`].
    ///
    /// Keys that are not ES256 (P-256) or EdDSA (Ed25519) signing keys are ignored; a usable
    /// key without a `kid`, or one that does not decode, is an error, and so is a set without
    /// a single usable key.
    pub fn new(
        jwks: &JwkSet,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<TokenVerifier, TokenError> {
        Ok(TokenVerifier::from_parts(
            Arc::new(VerifyKey::from_jwks(jwks)?),
            issuer.into(),
            audience.into(),
            DEFAULT_LEEWAY,
        ))
    }

    pub(super) fn from_parts(
        keys: Arc<HashMap<String, VerifyKey>>,
        issuer: String,
        audience: String,
        leeway: Duration,
    ) -> TokenVerifier {
        TokenVerifier {
            keys,
            issuer,
            audience,
            leeway,
        }
    }

    /// The same verifier with another clock-skew allowance.
    pub fn with_leeway(mut self, leeway: Duration) -> TokenVerifier {
        self.leeway = leeway;
        self
    }

    /// A verifier over the same keys and issuer for another audience.
    pub fn for_audience(&self, audience: impl Into<String>) -> TokenVerifier {
        TokenVerifier {
            audience: audience.into(),
            ..self.clone()
        }
    }

    /// Verifies `token` at `now_ms` (milliseconds since the Unix epoch) and returns its claims.
    /// See the module documentation for the rules, in order.
    pub fn verify(&self, token: &str, now_ms: Millis) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not a compact JWS (three dot-separated parts)".into(),
            ));
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| TokenError::Malformed("the header is not base64url JSON".into()))?;

        let alg = match header.get("alg") {
            Some(serde_json::Value::String(alg)) => alg.as_str(),
            Some(other) => return Err(TokenError::AlgorithmNotAllowed(other.to_string())),
            None => return Err(TokenError::AlgorithmNotAllowed(String::new())),
        };
        let algorithm = match alg {
            "ES256" => Algorithm::Es256,
            "EdDSA" => Algorithm::EdDsa,
            other => return Err(TokenError::AlgorithmNotAllowed(other.to_owned())),
        };
        if header.get("typ").and_then(serde_json::Value::as_str) != Some(TOKEN_TYPE) {
            return Err(TokenError::Malformed(format!(
                "the header typ is not {TOKEN_TYPE}"
            )));
        }
        if header.get("crit").is_some() {
            return Err(TokenError::Malformed(
                "the header has critical extensions".into(),
            ));
        }
        let kid = header
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        if key.algorithm != algorithm {
            return Err(TokenError::AlgorithmNotAllowed(alg.to_owned()));
        }

        let mut validation = Validation::new(algorithm.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.validate_aud = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(map_decode_error)?
            .claims;

        let leeway_ms = i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX);
        if now_ms >= claims.exp.saturating_mul(1000).saturating_add(leeway_ms) {
            return Err(TokenError::Expired);
        }
        let latest_start = now_ms.saturating_add(leeway_ms);
        if claims.nbf.saturating_mul(1000) > latest_start
            || claims.iat.saturating_mul(1000) > latest_start
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The key ids this verifier accepts.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.kids().collect();
        kids.sort_unstable();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// jsonwebtoken's verdict as ours.
fn map_decode_error(err: jsonwebtoken::errors::Error) -> TokenError {
    match err.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::MissingClaim(claim.clone())
        }
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::AlgorithmNotAllowed(err.to_string()),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
            TokenError::Key(format!("a key of the set does not verify: {err}"))
        }
        _ => TokenError::Malformed(err.to_string()),
    }
}

impl VerifyKey {
    /// The usable keys of `jwks` by `kid` (see [`TokenVerifier::new`]).
    pub(super) fn from_jwks(jwks: &JwkSet) -> Result<HashMap<String, VerifyKey>, TokenError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let Some(algorithm) = signing_algorithm(jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone().ok_or_else(|| {
                TokenError::Key(format!("a {algorithm} key of the set has no kid"))
            })?;
            check_public_key(jwk).map_err(|what| TokenError::Key(format!("JWK {kid}: {what}")))?;
            let decoding = DecodingKey::from_jwk(jwk)
                .map_err(|e| TokenError::Key(format!("JWK {kid}: {e}")))?;
            keys.entry(kid).or_insert(VerifyKey {
                algorithm,
                decoding,
            });
        }
        if keys.is_empty() {
            return Err(TokenError::Key(
                "the key set has no ES256 or EdDSA signing key".into(),
            ));
        }
        Ok(keys)
    }
}

/// The allowed algorithm this JWK verifies, or `None` for a key to ignore: an encryption key,
/// another algorithm, or an `alg` that does not fit the key type. Without `alg` the key type
/// decides (P-256 → ES256, Ed25519 → EdDSA).
fn signing_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::KeyAlgorithm;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::Es256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDsa
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::Es256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDsa => Some(by_type),
        Some(_) => None,
    }
}

/// Whether the JWK's coordinates make a valid public key (a point on the curve).
fn check_public_key(jwk: &Jwk) -> Result<(), String> {
    let decode = |b64: &str| -> Result<[u8; 32], String> {
        URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "a coordinate is not 32 bytes".to_owned())
    };
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            let mut sec1 = vec![0x04];
            sec1.extend_from_slice(&decode(&p.x)?);
            sec1.extend_from_slice(&decode(&p.y)?);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(drop)
                .map_err(|_| "not a point on P-256".to_owned())
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            ed25519_dalek::VerifyingKey::from_bytes(&decode(&p.x)?)
                .map(drop)
                .map_err(|_| "not an Ed25519 public key".to_owned())
        }
        _ => Err("not an elliptic-curve key".to_owned()),
    }
}
