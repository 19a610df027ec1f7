//! A shop's settlement for a period `[from, to)`: what it earned, the operator's commission,
//! and what it is paid.
//!
//! Gross is every ledger entry booked in the period that names the application server: the
//! item charges it reported, the time charges of sessions relayed to it (the time is spent in
//! its service; see `docs/decisions/0010-billing.md`), and adjustments the operator booked
//! against it. Commission is `gross × commission_bps / 10 000` per currency, rounded half
//! away from zero, at the server's current rate; net is gross − commission.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::money::{commission, Money, Totals};
use super::statement::csv_line;
use crate::clock::rfc3339;
use crate::store::{AppServerRecord, Store, StoreError, KIND_ADJUSTMENT, KIND_ITEM, KIND_TIME};

/// One session's part of a settlement, in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "session_id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "user_id": "4e3d…", "currency": "EUR",
    "time_amount": 230, "items_amount": 2250, "adjustments_amount": 0, "gross": 2480
}))]
pub struct SettlementSession {
    pub session_id: String,
    pub user_id: String,
    pub currency: String,
    /// The session's time charge.
    pub time_amount: i64,
    /// Its item charges.
    pub items_amount: i64,
    /// Adjustments booked against it.
    pub adjustments_amount: i64,
    pub gross: i64,
}

/// An application server's settlement for `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "app_server": "shop1", "from": "2026-12-01T00:00:00.000Z", "to": "2027-01-01T00:00:00.000Z", "commission_bps": 1500, "gross": [{"currency": "EUR", "amount": 33540}], "commission": [{"currency": "EUR", "amount": 5031}], "net": [{"currency": "EUR", "amount": 28509}], "sessions": [{"session_id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "currency": "EUR", "time_amount": 230, "items_amount": 2250, "adjustments_amount": 0, "gross": 2480}], "other_adjustments": []}))]
pub struct Settlement {
    pub app_server_id: String,
    pub app_server: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: i64,
    /// The operator's commission rate applied, in basis points.
    pub commission_bps: i32,
    /// Per currency: everything booked for this server in the period.
    pub gross: Vec<Money>,
    /// Per currency: the operator's commission on `gross`.
    pub commission: Vec<Money>,
    /// Per currency: `gross − commission`, what the server is paid.
    pub net: Vec<Money>,
    /// Per session and currency, oldest first.
    pub sessions: Vec<SettlementSession>,
    /// Adjustments for the server that name no session.
    pub other_adjustments: Vec<Money>,
}

impl Settlement {
    pub async fn build(
        store: &Store,
        server: &AppServerRecord,
        from: i64,
        to: i64,
    ) -> Result<Settlement, StoreError> {
        let entries = store.ledger_of_app_server(&server.id, from, to).await?;
        let mut gross = Totals::default();
        let mut other = Totals::default();
        let mut order: Vec<(String, String)> = Vec::new();
        let mut per_session: BTreeMap<(String, String), SettlementSession> = BTreeMap::new();
        for e in &entries {
            gross.add(&e.currency, e.amount);
            let Some(session) = &e.session_id else {
                other.add(&e.currency, e.amount);
                continue;
            };
            let key = (session.clone(), e.currency.clone());
            let line = per_session.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                SettlementSession {
                    session_id: session.clone(),
                    user_id: e.user_id.clone(),
                    currency: e.currency.clone(),
                    time_amount: 0,
                    items_amount: 0,
                    adjustments_amount: 0,
                    gross: 0,
                }
            });
            let slot = match e.kind.as_str() {
                KIND_TIME => &mut line.time_amount,
                KIND_ITEM => &mut line.items_amount,
                KIND_ADJUSTMENT => &mut line.adjustments_amount,
                _ => continue,
            };
            *slot = slot.saturating_add(e.amount);
            line.gross = line.gross.saturating_add(e.amount);
        }
        let bps = i64::from(server.commission_bps);
        let commission_totals = gross.map(|g| commission(g, bps));
        let net = gross.map(|g| g - commission(g, bps));
        Ok(Settlement {
            app_server_id: server.id.clone(),
            app_server: server.name.clone(),
            from,
            to,
            commission_bps: server.commission_bps,
            gross: gross.into_money().map_err(StoreError::internal)?,
            commission: commission_totals
                .into_money()
                .map_err(StoreError::internal)?,
            net: net.into_money().map_err(StoreError::internal)?,
            sessions: order.iter().filter_map(|k| per_session.remove(k)).collect(),
            other_adjustments: other.into_money().map_err(StoreError::internal)?,
        })
    }

    /// The settlement as CSV: one line per session and currency, then per currency the
    /// gross, commission and net.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "session_id,user_id,currency,time_amount,items_amount,adjustments_amount,gross\n",
        );
        for s in &self.sessions {
            out.push_str(&csv_line(&[
                &s.session_id,
                &s.user_id,
                &s.currency,
                &s.time_amount.to_string(),
                &s.items_amount.to_string(),
                &s.adjustments_amount.to_string(),
                &s.gross.to_string(),
            ]));
        }
        for (label, list) in [
            ("gross", &self.gross),
            ("commission", &self.commission),
            ("net", &self.net),
        ] {
            for m in list {
                out.push_str(&csv_line(&[
                    label,
                    "",
                    &m.currency,
                    "",
                    "",
                    "",
                    &m.amount.to_string(),
                ]));
            }
        }
        out
    }
}
