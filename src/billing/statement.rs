//! A user's statement: one bill across every shop for a period `[from, to)`.
//!
//! It lists every session of the user that ended in the period (service, shop, confirmed and
//! ended times, duration, time charge), every item charge and adjustment booked in it, and
//! the totals per currency — the sum of every ledger entry booked in the period. A time
//! charge is booked when its session ends, so a session and its time charge always fall in
//! the same period.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::charges::Charge;
use super::money::{Money, Totals};
use crate::clock::rfc3339;
use crate::store::{LedgerRecord, Store, StoreError, KIND_ADJUSTMENT, KIND_ITEM, KIND_TIME};

/// One session on a statement.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "service_id": "5d1e…", "service": "wine@portal.com",
    "app_server_id": "9f8e…", "app_server": "shop1", "confirmed_at": "2026-12-01T20:00:00.000Z",
    "ended_at": "2026-12-01T20:01:30.000Z", "duration_ms": 90000,
    "time_charge": {"currency": "EUR", "amount": 230}
}))]
pub struct StatementSession {
    pub id: String,
    pub service_id: Option<String>,
    /// `name@domain`.
    pub service: String,
    pub app_server_id: Option<String>,
    pub app_server: String,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub confirmed_at: Option<i64>,
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// `null` when the service had no tariff when the session was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Money, required = false)]
    pub time_charge: Option<Money>,
}

/// A correction booked by the operator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "adj_0f9e8d7c6b5a49382716f5e4d3c2b1a0", "user_id": "4e3d…", "app_server_id": null,
    "session_id": null, "amount": -500, "currency": "EUR", "reason": "Goodwill credit",
    "created_at": "2026-12-01T21:00:00.000Z"
}))]
pub struct Adjustment {
    /// `adj_…`.
    pub id: String,
    pub user_id: String,
    pub app_server_id: Option<String>,
    pub session_id: Option<String>,
    /// Signed minor units: negative credits the user.
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl Adjustment {
    pub fn from_record(r: &LedgerRecord) -> Adjustment {
        Adjustment {
            id: r.id.clone(),
            user_id: r.user_id.clone(),
            app_server_id: r.app_server_id.clone(),
            session_id: r.session_id.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            reason: r.description.clone(),
            created_at: r.created_at,
        }
    }
}

/// A user's statement for `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "user": "alice", "from": "2026-12-01T00:00:00.000Z", "to": "2027-01-01T00:00:00.000Z", "sessions": [], "charges": [], "adjustments": [{"id": "adj_0f9e8d7c6b5a49382716f5e4d3c2b1a0", "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "app_server_id": null, "session_id": null, "amount": -500, "currency": "EUR", "reason": "Goodwill credit", "created_at": "2026-12-01T21:00:00.000Z"}], "totals": [{"currency": "EUR", "amount": -500}]}))]
pub struct Statement {
    pub user_id: String,
    pub user: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: i64,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: i64,
    /// Sessions that ended in the period, oldest first.
    pub sessions: Vec<StatementSession>,
    /// Item charges booked in the period, oldest first.
    pub charges: Vec<Charge>,
    /// Adjustments booked in the period, oldest first.
    pub adjustments: Vec<Adjustment>,
    /// Per currency, the sum of every time charge, item charge and adjustment above.
    pub totals: Vec<Money>,
}

impl Statement {
    /// Builds the statement of the user `user_id` (named `user`) for `[from, to)`.
    pub async fn build(
        store: &Store,
        user_id: &str,
        user: &str,
        from: i64,
        to: i64,
    ) -> Result<Statement, StoreError> {
        let entries = store.ledger_of_user(user_id, from, to).await?;
        let sessions = store
            .sessions_ended_between(false, user_id, from, to)
            .await?;
        let mut time: HashMap<String, Money> = HashMap::new();
        let mut totals = Totals::default();
        let mut charges = Vec::with_capacity(entries.len());
        let mut adjustments = Vec::new();
        for entry in entries {
            totals.add(&entry.currency, entry.amount);
            match entry.kind.as_str() {
                KIND_TIME => {
                    if let Some(session) = entry.session_id {
                        time.insert(
                            session,
                            Money {
                                currency: entry.currency,
                                amount: entry.amount,
                            },
                        );
                    }
                }
                KIND_ITEM => charges.extend(entry.into_charge()),
                KIND_ADJUSTMENT => adjustments.push(Adjustment::from_record(&entry)),
                _ => {}
            }
        }
        let sessions = sessions
            .into_iter()
            .map(|s| StatementSession {
                time_charge: time.remove(&s.id),
                id: s.id,
                service_id: s.service_id,
                service: s.service,
                app_server_id: s.app_server_id,
                app_server: s.app_server,
                confirmed_at: s.confirmed_at,
                ended_at: s.ended_at,
                duration_ms: s.duration_ms,
            })
            .collect();
        Ok(Statement {
            user_id: user_id.to_owned(),
            user: user.to_owned(),
            from,
            to,
            sessions,
            charges,
            adjustments,
            totals: totals.into_money().map_err(StoreError::internal)?,
        })
    }

