//! Session-token signing keys: the rows behind [`crate::tokens`].
//!
//! A key is [`KeyStatus::Next`] (published, not yet signing), [`KeyStatus::Current`] (signing)
//! or [`KeyStatus::Retired`] (published for a grace period, then deleted). The database keeps
//! at most one current and one next key (partial unique indexes); both write operations below
//! run in one write transaction that first takes a table lock on PostgreSQL (SQLite's
//! `BEGIN IMMEDIATE` already serialises writers), so relay nodes starting or rotating at the
//! same moment queue instead of racing.
//!
//! This module stores what it is given: key generation, PEM and JWK encoding, and sealing
//! private keys with the key-encryption key belong to [`crate::tokens`]. The private key
//! travels only between that module and the database; the `Debug` impls here leave it out.

use std::fmt;
use std::str::FromStr;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;

use super::entities::signing_keys;
use super::{Store, StoreError};

/// Where a signing key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Published in the JWK set, not yet used to sign; becomes current at the next rotation.
    Next,
    /// The one key that signs new tokens.
    Current,
    /// No longer signs; published until its grace period ends, then deleted.
    Retired,
}

impl KeyStatus {
    /// The lowercase name stored in `signing_keys.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Next => "next",
            KeyStatus::Current => "current",
            KeyStatus::Retired => "retired",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(KeyStatus::Next),
            "current" => Ok(KeyStatus::Current),
            "retired" => Ok(KeyStatus::Retired),
            other => Err(StoreError::Invalid(format!(
                "unknown signing key status {other:?}: expected next, current or retired"
            ))),
        }
    }
}

/// A freshly generated key to store. `Debug` leaves the private key out.
#[derive(Clone)]
pub struct NewSigningKey {
    /// The key id (the JWK thumbprint, RFC 7638).
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub algorithm: String,
    /// The private key as stored: PKCS#8 PEM in the clear, or sealed (`tgk1:…`, see
    /// [`crate::tokens::KeyEncryptionKey`]).
    pub private_key: String,
    /// The public key as a JWK (JSON), with `kid`, `alg` and `use` set.
    pub public_jwk: String,
}

impl fmt::Debug for NewSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One stored signing key. `Debug` leaves the private key out.
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub algorithm: String,
    /// The private key as stored: PKCS#8 PEM in the clear, or sealed (`tgk1:…`). Never serve
    /// or log it.
    pub private_key: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    pub status: KeyStatus,
    pub created_at: i64,
    /// When it became current.
    pub activated_at: Option<i64>,
    /// When it was retired.
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("public_jwk", &self.public_jwk)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

impl TryFrom<signing_keys::Model> for SigningKeyRecord {
    type Error = StoreError;

    fn try_from(m: signing_keys::Model) -> Result<Self, StoreError> {
        Ok(SigningKeyRecord {
            status: m.status.parse()?,
            kid: m.kid,
            algorithm: m.algorithm,
            private_key: m.private_key,
            public_jwk: m.public_jwk,
            created_at: m.created_at,
            activated_at: m.activated_at,
            retired_at: m.retired_at,
        })
    }
}

/// What [`Store::rotate_signing_keys`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The key that was next and now signs.
    pub current: String,
    /// The newly stored next key.
    pub next: String,
    /// The key that signed until now, retired at the rotation.
    pub retired: String,
    /// Retired keys whose grace period had ended, deleted by this rotation.
    pub deleted: Vec<String>,
}

