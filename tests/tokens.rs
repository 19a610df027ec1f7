//! Session-token signing keys against real databases: creation on first start, reloads,
//! rotation with its grace period, what the JWK set may contain, and private keys at rest
//! (sealed with a key-encryption key, or in the clear with a warning). Every body runs on a
//! fresh SQLite file and, when `TOLLGATE_TEST_POSTGRES_URL` is set (always under `CI=true`),
//! on a fresh PostgreSQL database. Time moves through explicit `now_ms` arguments, never sleeps.

mod common;

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::db::on_both_engines;
use p256::pkcs8::DecodePrivateKey as _;
use sea_orm::{ConnectionTrait as _, Statement};
use tollgate::store::{KeyStatus, Store};
use tollgate::tokens::{
    self, Algorithm, KeyEncryptionKey, TokenConfig, TokenError, TokenIssuer, TokenVerifier,
    DEFAULT_RETIRED_GRACE, SEALED_PREFIX,
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
    with_a_kek_private_keys_are_stored_sealed_and_survive_a_restart,
    a_missing_or_wrong_kek_is_refused_naming_the_key_and_changes_nothing,
    a_sealed_key_moved_to_another_row_does_not_open,
    keys_stored_in_the_clear_are_sealed_in_place_once_a_kek_is_set,
    without_a_kek_keys_are_stored_in_the_clear_with_one_warning,
);

const ISSUER: &str = "https://relay.example.com";
const SHOP: &str = "shop1";
/// 2026-11-26T00:00:00Z, in milliseconds.
const T0: i64 = 1_795_651_200_000;
const MINUTE: i64 = 60_000;

fn config() -> TokenConfig {
    TokenConfig::new(ISSUER)
}

fn new_kek() -> KeyEncryptionKey {
    KeyEncryptionKey::from_base64(&KeyEncryptionKey::generate_base64()).unwrap()
}

fn sealed_with(kek: &KeyEncryptionKey) -> TokenConfig {
    TokenConfig {
        key_encryption_key: Some(kek.clone()),
        ..config()
    }
}

/// `(kid, private key column)` of every row, read with SQL rather than through the store.
async fn stored_private_keys(store: &Store) -> Vec<(String, String)> {
    let db = store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT kid, private_pem FROM signing_keys ORDER BY kid",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "kid").unwrap(),
                r.try_get::<String>("", "private_pem").unwrap(),
            )
        })
        .collect()
}

/// The log lines written on this thread while the returned guard lives (a `#[tokio::test]`
/// runs on one thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// The captured lines at `level` (`WARN`, `INFO`) that contain `text`.
    fn lines(&self, level: &str, text: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .map(str::to_owned)
            .collect()
    }
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
        let secret = p256::SecretKey::from_pkcs8_pem(&record.private_key).unwrap();
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

async fn with_a_kek_private_keys_are_stored_sealed_and_survive_a_restart(
    store: Store,
    url: String,
) {
    let kek = new_kek();
    let (logs, _guard) = Logs::capture();
    let issuer = TokenIssuer::load(&store, sealed_with(&kek), T0)
        .await
        .unwrap();
    issuer.rotate(&store, T0 + MINUTE).await.unwrap();
    assert!(logs.lines("WARN", "stored in the clear").is_empty());

    // Current, next and retired: every row holds a sealed value, never the PEM or its body.
    let stored = stored_private_keys(&store).await;
    assert_eq!(stored.len(), 3);
    for (kid, value) in &stored {
        assert!(value.starts_with(SEALED_PREFIX), "{kid}: {value}");
        assert!(!value.contains("PRIVATE KEY"), "{kid}: {value}");
    }

    // A restarted relay (a new connection pool) with the same key-encryption key signs with
    // the same key; its tokens verify against the first relay's JWK set and the other way.
    let token = mint(&issuer, T0 + MINUTE);
    let reopened = Store::connect(&url).await.unwrap();
    let restarted = TokenIssuer::load(&reopened, sealed_with(&kek), T0 + 2 * MINUTE)
        .await
        .unwrap();
    assert_eq!(restarted.current_kid(), issuer.current_kid());
    let after = mint(&restarted, T0 + 2 * MINUTE);
    assert!(shop_verifier(&issuer)
        .verify(&after, T0 + 2 * MINUTE)
        .is_ok());
    assert!(shop_verifier(&restarted)
        .verify(&token, T0 + 2 * MINUTE)
        .is_ok());
    assert_eq!(
        stored_private_keys(&store).await,
        stored,
        "a restart rewrites nothing"
    );
}

