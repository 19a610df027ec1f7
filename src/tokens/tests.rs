//! Unit tests: minting and verification without a database, and every rejection RFC 8725 asks
//! for. Key storage and rotation against real databases are in `tests/tokens.rs`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{EncodingKey, Header};

use super::*;
use crate::store::{KeyStatus, NewSigningKey, SigningKeyRecord};

const ISSUER: &str = "https://relay.example.com";
const SHOP: &str = "shop1";
/// 2026-11-26T00:00:00Z, in milliseconds.
const T0: Millis = 1_795_651_200_000;

fn record(key: NewSigningKey, status: KeyStatus, at: Millis) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: key.kid,
        algorithm: key.algorithm,
        private_key: key.private_key,
        public_jwk: key.public_jwk,
        status,
        created_at: at,
        activated_at: (status == KeyStatus::Current).then_some(at),
        retired_at: None,
    }
}

fn config(algorithm: Algorithm) -> TokenConfig {
    TokenConfig {
        algorithm,
        ..TokenConfig::new(ISSUER)
    }
}

/// An issuer with a fresh current and next key of `algorithm`.
fn issuer(algorithm: Algorithm) -> TokenIssuer {
    let records = [
        record(
            keys::generate(algorithm, None).unwrap(),
            KeyStatus::Current,
            T0,
        ),
        record(
            keys::generate(algorithm, None).unwrap(),
            KeyStatus::Next,
            T0,
        ),
    ];
    TokenIssuer::from_records(config(algorithm), &records, T0).unwrap()
}

fn verifier(issuer: &TokenIssuer) -> TokenVerifier {
    TokenVerifier::new(&issuer.jwks(), ISSUER, SHOP).unwrap()
}

fn mint(issuer: &TokenIssuer) -> (String, Claims) {
    issuer
        .mint("alice", SHOP, "sess-1", "wine@portal.com", T0)
        .unwrap()
}

fn b64_json(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn decode_part(part: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[test]
fn es256_round_trip() {
    round_trip(Algorithm::Es256);
}

#[test]
fn eddsa_round_trip() {
    round_trip(Algorithm::EdDsa);
}

fn round_trip(algorithm: Algorithm) {
    let issuer = issuer(algorithm);
    let (token, claims) = mint(&issuer);

    let header = decode_part(&parts(&token)[0]);
    assert_eq!(header["alg"], algorithm.as_str());
    assert_eq!(header["typ"], TOKEN_TYPE);
    assert_eq!(header["kid"], issuer.current_kid().as_str());

    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, SHOP);
    assert_eq!(claims.sid, "sess-1");
    assert_eq!(claims.svc, "wine@portal.com");
    assert_eq!(claims.iat, T0 / 1000);
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.exp, claims.iat + 300);
    assert_eq!(claims.expires_at_ms(), T0 + 300_000);
    assert_eq!(claims.jti.len(), 32);

    let verified = verifier(&issuer).verify(&token, T0 + 1_000).unwrap();
    assert_eq!(verified, claims);
    // The issuer's own verifier agrees.
    assert_eq!(issuer.verifier(SHOP).verify(&token, T0).unwrap(), claims);

    // Every token is unique.
    let (again, again_claims) = mint(&issuer);
    assert_ne!(again, token);
    assert_ne!(again_claims.jti, claims.jti);

    // The JWKS: current then next, signing keys with kid and alg, no private member.
    let jwks = serde_json::to_value(issuer.jwks()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], issuer.current_kid().as_str());
    for key in keys {
        assert_eq!(key["alg"], algorithm.as_str());
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "private member in {key}");
    }
}

#[test]
fn tampered_payload_is_rejected() {
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let issuer = issuer(algorithm);
        let (token, _) = mint(&issuer);
        let p = parts(&token);
        let mut payload = decode_part(&p[1]);
        payload["sub"] = "mallory".into();
        let forged = format!("{}.{}.{}", p[0], b64_json(&payload), p[2]);
        assert!(matches!(
            verifier(&issuer).verify(&forged, T0),
            Err(TokenError::BadSignature)
        ));
    }
}