impl Store {
    /// Every stored signing key: current first, then next, then retired keys newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = signing_keys::Entity::find()
            .order_by_desc(signing_keys::Column::CreatedAt)
            .order_by_asc(signing_keys::Column::Kid)
            .all(&self.db)
            .await?;
        sorted_records(rows)
    }

    /// Makes sure a current and a next key exist: `current` is stored (as current, activated at
    /// `now_ms`) only when there is no current key, `next` only when there is no next key; a
    /// candidate not needed is dropped. Returns every stored key, as [`Store::signing_keys`].
    pub async fn ensure_signing_keys(
        &self,
        current: NewSigningKey,
        next: NewSigningKey,
        now_ms: i64,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let txn = self.begin_key_write().await?;
        let existing = all_keys(&txn).await?;
        let has = |status: KeyStatus| existing.iter().any(|k| k.status == status);
        if !has(KeyStatus::Current) {
            insert_key(&txn, current, KeyStatus::Current, now_ms).await?;
        }
        if !has(KeyStatus::Next) {
            insert_key(&txn, next, KeyStatus::Next, now_ms).await?;
        }
        let keys = all_keys(&txn).await?;
        txn.commit().await?;
        Ok(keys)
    }

    /// Rotates in one transaction: the current key is retired (`retired_at = now_ms`), the next
    /// key becomes current (`activated_at = now_ms`), `new_next` is stored as the next key, and
    /// retired keys retired at or before `delete_retired_before` are deleted.
    ///
    /// Fails with [`StoreError::NotFound`] when there is no current or no next key (call
    /// [`Store::ensure_signing_keys`] first).
    pub async fn rotate_signing_keys(
        &self,
        new_next: NewSigningKey,
        now_ms: i64,
        delete_retired_before: i64,
    ) -> Result<KeyRotation, StoreError> {
        use signing_keys::Column as C;
        let txn = self.begin_key_write().await?;
        let existing = all_keys(&txn).await?;
        let find = |status: KeyStatus| {
            existing
                .iter()
                .find(|k| k.status == status)
                .map(|k| k.kid.clone())
                .ok_or_else(|| StoreError::NotFound(format!("no {status} signing key to rotate")))
        };
        let (old_current, old_next) = (find(KeyStatus::Current)?, find(KeyStatus::Next)?);

        // Retire first: the partial unique index allows one current key at any moment.
        signing_keys::Entity::update_many()
            .set(signing_keys::ActiveModel {
                status: Set(KeyStatus::Retired.as_str().to_owned()),
                retired_at: Set(Some(now_ms)),
                ..Default::default()
            })
            .filter(C::Kid.eq(&old_current))
            .exec(&txn)
            .await?;
        signing_keys::Entity::update_many()
            .set(signing_keys::ActiveModel {
                status: Set(KeyStatus::Current.as_str().to_owned()),
                activated_at: Set(Some(now_ms)),
                ..Default::default()
            })
            .filter(C::Kid.eq(&old_next))
            .exec(&txn)
            .await?;
        let next_kid = new_next.kid.clone();
        insert_key(&txn, new_next, KeyStatus::Next, now_ms).await?;

        let deleted: Vec<String> = existing
            .iter()
            .filter(|k| {
                k.status == KeyStatus::Retired
                    && k.retired_at.is_some_and(|at| at <= delete_retired_before)
            })
            .map(|k| k.kid.clone())
            .collect();
        if !deleted.is_empty() {
            signing_keys::Entity::delete_many()
                .filter(C::Kid.is_in(deleted.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(KeyRotation {
            current: old_next,
            next: next_kid,
            retired: old_current,
            deleted,
        })
    }

    /// Replaces the stored private key of `kid` with `replacement` if it is still `expected`
    /// (sealing a key stored in the clear, see [`crate::tokens`]); `false` when the row has
    /// gone or holds something else by now (another node sealed it first).
    pub async fn replace_private_key(
        &self,
        kid: &str,
        expected: &str,
        replacement: String,
    ) -> Result<bool, StoreError> {
        use signing_keys::Column as C;
        let done = signing_keys::Entity::update_many()
            .set(signing_keys::ActiveModel {
                private_key: Set(replacement),
                ..Default::default()
            })
            .filter(C::Kid.eq(kid))
            .filter(C::PrivateKey.eq(expected))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// A write transaction that holds the signing-key table against other writers until it
    /// ends: `BEGIN IMMEDIATE` on SQLite, plus a `SHARE ROW EXCLUSIVE` table lock on PostgreSQL
    /// (which, unlike row locks, also covers the empty table of a first start).
    async fn begin_key_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let txn = self.begin_write().await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            txn.execute_unprepared("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                .await?;
        }
        Ok(txn)
    }
}

async fn all_keys(txn: &DatabaseTransaction) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let rows = signing_keys::Entity::find()
        .order_by_desc(signing_keys::Column::CreatedAt)
        .order_by_asc(signing_keys::Column::Kid)
        .all(txn)
        .await?;
    sorted_records(rows)
}

/// Records in publication order: current, next, then retired keys (newest retirement first).
fn sorted_records(rows: Vec<signing_keys::Model>) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let mut keys = rows
        .into_iter()
        .map(SigningKeyRecord::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort_by_key(|k| {
        let rank = match k.status {
            KeyStatus::Current => 0,
            KeyStatus::Next => 1,
            KeyStatus::Retired => 2,
        };
        (rank, std::cmp::Reverse(k.retired_at))
    });
    Ok(keys)
}

async fn insert_key(
    txn: &DatabaseTransaction,
    key: NewSigningKey,
    status: KeyStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    let kid = key.kid.clone();
    signing_keys::ActiveModel {
        kid: Set(key.kid),
        algorithm: Set(key.algorithm),
        private_key: Set(key.private_key),
        public_jwk: Set(key.public_jwk),
        status: Set(status.as_str().to_owned()),
        created_at: Set(now_ms),
        activated_at: Set((status == KeyStatus::Current).then_some(now_ms)),
        retired_at: Set(None),
    }
    .insert(txn)
    .await
    .map_err(|e| {
        StoreError::conflict_on_unique(e, || format!("signing key {kid} already exists"))
    })?;
    Ok(())
}
