//! Session-token signing keys against real databases: creation on first start, reloads,
//! rotation with its grace period, and what the JWK set may contain. Every body runs on a
//! fresh SQLite file and, when `TOLLGATE_TEST_POSTGRES_URL` is set (always under `CI=true`),
//! on a fresh PostgreSQL database. Time moves through explicit `now_ms` arguments, never sleeps.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::db::on_both_engines;
use p256::pkcs8::DecodePrivateKey as _;
use sea_orm::ConnectionTrait as _;
use tollgate::store::{KeyStatus, Store};
use tollgate::tokens::{
    self, Algorithm, TokenConfig, TokenError, TokenIssuer, TokenVerifier, DEFAULT_RETIRED_GRACE,
};

on_both_engines!(
    keys_are_created_on_first_load_and_survive_a_reload,
    nodes_starting_together_agree_on_one_key,
    rotation_keeps_old_tokens_valid_for_the_grace_period_only,
    another_node_picks_up_a_rotation_on_reload,
    rotate_works_on_an_empty_database,
    eddsa_is_selectable,
    jwks_never_contains_private_material,
    the_database_holds_one_current_and_one_next_key,
);

const ISSUER: &str = "https://relay.example.com";
const SHOP: &str = "shop1";
/// 2026-11-26T00:00:00Z, in milliseconds.
const T0: i64 = 1_795_651_200_000;
const MINUTE: i64 = 60_000;

fn config() -> TokenConfig {
    TokenConfig::new(ISSUER)
}

fn kids(issuer: &TokenIssuer) -> Vec<String> {
    issuer
        .jwks()
        .keys
        .iter()
        .map(|k| {
            k.common
                .key_id
                .clone()
                .expect("every published key has a kid")
        })
        .collect()
}

fn mint(issuer: &TokenIssuer, now_ms: i64) -> String {
    issuer
        .mint("alice", SHOP, "sess-1", "wine@portal.com", now_ms)
        .expect("mint a token")
        .0
}

/// A verifier built the way an application server builds one: from the published JWK set.
fn shop_verifier(issuer: &TokenIssuer) -> TokenVerifier {
    TokenVerifier::new(&issuer.jwks(), ISSUER, SHOP).expect("a verifier over the JWK set")
}

async fn keys_are_created_on_first_load_and_survive_a_reload(store: Store, url: String) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let issuer = TokenIssuer::load(&store, config(), T0).await.unwrap();
    let kid = issuer.current_kid();
    assert_eq!(issuer.current_algorithm(), Algorithm::Es256);

    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 2, "a current and a next key");
    assert_eq!(stored[0].status, KeyStatus::Current);
    assert_eq!(stored[0].kid, kid);
    assert_eq!(stored[0].activated_at, Some(T0));
    assert_eq!(stored[1].status, KeyStatus::Next);
    assert_eq!(stored[1].activated_at, None);
    assert!(stored.iter().all(|k| k.algorithm == "ES256"));
    // Published: current first, then next.
    assert_eq!(kids(&issuer), vec![kid.clone(), stored[1].kid.clone()]);

    let token = mint(&issuer, T0);

    // The same process reloading, and a "restarted relay" on a new connection pool: same keys,
    // nothing new created, and the earlier token still verifies.
    issuer.reload(&store, T0 + MINUTE).await.unwrap();
    assert_eq!(issuer.current_kid(), kid);
    let reopened = Store::connect(&url).await.unwrap();
    let restarted = TokenIssuer::load(&reopened, config(), T0 + MINUTE)
        .await
        .unwrap();
    assert_eq!(restarted.current_kid(), kid);
    assert_eq!(restarted.jwks(), issuer.jwks());
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);
    let claims = shop_verifier(&restarted)
        .verify(&token, T0 + MINUTE)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    // And the restarted relay's tokens verify with the first one's JWK set.
    let token = mint(&restarted, T0 + MINUTE);
    assert!(shop_verifier(&issuer).verify(&token, T0 + MINUTE).is_ok());
}

async fn nodes_starting_together_agree_on_one_key(store: Store, url: String) {
    let other = Store::connect(&url).await.unwrap();
    let (a, b) = tokio::join!(
        TokenIssuer::load(&store, config(), T0),
        TokenIssuer::load(&other, config(), T0),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.current_kid(), b.current_kid());
    assert_eq!(a.jwks(), b.jwks());
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);
}