#[test]
fn tampered_signature_is_rejected() {
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let issuer = issuer(algorithm);
        let (token, _) = mint(&issuer);
        let p = parts(&token);
        let mut signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
        signature[10] ^= 0x01;
        let forged = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(&signature));
        assert!(matches!(
            verifier(&issuer).verify(&forged, T0),
            Err(TokenError::BadSignature)
        ));
        let truncated = format!("{}.{}.", p[0], p[1]);
        assert!(verifier(&issuer).verify(&truncated, T0).is_err());
    }
}

#[test]
fn expiry_is_enforced_with_the_leeway() {
    let issuer = issuer(Algorithm::Es256);
    let (token, claims) = mint(&issuer);
    let v = verifier(&issuer);
    let exp_ms = claims.expires_at_ms();
    // Within the 5 s leeway past exp: still accepted.
    assert!(v.verify(&token, exp_ms + 4_999).is_ok());
    assert!(matches!(
        v.verify(&token, exp_ms + 5_000),
        Err(TokenError::Expired)
    ));
    assert!(matches!(
        v.verify(&token, T0 + 3_600_000),
        Err(TokenError::Expired)
    ));
    // Without leeway, exp itself is too late (RFC 7519: now must be before exp).
    let strict = v.clone().with_leeway(Duration::ZERO);
    assert!(strict.verify(&token, exp_ms - 1).is_ok());
    assert!(matches!(
        strict.verify(&token, exp_ms),
        Err(TokenError::Expired)
    ));
}

#[test]
fn not_before_in_the_future_is_rejected() {
    let issuer = issuer(Algorithm::Es256);
    // Minted a minute ahead of the verifier's clock: nbf (and iat) are in its future.
    let (token, claims) = issuer
        .mint("alice", SHOP, "sess-1", "wine@portal.com", T0 + 60_000)
        .unwrap();
    let v = verifier(&issuer);
    assert!(matches!(v.verify(&token, T0), Err(TokenError::NotYetValid)));
    // Within the leeway of nbf: accepted.
    assert!(v.verify(&token, claims.nbf * 1000 - 5_000).is_ok());
    assert!(matches!(
        v.verify(&token, claims.nbf * 1000 - 5_001),
        Err(TokenError::NotYetValid)
    ));
}

#[test]
fn wrong_audience_is_rejected() {
    let issuer = issuer(Algorithm::Es256);
    let (token, _) = mint(&issuer);
    let other_shop = verifier(&issuer).for_audience("shop2");
    assert!(matches!(
        other_shop.verify(&token, T0),
        Err(TokenError::WrongAudience)
    ));
    assert!(matches!(
        issuer.verifier("shop2").verify(&token, T0),
        Err(TokenError::WrongAudience)
    ));
}

#[test]
fn wrong_issuer_is_rejected() {
    let issuer = issuer(Algorithm::EdDsa);
    let (token, _) = mint(&issuer);
    let v = TokenVerifier::new(&issuer.jwks(), "https://evil.example.com", SHOP).unwrap();
    assert!(matches!(v.verify(&token, T0), Err(TokenError::WrongIssuer)));
}

#[test]
fn alg_none_is_rejected() {
    let issuer = issuer(Algorithm::Es256);
    let (token, _) = mint(&issuer);
    let p = parts(&token);
    let header = serde_json::json!({
        "alg": "none", "typ": TOKEN_TYPE, "kid": issuer.current_kid()
    });
    for forged in [
        format!("{}.{}.", b64_json(&header), p[1]),
        format!("{}.{}.{}", b64_json(&header), p[1], p[2]),
    ] {
        assert!(matches!(
            verifier(&issuer).verify(&forged, T0),
            Err(TokenError::AlgorithmNotAllowed(alg)) if alg == "none"
        ));
    }
}