    /// The statement as JSON, written into a buffer sized for it up front (a 100 000-entry
    /// statement is some 35 MB; growing a buffer to that by doubling copies it again).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        const BYTES_PER_LINE: usize = 400;
        let lines = self.sessions.len() + self.charges.len() + self.adjustments.len();
        let mut out = Vec::with_capacity(1024 + lines * BYTES_PER_LINE);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// The statement as CSV: one line per session, item charge and adjustment in time order,
    /// then one `total` line per currency. Amounts in minor units.
    pub fn to_csv(&self) -> String {
        let mut lines: Vec<(i64, String)> = Vec::new();
        for s in &self.sessions {
            let (amount, currency) = match &s.time_charge {
                Some(m) => (m.amount.to_string(), m.currency.clone()),
                None => (String::new(), String::new()),
            };
            lines.push((
                s.ended_at.unwrap_or_default(),
                csv_line(&[
                    &s.ended_at.map(rfc3339::format).unwrap_or_default(),
                    "session",
                    &s.id,
                    &s.service,
                    &s.app_server,
                    &format!("{} ms", s.duration_ms.unwrap_or_default()),
                    "",
                    "",
                    &amount,
                    &currency,
                ]),
            ));
        }
        for c in &self.charges {
            lines.push((
                c.created_at,
                csv_line(&[
                    &rfc3339::format(c.created_at),
                    "item",
                    &c.session_id,
                    "",
                    &c.app_server_id,
                    &c.description,
                    &c.quantity.to_string(),
                    &c.unit_amount.to_string(),
                    &c.amount.to_string(),
                    &c.currency,
                ]),
            ));
        }
        for a in &self.adjustments {
            lines.push((
                a.created_at,
                csv_line(&[
                    &rfc3339::format(a.created_at),
                    "adjustment",
                    a.session_id.as_deref().unwrap_or_default(),
                    "",
                    a.app_server_id.as_deref().unwrap_or_default(),
                    &a.reason,
                    "",
                    "",
                    &a.amount.to_string(),
                    &a.currency,
                ]),
            ));
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::from(
            "date,kind,session_id,service,app_server,description,quantity,unit_amount,amount,currency\n",
        );
        for (_, line) in lines {
            out.push_str(&line);
        }
        for t in &self.totals {
            out.push_str(&csv_line(&[
                "",
                "total",
                "",
                "",
                "",
                "",
                "",
                "",
                &t.amount.to_string(),
                &t.currency,
            ]));
        }
        out
    }
}

/// One CSV line (RFC 4180): fields with a comma, quote or line break are quoted. A field
/// that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`,
/// since descriptions come from shops (OWASP CSV injection).
pub fn csv_line(fields: &[&str]) -> String {
    let escaped: Vec<String> = fields
        .iter()
        .map(|f| {
            let neutral = match f.chars().next() {
                Some('=' | '+' | '@' | '\t' | '\r') => format!("'{f}"),
                Some('-') if f.parse::<i64>().is_err() => format!("'{f}"),
                _ => (*f).to_owned(),
            };
            if neutral.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", neutral.replace('"', "\"\""))
            } else {
                neutral
            }
        })
        .collect();
    let mut line = escaped.join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::csv_line;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(
            csv_line(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\n"
        );
        assert_eq!(csv_line(&["=SUM(A1)", "-5", "-x"]), "'=SUM(A1),-5,'-x\n");
    }
}