async fn rotation_keeps_old_tokens_valid_for_the_grace_period_only(store: Store, _url: String) {
    let cfg = config();
    let issuer = TokenIssuer::load(&store, cfg.clone(), T0).await.unwrap();
    let [old_current, old_next]: [String; 2] = kids(&issuer).try_into().unwrap();
    let old_token = mint(&issuer, T0);

    // Rotate a minute later: the next key signs, the old one is retired but still published.
    let rotated_at = T0 + MINUTE;
    let report = issuer.rotate(&store, rotated_at).await.unwrap();
    assert_eq!(report.retired_kid, old_current);
    assert_eq!(report.current_kid, old_next);
    assert!(![&old_current, &old_next].contains(&&report.next_kid));
    assert!(report.deleted_kids.is_empty());
    assert_eq!(issuer.current_kid(), old_next);
    assert_eq!(
        kids(&issuer),
        vec![
            old_next.clone(),
            report.next_kid.clone(),
            old_current.clone()
        ],
        "current, next, then the retired key"
    );
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored[0].activated_at, Some(rotated_at));
    assert_eq!(stored[2].status, KeyStatus::Retired);
    assert_eq!(stored[2].retired_at, Some(rotated_at));

    // During the grace period the token signed before the rotation still verifies, and new
    // tokens carry the new kid.
    let verifier = shop_verifier(&issuer);
    assert!(verifier.verify(&old_token, T0 + 2 * MINUTE).is_ok());
    let new_token = mint(&issuer, T0 + 2 * MINUTE);
    assert!(verifier.verify(&new_token, T0 + 2 * MINUTE).is_ok());
    let grace_ms = i64::try_from(DEFAULT_RETIRED_GRACE.as_millis()).unwrap();
    let last_published = rotated_at + grace_ms - 1;
    issuer.reload(&store, last_published).await.unwrap();
    assert!(kids(&issuer).contains(&old_current));

    // Once the grace period is over the retired key is gone from the JWK set, and a verifier
    // built from that set refuses the old token for its key alone (checked at a moment when
    // the token itself is still within its lifetime).
    issuer.reload(&store, rotated_at + grace_ms).await.unwrap();
    assert_eq!(
        kids(&issuer),
        vec![old_next.clone(), report.next_kid.clone()]
    );
    let after_grace = shop_verifier(&issuer);
    assert!(matches!(
        after_grace.verify(&old_token, T0 + 2 * MINUTE),
        Err(TokenError::UnknownKey(kid)) if kid == old_current
    ));
    assert!(after_grace.verify(&new_token, T0 + 2 * MINUTE).is_ok());
    // The relay's own verifier (introspection) agrees.
    assert!(matches!(
        issuer.verifier(SHOP).verify(&old_token, T0 + 2 * MINUTE),
        Err(TokenError::UnknownKey(_))
    ));

    // The next rotation deletes the expired key's row, private key included.
    let second = tokens::rotate(&store, &cfg, rotated_at + grace_ms + MINUTE)
        .await
        .unwrap();
    assert_eq!(second.deleted_kids, vec![old_current.clone()]);
    assert_eq!(second.retired_kid, old_next);
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|k| k.kid != old_current));
}

async fn another_node_picks_up_a_rotation_on_reload(store: Store, url: String) {
    let cfg = config();
    let node_a = TokenIssuer::load(&store, cfg.clone(), T0).await.unwrap();
    let other = Store::connect(&url).await.unwrap();
    let node_b = TokenIssuer::load(&other, cfg.clone(), T0).await.unwrap();

    // `tollgate keys rotate`, as a separate process on its own connection.
    let cli = Store::connect(&url).await.unwrap();
    let report = tokens::rotate(&cli, &cfg, T0 + MINUTE).await.unwrap();

    // Until it reloads, node B keeps signing with the retired key; those tokens verify
    // against the new JWK set because the retired key is still published.
    let stale = mint(&node_b, T0 + MINUTE);
    node_a.reload(&store, T0 + MINUTE).await.unwrap();
    assert!(shop_verifier(&node_a)
        .verify(&stale, T0 + 2 * MINUTE)
        .is_ok());

    node_b.reload(&other, T0 + 2 * MINUTE).await.unwrap();
    assert_eq!(node_b.current_kid(), report.current_kid);
    assert_eq!(node_b.jwks(), node_a.jwks());
}

