//! The ledger: time charges, item charges and adjustments, append-only.
//!
//! - [`Store::apply_charges`] writes a batch of item-charge requests in one transaction:
//!   idempotency records read, sessions read, every request checked, then one multi-row
//!   INSERT each for the ledger entries, the `charge.created` outbox rows and the new
//!   idempotency records. The REST API reaches it through [`crate::billing::ChargeWriter`]
//!   (group commit); the SIP side through [`crate::billing::record_charges`] (a batch of one).
//! - [`bill_sessions`] writes the time charges of sessions that just ended, inside the
//!   transaction that ended them (the session writer's, or the restart clean-up's), with the
//!   tariff version recorded at confirmation, and their `session.terminated` outbox rows.
//! - Reads: charges by session or by filters, page by page; a shop's whole period for its
//!   settlement (through [`Store::read_period`], which statements stream from).
//!
//! Ledger ids: `ch_…` item charges, `adj_…` adjustments, `tc_<session id>` time charges (one
//! per session by construction: a second attempt to bill a session does nothing).

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Condition, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};
use serde_json::{Map, Value as Json};

use super::entities::{idempotency_keys, ledger_entries};
use super::idempotency::{
    live_records, record_row, recorded, IdempotencyKey, Recorded, StoredResponse,
};
use super::period::{EntryRef, PeriodScope, PeriodVisitor};
use super::sessions::SessionState;
use super::webhooks::{insert_outbox, OutboxEvent};
use super::{Store, StoreError};
use crate::billing::charges::{check_all, Charge, ChargeSource, NewCharge};
use crate::billing::money::Money;
use crate::billing::statement::StatementSession;
use crate::billing::tariff::Tariff;
use crate::billing::BillingError;

/// Ledger entry kinds.
pub const KIND_TIME: &str = "time";
pub const KIND_ITEM: &str = "item";
pub const KIND_ADJUSTMENT: &str = "adjustment";

/// One request to record item charges of a session.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub session_id: String,
    pub source: ChargeSource,
    pub charges: Vec<NewCharge>,
    pub idempotency: IdempotencyKey,
    /// Only a session relayed to this application server may be charged (a shop's key);
    /// `None` for the operator and the relay's own SIP path.
    pub app_server_id: Option<String>,
    /// One charge answered as one object with unprefixed field names (REST); otherwise a
    /// list with fields named `charges[i].…` (SIP).
    pub single: bool,
}

/// What became of a charge request.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    /// Written now.
    Created(Vec<Charge>),
    /// The key was seen with the same request: its first response.
    Replayed(StoredResponse),
}

/// One ledger entry as statements and listings read it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRecord {
    pub id: String,
    pub kind: String,
    pub source: String,
    pub user_id: String,
    pub app_server_id: Option<String>,
    pub session_id: Option<String>,
    pub service_id: Option<String>,
    pub description: String,
    pub unit_amount: Option<i64>,
    pub quantity: Option<i64>,
    pub amount: i64,
    pub currency: String,
    pub metadata: Option<Map<String, Json>>,
    pub created_at: i64,
}

impl From<ledger_entries::Model> for LedgerRecord {
    fn from(m: ledger_entries::Model) -> Self {
        LedgerRecord {
            id: m.id,
            kind: m.kind,
            source: m.source,
            user_id: m.user_id,
            app_server_id: m.app_server_id,
            session_id: m.session_id,
            service_id: m.service_id,
            description: m.description,
            unit_amount: m.unit_amount,
            quantity: m.quantity.map(i64::from),
            amount: m.amount,
            currency: m.currency,
            metadata: m.metadata.and_then(|t| serde_json::from_str(&t).ok()),
            created_at: m.created_at,
        }
    }
}

impl LedgerRecord {
    /// This entry as an item [`Charge`], if it is one.
    pub fn as_charge(&self) -> Option<Charge> {
        self.clone().into_charge()
    }