#[test]
fn hs256_forged_with_the_public_key_as_secret_is_rejected() {
    let issuer = issuer(Algorithm::Es256);
    let (_, claims) = mint(&issuer);
    let jwk = issuer.jwks().keys[0].clone();
    // Every form of the public key an attacker might try as the HMAC secret.
    let jwk_json = serde_json::to_string(&jwk).unwrap();
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        panic!("an ES256 key is an EC key");
    };
    for secret in [jwk_json.as_bytes(), ec.x.as_bytes()] {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(issuer.current_kid());
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
        assert!(matches!(
            verifier(&issuer).verify(&forged, T0),
            Err(TokenError::AlgorithmNotAllowed(alg)) if alg == "HS256"
        ));
    }
}

#[test]
fn unknown_kid_is_rejected() {
    let issuer = issuer(Algorithm::Es256);
    let stranger = self::issuer(Algorithm::Es256);
    // A token signed by a key the verifier does not know.
    let (token, _) = mint(&stranger);
    assert!(matches!(
        verifier(&issuer).verify(&token, T0),
        Err(TokenError::UnknownKey(kid)) if kid == stranger.current_kid()
    ));
    // Our token with its kid removed, or pointing at a kid that is not in the set.
    let (token, _) = mint(&issuer);
    let p = parts(&token);
    let mut header = decode_part(&p[0]);
    header.as_object_mut().unwrap().remove("kid");
    let no_kid = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert!(matches!(
        verifier(&issuer).verify(&no_kid, T0),
        Err(TokenError::UnknownKey(kid)) if kid.is_empty()
    ));
    header["kid"] = "no-such-key".into();
    let other_kid = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert!(matches!(
        verifier(&issuer).verify(&other_kid, T0),
        Err(TokenError::UnknownKey(_))
    ));
}

#[test]
fn a_key_is_used_only_with_its_own_algorithm() {
    // One set holding an ES256 and an EdDSA key: an EdDSA token naming the ES256 key is refused.
    let es = issuer(Algorithm::Es256);
    let ed = issuer(Algorithm::EdDsa);
    let mut keys = es.jwks().keys;
    keys.extend(ed.jwks().keys);
    let v = TokenVerifier::new(&JwkSet { keys }, ISSUER, SHOP).unwrap();
    let (es_token, _) = mint(&es);
    let (ed_token, _) = mint(&ed);
    assert!(v.verify(&es_token, T0).is_ok());
    assert!(v.verify(&ed_token, T0).is_ok());

    let p = parts(&ed_token);
    let mut header = decode_part(&p[0]);
    header["kid"] = es.current_kid().into();
    let confused = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert!(matches!(
        v.verify(&confused, T0),
        Err(TokenError::AlgorithmNotAllowed(alg)) if alg == "EdDSA"
    ));
}

#[test]
fn other_jwts_signed_with_our_keys_are_not_session_tokens() {
    let issuer = issuer(Algorithm::Es256);
    let (token, _) = mint(&issuer);
    let p = parts(&token);
    let mut header = decode_part(&p[0]);
    header["typ"] = "JWT".into();
    let retyped = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert!(matches!(
        verifier(&issuer).verify(&retyped, T0),
        Err(TokenError::Malformed(_))
    ));
    header["typ"] = TOKEN_TYPE.into();
    header["crit"] = serde_json::json!(["exp"]);
    let critical = format!("{}.{}.{}", b64_json(&header), p[1], p[2]);
    assert!(matches!(
        verifier(&issuer).verify(&critical, T0),
        Err(TokenError::Malformed(_))
    ));
    let huge = format!("{}.{}.{}", p[0], "A".repeat(verifier::MAX_TOKEN_LEN), p[2]);
    for garbage in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &format!("{token}.x"),
        &huge,
    ] {
        assert!(matches!(
            verifier(&issuer).verify(garbage, T0),
            Err(TokenError::Malformed(_))
        ));
    }
}

