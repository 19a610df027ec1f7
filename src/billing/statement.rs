//! A user's statement: one bill across every shop for a period `[from, to)`.
//!
//! It lists every session of the user that ended in the period (service, shop, confirmed and
//! ended times, duration, time charge), every item charge and adjustment booked in it, and
//! the totals per currency — the sum of every ledger entry booked in the period. A time
//! charge is booked when its session ends, so a session and its time charge always fall in
//! the same period.
//!
//! [`write_statement`] writes it, as JSON or CSV, while the period is read (decision 0013):
//! 100 000 entries are 35 MB of JSON, which is never held whole.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::charges::{Charge, ChargeView};
use super::money::{Money, Totals};
use crate::clock::rfc3339;
use crate::store::{
    EntryRef, LedgerRecord, PeriodScope, PeriodVisitor, Store, StoreError, KIND_ADJUSTMENT,
    KIND_ITEM,
};

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
    pub fn from_entry(e: &EntryRef<'_>) -> Adjustment {
        Adjustment {
            id: e.id.to_owned(),
            user_id: e.user_id.to_owned(),
            app_server_id: e.app_server_id.map(str::to_owned),
            session_id: e.session_id.map(str::to_owned),
            amount: e.amount,
            currency: e.currency.to_owned(),
            reason: e.description.to_owned(),
            created_at: e.created_at,
        }
    }

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
    /// The statement of the user `user_id` (named `user`) for `[from, to)`, in memory: what
    /// [`write_statement`] writes, read back.
    pub async fn build(
        store: &Store,
        user_id: &str,
        user: &str,
        from: i64,
        to: i64,
    ) -> Result<Statement, StoreError> {
        let head = StatementHead {
            user_id: user_id.to_owned(),
            user: user.to_owned(),
            from,
            to,
        };
        let json = write_statement(store, head, StatementFormat::Json, Vec::new()).await?;
        serde_json::from_slice(&json).map_err(|e| StoreError::internal(e.to_string()))
    }
}

/// Whose statement, for which period `[from, to)`.
#[derive(Debug, Clone)]
pub struct StatementHead {
    pub user_id: String,
    /// The user's name.
    pub user: String,
    pub from: i64,
    pub to: i64,
}

/// How a statement is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementFormat {
    /// A [`Statement`] document.
    Json,
    /// One line per session, item charge and adjustment in time order (sessions first at
    /// one instant, then entries in ledger order), then one `total` line per currency.
    /// Amounts in minor units.
    Csv,
}

/// Where a statement's bytes go, a chunk at a time, from a blocking thread (see
/// [`PeriodVisitor`]); an error stops the statement.
pub trait ChunkSink: Send + 'static {
    fn send(&mut self, chunk: Vec<u8>) -> Result<(), StoreError>;
}

impl ChunkSink for Vec<u8> {
    fn send(&mut self, mut chunk: Vec<u8>) -> Result<(), StoreError> {
        self.append(&mut chunk);
        Ok(())
    }
}

/// Writes the statement of `head` as `format` into `sink` while the period is read, and gives
/// the sink back. The first chunk (the head and the sessions) is sent as soon as the sessions
/// are read, so a caller that waits for it knows the read began well.
pub async fn write_statement<S: ChunkSink>(
    store: &Store,
    head: StatementHead,
    format: StatementFormat,
    sink: S,
) -> Result<S, StoreError> {
    let user_id = head.user_id.clone();
    let (from, to) = (head.from, head.to);
    let writer = StatementWriter {
        head,
        format,
        sink,
        out: Vec::with_capacity(CHUNK_BYTES + 4096),
        charges_written: 0,
        pending_sessions: VecDeque::new(),
        adjustments: Vec::new(),
        totals: Totals::default(),
    };
    store
        .read_period(PeriodScope::User(&user_id), from, to, writer)
        .await
        .map(|writer| writer.sink)
}

/// Bytes gathered before a chunk is sent (fewer, larger chunks: each one wakes the response's
/// task).
const CHUNK_BYTES: usize = 256 * 1024;

/// The [`PeriodVisitor`] behind [`write_statement`].
struct StatementWriter<S> {
    head: StatementHead,
    format: StatementFormat,
    sink: S,
    out: Vec<u8>,
    charges_written: usize,
    /// CSV: sessions whose line waits for its place in time.
    pending_sessions: VecDeque<StatementSession>,
    /// JSON: adjustments, written after the charges.
    adjustments: Vec<Adjustment>,
    totals: Totals,
}

impl<S: ChunkSink> StatementWriter<S> {
    fn send(&mut self) -> Result<(), StoreError> {
        let chunk = std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK_BYTES + 4096));
        self.sink.send(chunk)
    }

    fn json(&mut self, value: &impl Serialize) -> Result<(), StoreError> {
        serde_json::to_writer(&mut self.out, value).map_err(|e| StoreError::internal(e.to_string()))
    }

    /// CSV: the lines of the sessions that ended at or before `at`.
    fn csv_sessions_until(&mut self, at: i64) {
        while let Some(s) = self.pending_sessions.front() {
            if s.ended_at.unwrap_or_default() > at {
                break;
            }
            if let Some(s) = self.pending_sessions.pop_front() {
                let (amount, currency) = match &s.time_charge {
                    Some(m) => (m.amount.to_string(), m.currency.as_str()),
                    None => (String::new(), ""),
                };
                push_csv_line(
                    &mut self.out,
                    &[
                        &s.ended_at.map(rfc3339::format).unwrap_or_default(),
                        "session",
                        &s.id,
                        &s.service,
                        &s.app_server,
                        &format!("{} ms", s.duration_ms.unwrap_or_default()),
                        "",
                        "",
                        &amount,
                        currency,
                    ],
                );
            }
        }
    }
}