    /// The same, taking the entry apart instead of copying it (statements read thousands).
    pub fn into_charge(self) -> Option<Charge> {
        if self.kind != KIND_ITEM {
            return None;
        }
        Some(Charge {
            id: self.id,
            session_id: self.session_id?,
            user_id: self.user_id,
            app_server_id: self.app_server_id?,
            description: self.description,
            unit_amount: self.unit_amount?,
            quantity: self.quantity?,
            amount: self.amount,
            currency: self.currency,
            source: ChargeSource::parse(&self.source)?,
            metadata: self.metadata,
            created_at: self.created_at,
        })
    }
}

/// Filters of [`Store::page_ledger`], newest first by `(created_at, id)`.
#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    pub kind: Option<&'static str>,
    pub user_id: Option<String>,
    pub app_server_id: Option<String>,
    pub session_id: Option<String>,
    /// `created_at >= from`.
    pub from: Option<i64>,
    /// `created_at < to`.
    pub to: Option<i64>,
    pub after: Option<(i64, String)>,
    pub limit: u64,
}

/// An adjustment to write.
#[derive(Debug, Clone)]
pub struct NewAdjustment {
    pub user_id: String,
    pub app_server_id: Option<String>,
    pub session_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
}

/// The columns of a session that billing reads.
#[derive(Debug, Clone)]
struct BillableSession {
    state: String,
    user_id: Option<String>,
    service_id: Option<String>,
    app_server_id: Option<String>,
    ended_at: Option<i64>,
    tariff_currency: Option<String>,
    webhook_url: Option<String>,
}

/// A new ledger id, `<prefix>_<UUIDv7>`: time-ordered, see [`super::time_ordered_uuid`].
fn ledger_id(prefix: &str, now_ms: i64) -> String {
    format!("{prefix}_{}", super::time_ordered_uuid(now_ms).simple())
}

/// `?` placeholders rewritten to `$1, $2, …` on PostgreSQL.
pub(super) fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push_str(&format!("${n}"));
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `?, ?, …` for `n` values.
pub(super) fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

async fn billable_sessions(
    txn: &DatabaseTransaction,
    ids: &[&str],
) -> Result<HashMap<String, BillableSession>, StoreError> {
    let mut found = HashMap::new();
    let backend = txn.get_database_backend();
    for chunk in ids.chunks(256) {
        let sql = format!(
            "SELECT s.id, s.state, s.user_id, s.service_id, s.app_server_id, s.ended_at, \
             t.currency AS tariff_currency, \
             CASE WHEN a.deleted_at IS NULL THEN a.webhook_url END AS webhook_url \
             FROM sessions s \
             LEFT JOIN tariffs t ON t.id = s.tariff_id \
             LEFT JOIN app_servers a ON a.id = s.app_server_id \
             WHERE s.id IN ({})",
            marks(chunk.len())
        );
        let values = chunk.iter().map(|id| Value::from(*id)).collect();
        for row in txn.query_all_raw(statement(backend, &sql, values)).await? {
            found.insert(
                row.try_get::<String>("", "id")?,
                BillableSession {
                    state: row.try_get("", "state")?,
                    user_id: row.try_get("", "user_id")?,
                    service_id: row.try_get("", "service_id")?,
                    app_server_id: row.try_get("", "app_server_id")?,
                    ended_at: row.try_get("", "ended_at")?,
                    tariff_currency: row.try_get("", "tariff_currency")?,
                    webhook_url: row.try_get("", "webhook_url")?,
                },
            );
        }
    }
    Ok(found)
}