async fn a_missing_or_wrong_kek_is_refused_naming_the_key_and_changes_nothing(
    store: Store,
    _url: String,
) {
    let kek = new_kek();
    TokenIssuer::load(&store, sealed_with(&kek), T0)
        .await
        .unwrap();
    let before = stored_private_keys(&store).await;
    let kids: Vec<String> = before.iter().map(|(kid, _)| kid.clone()).collect();

    let wrong = sealed_with(&new_kek());
    match TokenIssuer::load(&store, wrong.clone(), T0 + MINUTE).await {
        Err(TokenError::KeyEncryptionKeyWrong { kid }) => {
            assert!(kids.contains(&kid), "{kid} is not one of {kids:?}")
        }
        other => panic!("a wrong key-encryption key was not refused: {other:?}"),
    }
    match TokenIssuer::load(&store, config(), T0 + MINUTE).await {
        Err(e @ TokenError::KeyEncryptionKeyMissing { .. }) => {
            let text = e.to_string();
            assert!(kids.iter().any(|k| text.contains(k.as_str())), "{text}");
            assert!(text.contains("TOLLGATE_KEY_ENCRYPTION_KEY"), "{text}");
        }
        other => panic!("a sealed key opened without a key-encryption key: {other:?}"),
    }
    // `tollgate keys rotate` with either refuses before it writes a key the relays could not
    // open.
    assert!(matches!(
        tokens::rotate(&store, &wrong, T0 + MINUTE).await,
        Err(TokenError::KeyEncryptionKeyWrong { .. })
    ));
    assert!(matches!(
        tokens::rotate(&store, &config(), T0 + MINUTE).await,
        Err(TokenError::KeyEncryptionKeyMissing { .. })
    ));
    assert_eq!(stored_private_keys(&store).await, before);
    assert!(TokenIssuer::load(&store, sealed_with(&kek), T0 + MINUTE)
        .await
        .is_ok());
}

async fn a_sealed_key_moved_to_another_row_does_not_open(store: Store, _url: String) {
    let kek = new_kek();
    let issuer = TokenIssuer::load(&store, sealed_with(&kek), T0)
        .await
        .unwrap();
    let current = issuer.current_kid();
    let stored = stored_private_keys(&store).await;
    let (_, next_value) = stored.iter().find(|(kid, _)| *kid != current).unwrap();
    // Someone with write access to the table swaps the next key's ciphertext onto the
    // current row, hoping to sign with a key of their choosing.
    let db = store.connection();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "UPDATE signing_keys SET private_pem = $1 WHERE kid = $2"
            }
            _ => "UPDATE signing_keys SET private_pem = ? WHERE kid = ?",
        },
        [next_value.clone().into(), current.clone().into()],
    ))
    .await
    .unwrap();
    assert!(matches!(
        TokenIssuer::load(&store, sealed_with(&kek), T0).await,
        Err(TokenError::KeyEncryptionKeyWrong { kid }) if kid == current
    ));
}

async fn keys_stored_in_the_clear_are_sealed_in_place_once_a_kek_is_set(store: Store, url: String) {
    // An install from before key-encryption keys: clear PEMs, and a token in a shop's hands.
    let clear = TokenIssuer::load(&store, config(), T0).await.unwrap();
    clear.rotate(&store, T0 + MINUTE).await.unwrap();
    let token = mint(&clear, T0 + MINUTE);
    let before = stored_private_keys(&store).await;
    assert!(before.iter().all(|(_, v)| v.contains("PRIVATE KEY")));

    // The operator sets a key-encryption key and restarts: every row is sealed in place, the
    // keys themselves unchanged, and the start says so once.
    let kek = new_kek();
    let (logs, _guard) = Logs::capture();
    let reopened = Store::connect(&url).await.unwrap();
    let sealed = TokenIssuer::load(&reopened, sealed_with(&kek), T0 + 2 * MINUTE)
        .await
        .unwrap();
    let after = stored_private_keys(&store).await;
    assert_eq!(
        after.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        before.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (kid, value) in &after {
        assert!(
            value.starts_with(SEALED_PREFIX),
            "{kid} still clear: {value}"
        );
    }
    let announced = logs.lines("WARN", "encrypted token signing keys");
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert!(announced[0].contains("count=3"), "{}", announced[0]);
    assert_eq!(sealed.current_kid(), clear.current_kid());
    assert_eq!(sealed.jwks(), clear.jwks());
    assert!(shop_verifier(&sealed)
        .verify(&token, T0 + 2 * MINUTE)
        .is_ok());
    let new_token = mint(&sealed, T0 + 2 * MINUTE);
    assert!(shop_verifier(&clear)
        .verify(&new_token, T0 + 2 * MINUTE)
        .is_ok());

    // The next start finds nothing left to seal.
    TokenIssuer::load(&store, sealed_with(&kek), T0 + 3 * MINUTE)
        .await
        .unwrap();
    assert_eq!(stored_private_keys(&store).await, after);
    assert_eq!(logs.lines("WARN", "encrypted token signing keys").len(), 1);
    assert!(
        logs.lines("WARN", "stored in the clear").is_empty(),
        "no clear-key warning with a KEK"
    );
}

async fn without_a_kek_keys_are_stored_in_the_clear_with_one_warning(store: Store, _url: String) {
    let (logs, _guard) = Logs::capture();
    let issuer = TokenIssuer::load(&store, config(), T0).await.unwrap();
    // Running on: reloads and a rotation do not repeat the warning.
    issuer.reload(&store, T0 + MINUTE).await.unwrap();
    issuer.rotate(&store, T0 + 2 * MINUTE).await.unwrap();
    let token = mint(&issuer, T0 + 2 * MINUTE);
    assert!(shop_verifier(&issuer)
        .verify(&token, T0 + 2 * MINUTE)
        .is_ok());

    let warnings = logs.lines("WARN", "stored in the clear");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("TOLLGATE_KEY_ENCRYPTION_KEY"),
        "{}",
        warnings[0]
    );
    for (kid, value) in stored_private_keys(&store).await {
        assert!(
            value.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{kid}: {value}"
        );
    }
}