impl<S: ChunkSink> PeriodVisitor for StatementWriter<S> {
    fn sessions(&mut self, sessions: Vec<StatementSession>) -> Result<(), StoreError> {
        match self.format {
            StatementFormat::Json => {
                let head = self.head.clone();
                self.out.extend_from_slice(b"{\"user_id\":");
                self.json(&head.user_id)?;
                self.out.extend_from_slice(b",\"user\":");
                self.json(&head.user)?;
                self.out.extend_from_slice(b",\"from\":");
                self.json(&rfc3339::format(head.from))?;
                self.out.extend_from_slice(b",\"to\":");
                self.json(&rfc3339::format(head.to))?;
                self.out.extend_from_slice(b",\"sessions\":");
                self.json(&sessions)?;
                self.out.extend_from_slice(b",\"charges\":[");
            }
            StatementFormat::Csv => {
                self.out.extend_from_slice(CSV_HEADER.as_bytes());
                self.pending_sessions = sessions.into();
            }
        }
        self.send()
    }

    fn entry(&mut self, entry: &EntryRef<'_>) -> Result<(), StoreError> {
        self.totals.add(entry.currency, entry.amount);
        match (self.format, entry.kind) {
            (StatementFormat::Json, KIND_ITEM) => {
                if let Some(charge) = ChargeView::of_entry(entry) {
                    if self.charges_written > 0 {
                        self.out.push(b',');
                    }
                    self.json(&charge)?;
                    self.charges_written += 1;
                }
            }
            (StatementFormat::Json, KIND_ADJUSTMENT) => {
                self.adjustments.push(Adjustment::from_entry(entry));
            }
            (StatementFormat::Csv, KIND_ITEM) => {
                if let Some(c) = ChargeView::of_entry(entry) {
                    self.csv_sessions_until(c.created_at);
                    push_csv_line(
                        &mut self.out,
                        &[
                            &rfc3339::format(c.created_at),
                            "item",
                            c.session_id,
                            "",
                            c.app_server_id,
                            c.description,
                            &c.quantity.to_string(),
                            &c.unit_amount.to_string(),
                            &c.amount.to_string(),
                            c.currency,
                        ],
                    );
                }
            }
            (StatementFormat::Csv, KIND_ADJUSTMENT) => {
                let a = Adjustment::from_entry(entry);
                self.csv_sessions_until(a.created_at);
                push_csv_line(
                    &mut self.out,
                    &[
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
                    ],
                );
            }
            // A time charge is shown on its session.
            _ => {}
        }
        if self.out.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// The rest of the statement after the last entry.
    fn end(&mut self) -> Result<(), StoreError> {
        let totals = std::mem::take(&mut self.totals)
            .into_money()
            .map_err(StoreError::internal)?;
        match self.format {
            StatementFormat::Json => {
                self.out.extend_from_slice(b"],\"adjustments\":");
                let adjustments = std::mem::take(&mut self.adjustments);
                self.json(&adjustments)?;
                self.out.extend_from_slice(b",\"totals\":");
                self.json(&totals)?;
                self.out.push(b'}');
            }
            StatementFormat::Csv => {
                self.csv_sessions_until(i64::MAX);
                for t in &totals {
                    let amount = t.amount.to_string();
                    push_csv_line(
                        &mut self.out,
                        &["", "total", "", "", "", "", "", "", &amount, &t.currency],
                    );
                }
            }
        }
        self.send()
    }
}

const CSV_HEADER: &str =
    "date,kind,session_id,service,app_server,description,quantity,unit_amount,amount,currency\n";

/// One CSV line (RFC 4180): fields with a comma, quote or line break are quoted. A field
/// that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`,
/// since descriptions come from shops (OWASP CSV injection).
pub fn csv_line(fields: &[&str]) -> String {
    let mut line = Vec::new();
    push_csv_line(&mut line, fields);
    String::from_utf8_lossy(&line).into_owned()
}

/// [`csv_line`], appended to `out`.
fn push_csv_line(out: &mut Vec<u8>, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let formula = match field.chars().next() {
            Some('=' | '+' | '@' | '\t' | '\r') => true,
            Some('-') => field.parse::<i64>().is_err(),
            _ => false,
        };
        let quoted = field.contains([',', '"', '\n', '\r']);
        if quoted {
            out.push(b'"');
        }
        if formula {
            out.push(b'\'');
        }
        for part in field.split('"').enumerate() {
            if part.0 > 0 {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(part.1.as_bytes());
        }
        if quoted {
            out.push(b'"');
        }
    }
    out.push(b'\n');
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
