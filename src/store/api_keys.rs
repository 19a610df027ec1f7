//! Application servers' REST API keys: made here, shown once, kept only as SHA-256 digests.
//!
//! A key is `tgk_` followed by 256 bits from the operating system's random source, base64url
//! encoded (47 characters in all). The database holds the lowercase hex SHA-256 of the whole
//! key and its first [`PREFIX_LEN`] characters (to tell keys apart in an audit without holding
//! them); the key itself is returned once, to the operator who created it, and never again.
//!
//! Why a plain SHA-256 and not a password hash such as argon2: password hashes are slow on
//! purpose, to make guessing a *low-entropy* secret from its hash expensive. A 256-bit random
//! key cannot be guessed however fast the hash is, so slowness would buy nothing and would cost
//! a deliberate CPU burn on every authenticated request. The digest is looked up by equality on
//! a unique index; a timing difference there reveals nothing about the key, because an attacker
//! cannot choose keys whose digests share a prefix.

use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    QueryFilter,
};
use sha2::{Digest, Sha256};

use super::entities::{api_keys, app_servers};
use super::{new_id, now_ms, AppServerRecord, Store, StoreError};
use crate::config::Secret;

/// What every key starts with, so a leaked key is recognisable (e.g. by secret scanners).
pub const API_KEY_PREFIX: &str = "tgk_";

/// How many leading characters of a key are stored in the clear (`tgk_` and 8 more).
pub const PREFIX_LEN: usize = 12;

/// A freshly made key: the secret (to show once), its digest and its prefix (to store).
struct NewKey {
    secret: Secret,
    hash: String,
    prefix: String,
}

/// `prefix` followed by 256 bits from the operating system's random source, base64url.
pub(super) fn random_token(prefix: &str) -> Secret {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn generate_key() -> NewKey {
    let key = random_token(API_KEY_PREFIX).expose().to_owned();
    NewKey {
        hash: digest(&key),
        prefix: key[..PREFIX_LEN].to_owned(),
        secret: Secret::new(key),
    }
}

/// Lowercase hex SHA-256 of a key.
fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn key_row(app_server_id: &str, key: &NewKey) -> api_keys::ActiveModel {
    api_keys::ActiveModel {
        id: Set(new_id()),
        app_server_id: Set(app_server_id.to_owned()),
        prefix: Set(key.prefix.clone()),
        key_hash: Set(key.hash.clone()),
        created_at: Set(now_ms()),
        expires_at: Set(None),
    }
}

impl Store {
    /// Adds an application server (as [`Store::add_app_server`]) together with its first API
    /// key, in one transaction. The returned key is the only copy: it is not stored.
    pub async fn add_app_server_with_key(
        &self,
        name: &str,
        uri: &str,
    ) -> Result<(AppServerRecord, Secret), StoreError> {
        let txn = self.begin_write().await?;
        let server = Store::insert_app_server(&txn, name, uri).await?;
        let key = generate_key();
        key_row(&server.id, &key).insert(&txn).await?;
        txn.commit().await?;
        Ok((server, key.secret))
    }

    /// Gives the application server `app_server_id` a new API key and returns it (the only
    /// copy). The previous keys keep working until `grace_until_ms` (at most: a key already
    /// expiring sooner keeps its earlier end); `None` revokes them at once.
    pub async fn reissue_api_key(
        &self,
        app_server_id: &str,
        grace_until_ms: Option<i64>,
    ) -> Result<Secret, StoreError> {
        use sea_orm::sea_query::{Condition, Expr};
        let txn = self.begin_write().await?;
        super::api_queries::live_app_server(&txn, app_server_id).await?;
        match grace_until_ms {
            None => {
                api_keys::Entity::delete_many()
                    .filter(api_keys::Column::AppServerId.eq(app_server_id))
                    .exec(&txn)
                    .await?;
            }
            Some(until) => {
                api_keys::Entity::update_many()
                    .col_expr(api_keys::Column::ExpiresAt, Expr::value(until))
                    .filter(api_keys::Column::AppServerId.eq(app_server_id))
                    .filter(
                        Condition::any()
                            .add(api_keys::Column::ExpiresAt.is_null())
                            .add(api_keys::Column::ExpiresAt.gt(until)),
                    )
                    .exec(&txn)
                    .await?;
            }
        }
        let key = generate_key();
        key_row(app_server_id, &key).insert(&txn).await?;
        txn.commit().await?;
        Ok(key.secret)
    }

    /// The application server an API key belongs to at `now_ms`, or `None` for an unknown or
    /// expired key (or a deleted server).
    pub async fn app_server_for_api_key(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<AppServerRecord>, StoreError> {
        Ok(self
            .api_key_owner(key, now_ms)
            .await?
            .map(|(server, _)| server))
    }

    /// Like [`Store::app_server_for_api_key`], with the instant the key stops working
    /// (`None` while it is the server's current key), for callers that keep the answer.
    ///
    /// One statement (key and server joined) with no bound `LIMIT`: SQLite re-prepares a
    /// statement whose `LIMIT` is a bound parameter at every execution (sea-orm's `.one()`
    /// binds it), which had cost this lookup two SQL compilations per REST request.
    pub async fn api_key_owner(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<(AppServerRecord, Option<i64>)>, StoreError> {
        if !key.starts_with(API_KEY_PREFIX) {
            return Ok(None);
        }
        let backend = self.db.get_database_backend();
        let sql = "SELECT a.id, a.name, a.uri, a.created_at, a.commission_bps, a.webhook_url, \
                   a.deleted_at, k.expires_at AS key_expires_at \
                   FROM api_keys k JOIN app_servers a ON a.id = k.app_server_id \
                   WHERE k.key_hash = ? AND (k.expires_at IS NULL OR k.expires_at > ?) \
                   AND a.deleted_at IS NULL";
        let values = vec![digest(key).into(), now_ms.into()];
        let Some(row) = self
            .db
            .query_all_raw(super::ledger::statement(backend, sql, values))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let server = app_servers::Model::from_query_result(&row, "")?;
        Ok(Some((server.into(), row.try_get("", "key_expires_at")?)))
    }

    /// Inserts an application server row inside `txn` (validated like
    /// [`Store::add_app_server`]).
    async fn insert_app_server<C: ConnectionTrait>(
        txn: &C,
        name: &str,
        uri: &str,
    ) -> Result<AppServerRecord, StoreError> {
        let uri = uri.trim();
        super::directory::validate_app_server(name, uri)?;
        let model = app_servers::ActiveModel {
            id: Set(new_id()),
            name: Set(name.to_owned()),
            uri: Set(uri.to_owned()),
            created_at: Set(now_ms()),
            commission_bps: Set(0),
            webhook_url: Set(None),
            deleted_at: Set(None),
        };
        let inserted = model.insert(txn).await.map_err(|e| {
            StoreError::conflict_on_unique(e, || {
                format!("application server {name} already exists")
            })
        })?;
        Ok(inserted.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.secret.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(a.secret.expose().len(), API_KEY_PREFIX.len() + 43);
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert_eq!(a.hash, digest(a.secret.expose()));
        assert_eq!(a.hash.len(), 64);
        assert!(a.secret.expose().starts_with(&a.prefix));
        assert!(!format!("{:?}", a.secret).contains(&a.secret.expose()[4..]));
    }
}