/// Whether a session may be charged at `now_ms`; `Err` says why not.
fn check_session(
    session: Option<&BillableSession>,
    request: &ChargeRequest,
    now_ms: i64,
    grace_ms: i64,
) -> Result<(String, String), BillingError> {
    let not_found = || BillingError::NotFound(format!("no session {}", request.session_id));
    let session = session.ok_or_else(not_found)?;
    if let Some(own) = &request.app_server_id {
        if session.app_server_id.as_deref() != Some(own.as_str()) {
            return Err(not_found());
        }
    }
    let (Some(user_id), Some(app_server_id)) = (&session.user_id, &session.app_server_id) else {
        return Err(BillingError::NotBillable(format!(
            "session {} was recorded before billing and cannot be charged",
            request.session_id
        )));
    };
    match session.state.as_str() {
        "confirmed" => {}
        "terminated" => {
            let ended = session.ended_at.unwrap_or(i64::MIN);
            if now_ms > ended.saturating_add(grace_ms) {
                return Err(BillingError::NotBillable(format!(
                    "session {} ended more than {} s ago ([billing] charge_grace_secs); charges are closed",
                    request.session_id,
                    grace_ms / 1000
                )));
            }
        }
        "trying" => {
            return Err(BillingError::NotBillable(format!(
                "session {} is not confirmed yet; retry once the caller has acknowledged",
                request.session_id
            )))
        }
        other => {
            return Err(BillingError::NotBillable(format!(
                "session {} is {other}: it was never established and cannot be charged",
                request.session_id
            )))
        }
    }
    Ok((user_id.clone(), app_server_id.clone()))
}