#[test]
fn errors_say_whose_fault_they_are() {
    assert!(TokenError::Expired.is_rejection());
    assert!(TokenError::WrongAudience.is_rejection());
    assert!(!TokenError::Key("x".into()).is_rejection());
    assert!(!TokenError::Config("x".into()).is_rejection());
    let kid = || "k".to_owned();
    assert!(!TokenError::KeyEncryptionKeyMissing { kid: kid() }.is_rejection());
    assert!(!TokenError::KeyEncryptionKeyWrong { kid: kid() }.is_rejection());
}

#[test]
fn private_keys_never_show_in_debug_output() {
    let key = keys::generate(Algorithm::Es256, None).unwrap();
    assert!(key.private_key.contains("PRIVATE KEY"));
    let rec = record(key.clone(), KeyStatus::Current, T0);
    for text in [
        format!("{key:?}"),
        format!("{rec:?}"),
        format!("{:?}", issuer(Algorithm::Es256)),
        format!("{:?}", issuer(Algorithm::EdDsa)),
        format!("{:?}", verifier(&issuer(Algorithm::EdDsa))),
    ] {
        assert!(!text.contains("PRIVATE"), "{text}");
        assert!(!text.contains(&key.private_key[30..60]), "{text}");
    }
}

#[test]
fn stored_keys_are_checked_on_load() {
    let current = keys::generate(Algorithm::Es256, None).unwrap();
    let next = keys::generate(Algorithm::Es256, None).unwrap();
    let cfg = config(Algorithm::Es256);

    // A private key filed under another key's kid.
    let mut swapped = record(current.clone(), KeyStatus::Current, T0);
    swapped.private_key = next.private_key.clone();
    assert!(matches!(
        TokenIssuer::from_records(cfg.clone(), &[swapped], T0),
        Err(TokenError::Key(_))
    ));
    // A public JWK smuggling a private member.
    let mut leaky = record(next.clone(), KeyStatus::Next, T0);
    let mut jwk: serde_json::Value = serde_json::from_str(&leaky.public_jwk).unwrap();
    jwk["d"] = "AAAA".into();
    leaky.public_jwk = jwk.to_string();
    let good = record(current, KeyStatus::Current, T0);
    assert!(matches!(
        TokenIssuer::from_records(cfg.clone(), &[good.clone(), leaky], T0),
        Err(TokenError::Key(_))
    ));
    // No current key at all.
    assert!(matches!(
        TokenIssuer::from_records(cfg, &[record(next, KeyStatus::Next, T0)], T0),
        Err(TokenError::Key(_))
    ));
}

#[test]
fn config_is_validated() {
    let mut cfg = TokenConfig::new(ISSUER);
    assert_eq!(cfg.ttl, Duration::from_secs(300));
    assert_eq!(cfg.algorithm, Algorithm::Es256);
    assert_eq!(cfg.retired_grace, Duration::from_secs(86_400));
    assert!(cfg.validate().is_ok());
    cfg.retired_grace = cfg.ttl;
    assert!(matches!(cfg.validate(), Err(TokenError::Config(_))));
    let empty = TokenConfig::new(" ");
    assert!(matches!(empty.validate(), Err(TokenError::Config(_))));

    assert_eq!("ES256".parse::<Algorithm>().unwrap(), Algorithm::Es256);
    assert_eq!("eddsa".parse::<Algorithm>().unwrap(), Algorithm::EdDsa);
    assert!("HS256".parse::<Algorithm>().is_err());
    assert_eq!(
        serde_json::to_string(&Algorithm::EdDsa).unwrap(),
        "\"EdDSA\""
    );
}

#[test]
fn empty_claims_are_not_minted() {
    let issuer = issuer(Algorithm::Es256);
    assert!(matches!(
        issuer.mint("alice", "", "sess-1", "wine@portal.com", T0),
        Err(TokenError::Mint(_))
    ));
}
