//! The digest nonce keys every relay node shares (the `nonce_keys` table).
//!
//! [`Store::nonce_keys`] is called at start and then periodically by each node: it creates
//! the first key when there is none, writes the next key `lead_ms` ahead of its activation
//! once the current one is older than `rotate_ms`, deletes all but the newest
//! [`KEPT_KEYS`], and returns those (newest first). Nodes racing on the first key or on a
//! rotation may each write one; every node accepts all kept keys, so that costs nothing.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::entities::nonce_keys;
use super::{Store, StoreError};

/// How many keys are kept and accepted: the next (written ahead), the current, the previous.
pub const KEPT_KEYS: usize = 3;

/// One nonce key as the relay uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceKeyRecord {
    pub key: Vec<u8>,
    /// Nonces are issued with it from this time on (milliseconds since the epoch).
    pub active_from: i64,
}

impl std::fmt::Debug for NonceKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKeyRecord")
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The kept nonce keys, newest first, creating or rotating as the module docs say.
    pub async fn nonce_keys(
        &self,
        now_ms: i64,
        rotate_ms: i64,
        lead_ms: i64,
    ) -> Result<Vec<NonceKeyRecord>, StoreError> {
        let mut rows = self.nonce_key_rows().await?;
        let newest_active = rows.iter().find(|r| r.active_from <= now_ms);
        let pending = rows.iter().any(|r| r.active_from > now_ms);
        let write_at = match newest_active {
            None if !pending => Some(now_ms),
            Some(current) if !pending && now_ms - current.active_from >= rotate_ms => {
                Some(now_ms + lead_ms)
            }
            _ => None,
        };
        if let Some(active_from) = write_at {
            nonce_keys::ActiveModel {
                id: Set(uuid::Uuid::new_v4().to_string()),
                key_hex: Set(hex::encode(rand::random::<[u8; 32]>())),
                created_at: Set(now_ms),
                active_from: Set(active_from),
            }
            .insert(&self.db)
            .await?;
            rows = self.nonce_key_rows().await?;
        }
        if rows.len() > KEPT_KEYS {
            let old: Vec<String> = rows
                .split_off(KEPT_KEYS)
                .into_iter()
                .map(|r| r.id)
                .collect();
            nonce_keys::Entity::delete_many()
                .filter(nonce_keys::Column::Id.is_in(old))
                .exec(&self.db)
                .await?;
        }
        rows.into_iter()
            .map(|r| {
                Ok(NonceKeyRecord {
                    key: hex::decode(&r.key_hex)
                        .map_err(|_| StoreError::internal("a nonce key is not hex"))?,
                    active_from: r.active_from,
                })
            })
            .collect()
    }

    async fn nonce_key_rows(&self) -> Result<Vec<nonce_keys::Model>, StoreError> {
        Ok(nonce_keys::Entity::find()
            .order_by_desc(nonce_keys::Column::ActiveFrom)
            .order_by_desc(nonce_keys::Column::Id)
            .all(&self.db)
            .await?)
    }
}
