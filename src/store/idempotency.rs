//! Idempotency records: the first response to each `(scope, key)`, kept 24 hours.
//!
//! A record is written in the transaction of what its request created (charges,
//! adjustments: see [`super::ledger`]), so "created" and "remembered" commit together. The
//! same key with the same request fingerprint replays the record; with another fingerprint it
//! is refused. Only successful responses are recorded: a refused request leaves its key free
//! for a corrected retry. Expired records are ignored on lookup and purged by
//! [`Store::purge_idempotency_keys`].

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::entities::idempotency_keys;
use super::{Store, StoreError};

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// A request's idempotency key, whose it is, and what the request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key: `operator`, `app_server:<id>`, `sip`. Keys of different scopes never meet.
    pub scope: String,
    pub key: String,
    /// Lowercase hex SHA-256 of the request (method, path, body): the same key with another
    /// request is refused.
    pub fingerprint: String,
}

/// A recorded response, replayed as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub location: Option<String>,
    /// The JSON body.
    pub body: String,
}

/// What a lookup found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The same request: replay this.
    Same(StoredResponse),
    /// Another request under the same key.
    Different,
}

pub(super) fn recorded(row: &idempotency_keys::Model, fingerprint: &str) -> Recorded {
    if row.fingerprint == fingerprint {
        Recorded::Same(StoredResponse {
            status: u16::try_from(row.status).unwrap_or(200),
            location: row.location.clone(),
            body: row.body.clone(),
        })
    } else {
        Recorded::Different
    }
}

pub(super) fn record_row(
    key: &IdempotencyKey,
    response: &StoredResponse,
    now_ms: i64,
) -> idempotency_keys::ActiveModel {
    idempotency_keys::ActiveModel {
        scope: Set(key.scope.clone()),
        key: Set(key.key.clone()),
        fingerprint: Set(key.fingerprint.clone()),
        status: Set(i32::from(response.status)),
        location: Set(response.location.clone()),
        body: Set(response.body.clone()),
        created_at: Set(now_ms),
        expires_at: Set(now_ms + IDEMPOTENCY_TTL_MS),
    }
}

/// The live records of `keys`, read inside `db` (a transaction, for the batch writers).
/// Expired records are deleted on the way, so their keys can be used again.
///
/// One `scope = ? AND key IN (…)` per scope in the batch (a batch of REST charges is usually
/// one shop's). Not an OR of `(scope, key)` pairs: with every pair naming the same scope,
/// PostgreSQL factored `scope = ?` out and intersected it with a scan of the whole scope's
/// index range (every record the shop ever made), 15 ms per batch at 140 000 records.
pub(super) async fn live_records<C: ConnectionTrait>(
    db: &C,
    keys: &[&IdempotencyKey],
    now_ms: i64,
) -> Result<Vec<idempotency_keys::Model>, StoreError> {
    use idempotency_keys::Column as C;
    let mut by_scope: Vec<(&str, Vec<&str>)> = Vec::new();
    for k in keys {
        match by_scope.iter_mut().find(|(scope, _)| *scope == k.scope) {
            Some((_, names)) => names.push(&k.key),
            None => by_scope.push((&k.scope, vec![&k.key])),
        }
    }
    let mut found = Vec::new();
    for (scope, names) in &by_scope {
        for chunk in names.chunks(256) {
            found.extend(
                idempotency_keys::Entity::find()
                    .filter(C::Scope.eq(*scope))
                    .filter(C::Key.is_in(chunk.iter().copied()))
                    .all(db)
                    .await?,
            );
        }
    }
    let (live, expired): (Vec<_>, Vec<_>) = found.into_iter().partition(|r| r.expires_at > now_ms);
    for row in expired {
        idempotency_keys::Entity::delete_many()
            .filter(C::Scope.eq(row.scope))
            .filter(C::Key.eq(row.key))
            .exec(db)
            .await?;
    }
    Ok(live)
}

impl Store {
    /// What is recorded under `key`, if anything live.
    pub async fn idempotency_lookup(
        &self,
        key: &IdempotencyKey,
        now_ms: i64,
    ) -> Result<Option<Recorded>, StoreError> {
        let rows = live_records(&self.db, &[key], now_ms).await?;
        Ok(rows.first().map(|r| recorded(r, &key.fingerprint)))
    }

    /// Records `response` under `key` after the fact (for requests that create nothing billed;
    /// see `docs/decisions/0010-billing.md`). A record already there wins.
    pub async fn idempotency_save(
        &self,
        key: &IdempotencyKey,
        response: &StoredResponse,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        use idempotency_keys::Column as C;
        idempotency_keys::Entity::insert(record_row(key, response, now_ms))
            .on_conflict(
                OnConflict::columns([C::Scope, C::Key])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Deletes records older than their 24 hours; returns how many.
    pub async fn purge_idempotency_keys(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(idempotency_keys::Entity::delete_many()
            .filter(idempotency_keys::Column::ExpiresAt.lte(now_ms))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