impl Store {
    /// Records a batch of charge requests in one transaction; one outcome per request, in
    /// order. `Err` means the transaction failed and nothing was written.
    pub async fn apply_charges(
        &self,
        now_ms: i64,
        requests: &[ChargeRequest],
    ) -> Result<Vec<Result<ChargeOutcome, BillingError>>, StoreError> {
        let txn = self.begin_write().await?;
        let keys: Vec<&IdempotencyKey> = requests.iter().map(|r| &r.idempotency).collect();
        let mut known: HashMap<(String, String), idempotency_keys::Model> =
            live_records(&txn, &keys, now_ms)
                .await?
                .into_iter()
                .map(|r| ((r.scope.clone(), r.key.clone()), r))
                .collect();
        let session_ids: Vec<&str> = requests
            .iter()
            .map(|r| r.session_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let sessions = billable_sessions(&txn, &session_ids).await?;

        let mut outcomes = Vec::with_capacity(requests.len());
        let mut entries = Vec::new();
        let mut events = Vec::new();
        let mut records = Vec::new();
        for request in requests {
            let k = &request.idempotency;
            if let Some(row) = known.get(&(k.scope.clone(), k.key.clone())) {
                outcomes.push(match recorded(row, &k.fingerprint) {
                    Recorded::Same(response) => Ok(ChargeOutcome::Replayed(response)),
                    Recorded::Different => Err(BillingError::KeyReused(format!(
                        "Idempotency-Key {:?} was used for a different request",
                        k.key
                    ))),
                });
                continue;
            }
            let checked = check_session(
                sessions.get(&request.session_id),
                request,
                now_ms,
                self.charge_grace_ms,
            )
            .and_then(|ids| {
                let amounts =
                    check_all(&request.charges, !request.single).map_err(BillingError::from)?;
                let session = &sessions[&request.session_id];
                if let Some(currency) = &session.tariff_currency {
                    for (i, c) in request.charges.iter().enumerate() {
                        if &c.currency != currency {
                            let field = if request.single {
                                "currency".to_owned()
                            } else {
                                format!("charges[{i}].currency")
                            };
                            return Err(BillingError::Invalid {
                                field,
                                message: format!(
                                    "the service's tariff is in {currency}; charges must be too"
                                ),
                            });
                        }
                    }
                }
                Ok((ids, amounts))
            });
            let ((user_id, app_server_id), amounts) = match checked {
                Ok(v) => v,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            let session = &sessions[&request.session_id];
            let charges: Vec<Charge> = request
                .charges
                .iter()
                .zip(amounts)
                .map(|(c, amount)| Charge {
                    id: ledger_id("ch", now_ms),
                    session_id: request.session_id.clone(),
                    user_id: user_id.clone(),
                    app_server_id: app_server_id.clone(),
                    description: c.description.clone(),
                    unit_amount: c.unit_amount,
                    quantity: c.quantity,
                    amount,
                    currency: c.currency.clone(),
                    source: request.source,
                    metadata: c.metadata.clone(),
                    created_at: now_ms,
                })
                .collect();
            for charge in &charges {
                entries.push(item_row(charge, session.service_id.clone()));
                if session.webhook_url.is_some() {
                    events.push(OutboxEvent {
                        app_server_id: app_server_id.clone(),
                        event_type: "charge.created",
                        subject_id: charge.id.clone(),
                        created_at: now_ms,
                        data: serde_json::to_value(charge).unwrap_or_default(),
                    });
                }
            }
            let response = if request.single {
                StoredResponse {
                    status: 201,
                    location: charges.first().map(|c| format!("/v1/charges/{}", c.id)),
                    body: serde_json::to_string(&charges[0]).unwrap_or_default(),
                }
            } else {
                StoredResponse {
                    status: 200,
                    location: None,
                    body: serde_json::to_string(&charges).unwrap_or_default(),
                }
            };
            let row = record_row(k, &response, now_ms);
            if let Ok(model) = sea_orm::TryIntoModel::try_into_model(row.clone()) {
                known.insert((k.scope.clone(), k.key.clone()), model);
            }
            records.push(row);
            outcomes.push(Ok(ChargeOutcome::Created(charges)));
        }

        for chunk in entries.chunks(128) {
            ledger_entries::Entity::insert_many(chunk.iter().cloned())
                .exec_without_returning(&txn)
                .await?;
        }
        insert_outbox(&txn, events).await?;
        for chunk in records.chunks(128) {
            idempotency_keys::Entity::insert_many(chunk.iter().cloned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Writes an adjustment with its idempotency record in one transaction. The user (and
    /// the application server and session, when named) must exist.
    pub async fn add_adjustment(
        &self,
        now_ms: i64,
        adjustment: &NewAdjustment,
        key: &IdempotencyKey,
        render: impl FnOnce(&LedgerRecord) -> StoredResponse,
    ) -> Result<AdjustmentOutcome, StoreError> {
        let txn = self.begin_write().await?;
        if let Some(row) = live_records(&txn, &[key], now_ms).await?.first() {
            return Ok(AdjustmentOutcome::Recorded(recorded(row, &key.fingerprint)));
        }
        super::api_queries::user_exists(&txn, &adjustment.user_id).await?;
        if let Some(id) = &adjustment.app_server_id {
            super::api_queries::app_server_exists(&txn, id).await?;
        }
        if let Some(id) = &adjustment.session_id {
            super::api_queries::session_exists(&txn, id).await?;
        }
        let record = LedgerRecord {
            id: ledger_id("adj", now_ms),
            kind: KIND_ADJUSTMENT.to_owned(),
            source: "operator".to_owned(),
            user_id: adjustment.user_id.clone(),
            app_server_id: adjustment.app_server_id.clone(),
            session_id: adjustment.session_id.clone(),
            service_id: None,
            description: adjustment.reason.clone(),
            unit_amount: None,
            quantity: None,
            amount: adjustment.amount,
            currency: adjustment.currency.clone(),
            metadata: None,
            created_at: now_ms,
        };
        ledger_entries::Entity::insert(entry_row(&record))
            .exec_without_returning(&txn)
            .await?;
        let response = render(&record);
        idempotency_keys::Entity::insert(record_row(key, &response, now_ms))
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(AdjustmentOutcome::Created(Box::new(record)))
    }

    /// Ledger entries matching `query`, newest first.
    pub async fn page_ledger(&self, query: &LedgerQuery) -> Result<Vec<LedgerRecord>, StoreError> {
        use ledger_entries::Column as C;
        let mut select = ledger_entries::Entity::find();
        if let Some(kind) = query.kind {
            select = select.filter(C::Kind.eq(kind));
        }
        if let Some(v) = &query.user_id {
            select = select.filter(C::UserId.eq(v.as_str()));
        }
        if let Some(v) = &query.app_server_id {
            select = select.filter(C::AppServerId.eq(v.as_str()));
        }
        if let Some(v) = &query.session_id {
            select = select.filter(C::SessionId.eq(v.as_str()));
        }
        if let Some(from) = query.from {
            select = select.filter(C::CreatedAt.gte(from));
        }
        if let Some(to) = query.to {
            select = select.filter(C::CreatedAt.lt(to));
        }
        if let Some((at, id)) = &query.after {
            select = select.filter(
                Condition::any().add(C::CreatedAt.lt(*at)).add(
                    Condition::all()
                        .add(C::CreatedAt.eq(*at))
                        .add(C::Id.lt(id.as_str())),
                ),
            );
        }
        Ok(select
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            .limit(query.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(LedgerRecord::from)
            .collect())
    }

    /// One ledger entry by id.
    pub async fn get_ledger_entry(&self, id: &str) -> Result<LedgerRecord, StoreError> {
        ledger_entries::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(LedgerRecord::from)
            .ok_or_else(|| StoreError::NotFound(format!("no charge {id}")))
    }

    /// Every ledger entry naming `app_server_id` booked in `[from, to)`, oldest first.
    pub async fn ledger_of_app_server(
        &self,
        app_server_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<LedgerRecord>, StoreError> {
        self.ledger_in(PeriodScope::AppServer(app_server_id), from, to)
            .await
    }

    /// Every entry of `scope`'s period `[from, to)`, oldest first, as owned records.
    async fn ledger_in(
        &self,
        scope: PeriodScope<'_>,
        from: i64,
        to: i64,
    ) -> Result<Vec<LedgerRecord>, StoreError> {
        struct Collect(Vec<LedgerRecord>);
        impl PeriodVisitor for Collect {
            fn sessions(&mut self, _: Vec<StatementSession>) -> Result<(), StoreError> {
                Ok(())
            }
            fn entry(&mut self, entry: &EntryRef<'_>) -> Result<(), StoreError> {
                self.0.push(entry.to_record());
                Ok(())
            }
        }
        Ok(self
            .read_period(scope, from, to, Collect(Vec::new()))
            .await?
            .0)
    }

    /// The time charge of each of `session_ids` that has one.
    pub async fn time_charges(
        &self,
        session_ids: &[String],
    ) -> Result<HashMap<String, Money>, StoreError> {
        use ledger_entries::Column as C;
        let ids: Vec<String> = session_ids.iter().map(|id| format!("tc_{id}")).collect();
        let mut found = HashMap::new();
        for chunk in ids.chunks(256) {
            for row in ledger_entries::Entity::find()
                .filter(C::Id.is_in(chunk.iter().cloned()))
                .all(&self.db)
                .await?
            {
                if let Some(session) = row.session_id {
                    found.insert(
                        session,
                        Money {
                            currency: row.currency,
                            amount: row.amount,
                        },
                    );
                }
            }
        }
        Ok(found)
    }
}

/// What [`Store::add_adjustment`] did.
#[derive(Debug, Clone)]
pub enum AdjustmentOutcome {
    /// Written now.
    Created(Box<LedgerRecord>),
    /// The key was seen before: the same request (replay) or another one.
    Recorded(Recorded),
}

fn entry_row(r: &LedgerRecord) -> ledger_entries::ActiveModel {
    ledger_entries::ActiveModel {
        id: Set(r.id.clone()),
        kind: Set(r.kind.clone()),
        source: Set(r.source.clone()),
        user_id: Set(r.user_id.clone()),
        app_server_id: Set(r.app_server_id.clone()),
        session_id: Set(r.session_id.clone()),
        service_id: Set(r.service_id.clone()),
        tariff_id: Set(None),
        description: Set(r.description.clone()),
        unit_amount: Set(r.unit_amount),
        quantity: Set(r.quantity.and_then(|q| i32::try_from(q).ok())),
        amount: Set(r.amount),
        currency: Set(r.currency.clone()),
        metadata: Set(r
            .metadata
            .as_ref()
            .map(|m| Json::Object(m.clone()).to_string())),
        created_at: Set(r.created_at),
    }
}

fn item_row(c: &Charge, service_id: Option<String>) -> ledger_entries::ActiveModel {
    entry_row(&LedgerRecord {
        id: c.id.clone(),
        kind: KIND_ITEM.to_owned(),
        source: c.source.as_str().to_owned(),
        user_id: c.user_id.clone(),
        app_server_id: Some(c.app_server_id.clone()),
        session_id: Some(c.session_id.clone()),
        service_id,
        description: c.description.clone(),
        unit_amount: Some(c.unit_amount),
        quantity: Some(c.quantity),
        amount: c.amount,
        currency: c.currency.clone(),
        metadata: c.metadata.clone(),
        created_at: c.created_at,
    })
}

/// Bills the sessions `ids` that are terminated: a time charge per session that had a tariff
/// at confirmation (dated at its end), and a `session.terminated` event for application
/// servers with a webhook URL. Runs inside the transaction that terminated them; one SELECT
/// (of the sessions with a tariff or a webhook only: the others have nothing to write) and at
/// most two multi-row INSERTs for the whole set. A session already billed is skipped.
pub(super) async fn bill_sessions(
    txn: &DatabaseTransaction,
    ids: &[&str],
) -> Result<(), StoreError> {
    let backend = txn.get_database_backend();
    let mut entries = Vec::new();
    let mut events = Vec::new();
    for chunk in ids.chunks(256) {
        let sql = format!(
            "SELECT s.id, s.call_id, s.caller, s.service, s.app_server, s.user_id, s.service_id, \
             s.app_server_id, s.tariff_id, s.confirmed_at, s.ended_at, s.duration_ms, s.ended_by, \
             s.end_reason, t.currency, t.setup_amount, t.per_minute_amount, t.increment_secs, \
             t.free_secs, CASE WHEN a.deleted_at IS NULL THEN a.webhook_url END AS webhook_url, \
             s.state \
             FROM sessions s \
             LEFT JOIN tariffs t ON t.id = s.tariff_id \
             LEFT JOIN app_servers a ON a.id = s.app_server_id \
             WHERE s.id IN ({}) \
             AND (t.id IS NOT NULL OR (a.webhook_url IS NOT NULL AND a.deleted_at IS NULL))",
            marks(chunk.len())
        );
        let values = chunk.iter().map(|id| Value::from(*id)).collect();
        for row in txn.query_all_raw(statement(backend, &sql, values)).await? {
            // The state is checked here, not in SQL: with `state = …` beside the id list,
            // SQLite's planner walks the state index, every terminated session ever.
            if row.try_get::<String>("", "state")? != SessionState::Terminated.as_str() {
                continue;
            }
            let id: String = row.try_get("", "id")?;
            let user_id: Option<String> = row.try_get("", "user_id")?;
            let app_server_id: Option<String> = row.try_get("", "app_server_id")?;
            let ended_at: Option<i64> = row.try_get("", "ended_at")?;
            let duration_ms: i64 = row.try_get::<Option<i64>>("", "duration_ms")?.unwrap_or(0);
            let confirmed_at: Option<i64> = row.try_get("", "confirmed_at")?;
            let tariff = match row.try_get::<Option<String>>("", "currency")? {
                Some(currency) => Some(Tariff {
                    currency,
                    setup_amount: row.try_get("", "setup_amount")?,
                    per_minute_amount: row.try_get("", "per_minute_amount")?,
                    increment_secs: row.try_get("", "increment_secs")?,
                    free_secs: row.try_get("", "free_secs")?,
                }),
                None => None,
            };
            let at = ended_at.unwrap_or_default();
            let mut time_charge = None;
            if let (Some(tariff), Some(user), Some(_)) = (&tariff, &user_id, confirmed_at) {
                let amount = tariff.time_charge(duration_ms);
                time_charge = Some(Money {
                    currency: tariff.currency.clone(),
                    amount,
                });
                entries.push(ledger_entries::ActiveModel {
                    id: Set(format!("tc_{id}")),
                    kind: Set(KIND_TIME.to_owned()),
                    source: Set("session".to_owned()),
                    user_id: Set(user.clone()),
                    app_server_id: Set(app_server_id.clone()),
                    session_id: Set(Some(id.clone())),
                    service_id: Set(row.try_get("", "service_id")?),
                    tariff_id: Set(row.try_get("", "tariff_id")?),
                    description: Set(format!(
                        "{} for {} s",
                        row.try_get::<String>("", "service")?,
                        tariff.billable_secs(duration_ms)
                    )),
                    unit_amount: Set(None),
                    quantity: Set(None),
                    amount: Set(amount),
                    currency: Set(tariff.currency.clone()),
                    metadata: Set(None),
                    created_at: Set(at),
                });
            }
            let webhook_url: Option<String> = row.try_get("", "webhook_url")?;
            if let (Some(_), Some(server)) = (webhook_url, &app_server_id) {
                events.push(OutboxEvent {
                    app_server_id: server.clone(),
                    event_type: "session.terminated",
                    subject_id: id.clone(),
                    created_at: at,
                    data: serde_json::json!({
                        "id": id,
                        "call_id": row.try_get::<String>("", "call_id")?,
                        "user_id": user_id,
                        "user": row.try_get::<String>("", "caller")?,
                        "service_id": row.try_get::<Option<String>>("", "service_id")?,
                        "service": row.try_get::<String>("", "service")?,
                        "app_server_id": app_server_id,
                        "app_server": row.try_get::<String>("", "app_server")?,
                        "confirmed_at": confirmed_at.map(crate::clock::rfc3339::format),
                        "ended_at": ended_at.map(crate::clock::rfc3339::format),
                        "duration_ms": duration_ms,
                        "ended_by": row.try_get::<Option<String>>("", "ended_by")?,
                        "end_reason": row.try_get::<Option<String>>("", "end_reason")?,
                        "time_charge": time_charge,
                    }),
                });
            }
        }
    }
    for chunk in entries.chunks(128) {
        ledger_entries::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(
                OnConflict::column(ledger_entries::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    insert_outbox(txn, events).await
}

/// `session.confirmed` events for the sessions `ids` whose application server has a webhook
/// URL; one SELECT and at most one INSERT, inside the transaction that confirmed them.
pub(super) async fn announce_confirmed(
    txn: &DatabaseTransaction,
    ids: &[&str],
) -> Result<(), StoreError> {
    let backend = txn.get_database_backend();
    let mut events = Vec::new();
    for chunk in ids.chunks(256) {
        let sql = format!(
            "SELECT s.id, s.call_id, s.caller, s.service, s.app_server, s.user_id, s.service_id, \
             s.app_server_id, s.confirmed_at, s.state \
             FROM sessions s JOIN app_servers a ON a.id = s.app_server_id \
             WHERE a.webhook_url IS NOT NULL AND a.deleted_at IS NULL AND s.id IN ({})",
            marks(chunk.len())
        );
        let values = chunk.iter().map(|id| Value::from(*id)).collect();
        for row in txn.query_all_raw(statement(backend, &sql, values)).await? {
            // As in `bill_sessions`: the state filter stays out of SQL's sight.
            let state: String = row.try_get("", "state")?;
            if state != SessionState::Confirmed.as_str()
                && state != SessionState::Terminated.as_str()
            {
                continue;
            }
            let id: String = row.try_get("", "id")?;
            let confirmed_at: i64 = row.try_get::<Option<i64>>("", "confirmed_at")?.unwrap_or(0);
            events.push(OutboxEvent {
                app_server_id: row.try_get("", "app_server_id")?,
                event_type: "session.confirmed",
                subject_id: id.clone(),
                created_at: confirmed_at,
                data: serde_json::json!({
                    "id": id,
                    "call_id": row.try_get::<String>("", "call_id")?,
                    "user_id": row.try_get::<Option<String>>("", "user_id")?,
                    "user": row.try_get::<String>("", "caller")?,
                    "service_id": row.try_get::<Option<String>>("", "service_id")?,
                    "service": row.try_get::<String>("", "service")?,
                    "app_server_id": row.try_get::<Option<String>>("", "app_server_id")?,
                    "app_server": row.try_get::<String>("", "app_server")?,
                    "confirmed_at": crate::clock::rfc3339::format(confirmed_at),
                }),
            });
        }
    }
    insert_outbox(txn, events).await
}