async fn rotate_works_on_an_empty_database(store: Store, _url: String) {
    let report = tokens::rotate(&store, &config(), T0).await.unwrap();
    let all = [&report.current_kid, &report.next_kid, &report.retired_kid];
    assert!(all.iter().all(|k| !k.is_empty()));
    assert_ne!(report.current_kid, report.next_kid);
    assert_ne!(report.current_kid, report.retired_kid);
    assert_ne!(report.next_kid, report.retired_kid);
    let printed = report.to_string();
    assert!(printed.contains(&format!("current {}", report.current_kid)));

    let issuer = TokenIssuer::load(&store, config(), T0).await.unwrap();
    assert_eq!(issuer.current_kid(), report.current_kid);
    assert_eq!(
        kids(&issuer),
        vec![report.current_kid, report.next_kid, report.retired_kid]
    );
}

async fn eddsa_is_selectable(store: Store, _url: String) {
    let cfg = TokenConfig {
        algorithm: Algorithm::EdDsa,
        ..config()
    };
    let issuer = TokenIssuer::load(&store, cfg.clone(), T0).await.unwrap();
    assert_eq!(issuer.current_algorithm(), Algorithm::EdDsa);
    let jwks = serde_json::to_value(issuer.jwks()).unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
    }
    let token = mint(&issuer, T0);
    assert!(shop_verifier(&issuer).verify(&token, T0).is_ok());

    // Switching the configured algorithm back to ES256 goes through rotation: the first
    // rotation brings an ES256 next key, the second makes it current. Old tokens verify all
    // along, within their grace.
    let es256 = TokenConfig {
        algorithm: Algorithm::Es256,
        ..cfg
    };
    let issuer = TokenIssuer::load(&store, es256, T0).await.unwrap();
    assert_eq!(issuer.current_algorithm(), Algorithm::EdDsa);
    issuer.rotate(&store, T0 + MINUTE).await.unwrap();
    assert_eq!(issuer.current_algorithm(), Algorithm::EdDsa);
    issuer.rotate(&store, T0 + 2 * MINUTE).await.unwrap();
    assert_eq!(issuer.current_algorithm(), Algorithm::Es256);
    let es_token = mint(&issuer, T0 + 2 * MINUTE);
    let verifier = shop_verifier(&issuer);
    assert!(verifier.verify(&es_token, T0 + 3 * MINUTE).is_ok());
    assert!(verifier.verify(&token, T0 + 3 * MINUTE).is_ok());
}

async fn jwks_never_contains_private_material(store: Store, _url: String) {
    let cfg = config();
    let issuer = TokenIssuer::load(&store, cfg.clone(), T0).await.unwrap();
    issuer.rotate(&store, T0 + MINUTE).await.unwrap();
    let jwks = serde_json::to_string(&issuer.jwks()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    let keys = value["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for key in keys {
        let members: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(!members.contains(&private), "member {private} in {key}");
        }
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["use"], "sig");
    }

    // Not even encoded differently: no stored private scalar appears anywhere in the set,
    // nor in the stored public JWKs.
    let stored = store.signing_keys().await.unwrap();
    assert_eq!(stored.len(), 3);
    for record in &stored {
        let secret = p256::SecretKey::from_pkcs8_pem(&record.private_pem).unwrap();
        let d = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        assert!(!jwks.contains(&d));
        assert!(!record.public_jwk.contains(&d));
        assert!(!record.public_jwk.contains("\"d\""));
        assert!(!format!("{record:?}").contains("PRIVATE KEY"));
    }
    assert!(!format!("{issuer:?}").contains("PRIVATE KEY"));
}

async fn the_database_holds_one_current_and_one_next_key(store: Store, _url: String) {
    TokenIssuer::load(&store, config(), T0).await.unwrap();
    tokens::rotate(&store, &config(), T0 + MINUTE)
        .await
        .unwrap();
    // The partial unique indexes refuse a second current or next key, whoever writes it.
    for status in ["current", "next"] {
        let sql = format!("UPDATE signing_keys SET status = '{status}' WHERE status = 'retired'");
        assert!(
            store.connection().execute_unprepared(&sql).await.is_err(),
            "a second {status} key was accepted"
        );
    }
    let stored = store.signing_keys().await.unwrap();
    let statuses: Vec<KeyStatus> = stored.iter().map(|k| k.status).collect();
    assert_eq!(
        statuses,
        vec![KeyStatus::Current, KeyStatus::Next, KeyStatus::Retired]
    );
}
