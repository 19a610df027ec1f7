//! Key material: generation, PKCS#8 PEM, public JWKs and key ids. With [`super::kek`], the
//! only place in the crate that holds a private key in the clear (the database row holds it
//! sealed when a key-encryption key is configured, in the clear otherwise).
//!
//! - ES256 keys are P-256 (`p256`), EdDSA keys are Ed25519 (`ed25519-dalek`); both come from
//!   the operating system's random generator and are stored as PKCS#8 PEM, sealed by
//!   [`super::kek`] when a key-encryption key is given.
//! - The `kid` is the key's RFC 7638 JWK thumbprint (SHA-256, base64url): deterministic, so a
//!   stored key can be checked against its id, and the same for every relay node.
//! - The published JWK carries `kty`, `crv`, `x` (and `y`), `kid`, `alg` and `use: "sig"`;
//!   never a private member.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, ThumbprintHash,
};
use p256::pkcs8::LineEnding;
use rand::rngs::OsRng;

use super::kek::{self, KeyEncryptionKey};
use super::{Algorithm, TokenError};
use crate::store::{NewSigningKey, SigningKeyRecord};

/// A private key loaded from its PEM, ready to sign. No `Debug`: nothing here may be printed.
pub(super) struct PrivateKey {
    pub(super) signer: Signer,
    pub(super) public: Jwk,
}

/// A private key parsed once, ready to sign on the message path: `jsonwebtoken::encode`
/// parses the PKCS#8 document again (and recomputes the public point) on every token, which
/// was a tenth of the relay's work per call. Its `JwtSigner` is not `Send`, so it cannot be
/// kept either; the key pairs of aws-lc-rs (jsonwebtoken's own backend) can.
pub(super) enum Signer {
    Es256(signature::EcdsaKeyPair),
    EdDsa(signature::Ed25519KeyPair),
}

impl Signer {
    /// The signature of `message`, as a JWS wants it (ES256: `r || s`, RFC 7518 §3.4).
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        match self {
            Signer::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| TokenError::Mint("ES256 signing failed".into())),
            Signer::EdDsa(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// A new key pair of `algorithm`, ready to store: its private key sealed with `kek` when one
/// is given.
pub(super) fn generate(
    algorithm: Algorithm,
    kek: Option<&KeyEncryptionKey>,
) -> Result<NewSigningKey, TokenError> {
    let (private_pem, public) = match algorithm {
        Algorithm::Es256 => {
            let key = p256::ecdsa::SigningKey::random(&mut OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| TokenError::Key(format!("encode a new ES256 key: {e}")))?;
            (pem, es256_public_jwk(key.verifying_key())?)
        }
        Algorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| TokenError::Key(format!("encode a new EdDSA key: {e}")))?;
            (pem, eddsa_public_jwk(&key.verifying_key())?)
        }
    };
    let kid = public
        .common
        .key_id
        .clone()
        .ok_or_else(|| TokenError::Key("a new public key has no kid".into()))?;
    let public_jwk = serde_json::to_string(&public)
        .map_err(|e| TokenError::Key(format!("encode a public JWK: {e}")))?;
    let private_key = match kek {
        Some(kek) => kek.seal(&kid, &private_pem)?,
        None => private_pem.to_string(),
    };
    Ok(NewSigningKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        private_key,
        public_jwk,
    })
}

/// The private key of a stored record, opened with `kek` when sealed (see [`kek::open`]) and
/// checked against the record's `kid` and algorithm.
pub(super) fn load_private(
    record: &SigningKeyRecord,
    kek: Option<&KeyEncryptionKey>,
) -> Result<PrivateKey, TokenError> {
    let algorithm: Algorithm = record.algorithm.parse()?;
    let pem = kek::open(&record.kid, &record.private_key, kek)?;
    let bad = |e: &dyn std::fmt::Display| {
        TokenError::Key(format!(
            "stored {algorithm} key {} does not load: {e}",
            record.kid
        ))
    };
    let (der, public) = match algorithm {
        Algorithm::Es256 => {
            let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|e| bad(&e))?;
            let der = key.to_pkcs8_der().map_err(|e| bad(&e))?;
            (der, es256_public_jwk(key.verifying_key())?)
        }
        Algorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| bad(&e))?;
            let der = key.to_pkcs8_der().map_err(|e| bad(&e))?;
            (der, eddsa_public_jwk(&key.verifying_key())?)
        }
    };
    if public.common.key_id.as_deref() != Some(record.kid.as_str()) {
        return Err(TokenError::Key(format!(
            "stored private key does not match its kid {}",
            record.kid
        )));
    }
    let signer = match algorithm {
        Algorithm::Es256 => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.as_bytes(),
        )
        .map(Signer::Es256)
        .map_err(|e| bad(&e))?,
        Algorithm::EdDsa => signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.as_bytes())
            .map(Signer::EdDsa)
            .map_err(|e| bad(&e))?,
    };
    Ok(PrivateKey { signer, public })
}

/// The public JWK of a stored record, checked: it parses, names the record's `kid` and
/// algorithm, has that kid as its thumbprint, and carries no private member.
pub(super) fn load_public(record: &SigningKeyRecord) -> Result<Jwk, TokenError> {
    let algorithm: Algorithm = record.algorithm.parse()?;
    let bad = |what: &str| {
        TokenError::Key(format!(
            "stored public key {} is unusable: {what}",
            record.kid
        ))
    };
    let value: serde_json::Value =
        serde_json::from_str(&record.public_jwk).map_err(|e| bad(&e.to_string()))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|member| value.get(member).is_some())
    {
        return Err(bad("it holds private key material"));
    }
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| bad(&e.to_string()))?;
    if jwk.common.key_id.as_deref() != Some(record.kid.as_str()) {
        return Err(bad("its kid differs from the row's"));
    }
    if jwk.common.key_algorithm != Some(algorithm.key_algorithm()) {
        return Err(bad("its alg differs from the row's"));
    }
    if thumbprint(&jwk)? != record.kid {
        return Err(bad("its thumbprint is not its kid"));
    }
    Ok(jwk)
}

fn es256_public_jwk(key: &p256::ecdsa::VerifyingKey) -> Result<Jwk, TokenError> {
    let point = key.to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(TokenError::Key("a P-256 public key is the identity".into()));
    };
    with_kid(
        Algorithm::Es256,
        AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    )
}

fn eddsa_public_jwk(key: &ed25519_dalek::VerifyingKey) -> Result<Jwk, TokenError> {
    with_kid(
        Algorithm::EdDsa,
        AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        }),
    )
}

/// A signing JWK with its thumbprint as `kid`.
fn with_kid(algorithm: Algorithm, params: AlgorithmParameters) -> Result<Jwk, TokenError> {
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(algorithm.key_algorithm()),
            ..Default::default()
        },
        algorithm: params,
    };
    jwk.common.key_id = Some(thumbprint(&jwk)?);
    Ok(jwk)
}

/// The RFC 7638 SHA-256 thumbprint, base64url without padding.
fn thumbprint(jwk: &Jwk) -> Result<String, TokenError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| TokenError::Key(format!("JWK thumbprint: {e}")))
}

impl Algorithm {
    /// The JWK `alg` value.
    pub(super) fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Algorithm::Es256 => KeyAlgorithm::ES256,
            Algorithm::EdDsa => KeyAlgorithm::EdDSA,
        }
    }
}
