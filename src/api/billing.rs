//! `/v1` billing: item charges, adjustments, statements and settlements.
//!
//! ```text
//!  POST /v1/sessions/{id}/charges      the session's application server (or the operator); Idempotency-Key required
//!  GET  /v1/sessions/{id}/charges      the same; another shop's session is 404
//!  GET  /v1/charges[/{id}]             operator (all), application server (its own)
//!  POST /v1/adjustments                operator; Idempotency-Key required
//!  GET  /v1/users/{id}/statement       operator; JSON, or CSV with Accept: text/csv
//!  GET  /v1/app-servers/{id}/settlement operator, or that application server; JSON or CSV
//! ```
//! Charges go through the group-commit [`ChargeWriter`](crate::billing::ChargeWriter): the
//! ledger entries, their `charge.created` webhooks and the idempotency record commit together.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::idempotency::{key_reused, replay, IdempotencyContext};
use super::pagination::{self, PageParams};
use super::{location, ApiState, Operator, Principal};
use crate::billing::money::{check_currency, MAX_QUANTITY, MAX_UNIT_AMOUNT};
use crate::billing::settlement::Settlement;
use crate::billing::statement::{
    write_statement, Adjustment, ChunkSink, Statement, StatementFormat, StatementHead,
};
use crate::billing::{Charge, ChargeSource, NewCharge};
use crate::clock::rfc3339;
use crate::store::{
    AdjustmentOutcome, ChargeOutcome, ChargeRequest, LedgerQuery, NewAdjustment, Recorded,
    StoreError, StoredResponse, KIND_ITEM,
};

/// One page of charges, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "ch_6f1c2a9e0b7d4f1e9a3c5b7d9e1f3a5c", "session_id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f", "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "description": "Glass of Barolo", "unit_amount": 1200, "quantity": 2, "amount": 2400, "currency": "EUR", "source": "rest", "created_at": "2026-12-01T21:54:13.123Z"}], "next_cursor": null}))]
pub struct ChargePage {
    pub items: Vec<Charge>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/charges`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListChargesParams {
    /// Only charges of this user (id).
    pub user_id: Option<String>,
    /// Only charges of this application server (id). A server's key only sees its own.
    pub app_server_id: Option<String>,
    /// Only charges booked at or after this instant (RFC 3339).
    #[serde(default, with = "rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<i64>,
    /// Only charges booked before this instant (RFC 3339).
    #[serde(default, with = "rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Charges per page, 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The period of a statement or settlement.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeriodParams {
    /// Start of the period, inclusive (RFC 3339); the beginning of time when absent.
    #[serde(default, with = "rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub from: Option<i64>,
    /// End of the period, exclusive (RFC 3339); now when absent.
    #[serde(default, with = "rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime, example = "2027-01-01T00:00:00Z")]
    pub to: Option<i64>,
}

impl PeriodParams {
    fn resolve(&self, now: i64) -> Result<(i64, i64), ApiError> {
        let from = self.from.unwrap_or(0);
        let to = self.to.unwrap_or(now + 1);
        if from > to {
            return Err(ApiError::field("from", "from must not be after to"));
        }
        Ok((from, to))
    }
}

/// An adjustment to book: a correction, positive (a debit) or negative (a credit).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "amount": -500, "currency": "EUR",
    "reason": "Goodwill credit for a dropped call"
}))]
pub struct NewAdjustmentBody {
    /// The user whose bill changes.
    pub user_id: String,
    /// The application server it concerns (its settlement changes too).
    #[serde(default)]
    pub app_server_id: Option<String>,
    /// The session it concerns.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Signed minor units, not zero; at most 10^16 either way.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Why, 1 to 200 characters; shown on the statement.
    pub reason: String,
}

fn csv_wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

fn csv(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The session `id` as the caller may see it; another shop's is 404.
async fn visible_session(
    state: &ApiState,
    principal: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    let not_found = || ApiError::NotFound(format!("no session {id}"));
    let session = match state.store().get_session(id).await {
        Ok(s) => s,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if let Principal::AppServer(own) = principal {
        if session.app_server_id.as_deref() != Some(own.id.as_str()) {
            return Err(not_found());
        }
    }
    Ok(())
}

/// Add an item charge to a session.
#[utoipa::path(
    post,
    path = "/sessions/{id}/charges",
    operation_id = "createCharge",
    tag = "billing",
    summary = "Charge an item to a session",
    description = "By the session's application server (or the operator), while the session \
                   is confirmed and until `[billing] charge_grace_secs` (default 600) after it \
                   ended. `amount = unit_amount × quantity`. The currency must be the service \
                   tariff's when it has one. `Idempotency-Key` is required: a retry with the same \
                   key and body replays the first response (status included, with \
                   `Idempotent-Replayed: true`) and charges nothing twice.",
    params(
        ("id" = String, Path, description = "The session's id"),
        ("Idempotency-Key" = String, Header, description = "Unique per charge (e.g. a UUID); reuse it when retrying")
    ),
    request_body(content = NewCharge, content_type = "application/json"),
    responses(
        (status = 201, description = "The charge is in the ledger", body = Charge,
            headers(("Location" = String, description = "The charge's URL"))),
        (status = 400, description = "Invalid charge or missing Idempotency-Key; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to this key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session takes no charges now (not confirmed yet, never established, or its grace period is over), or this Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many charges are waiting; retry with the same key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_charge(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyContext(key): IdempotencyContext,
    ApiJson(body): ApiJson<NewCharge>,
) -> Result<Response, ApiError> {
    let request = ChargeRequest {
        session_id: id,
        source: ChargeSource::Rest,
        charges: vec![body],
        idempotency: key,
        app_server_id: match &principal {
            Principal::Operator => None,
            Principal::AppServer(own) => Some(own.id.clone()),
        },
        single: true,
    };
    match state.inner.charges.submit(request).await? {
        ChargeOutcome::Created(mut charges) => {
            let charge = charges.remove(0);
            let url = format!("/v1/charges/{}", charge.id);
            Ok((StatusCode::CREATED, location(url), Json(charge)).into_response())
        }
        ChargeOutcome::Replayed(stored) => Ok(replay(stored)),
    }
}

/// List a session's item charges.
#[utoipa::path(
    get,
    path = "/sessions/{id}/charges",
    operation_id = "listSessionCharges",
    tag = "billing",
    summary = "List a session's item charges, newest first",
    params(("id" = String, Path, description = "The session's id"), PageParams),
    responses(
        (status = 200, description = "One page of the session's charges", body = ChargePage),
        (status = 400, description = "A bad `limit` or `cursor`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session visible to this key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_session_charges(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<ChargePage>, ApiError> {
    visible_session(&state, &principal, &id).await?;
    let limit = pagination::limit(params.limit)?;
    let query = LedgerQuery {
        kind: Some(KIND_ITEM),
        session_id: Some(id),
        after: pagination::decode_time_id(params.cursor.as_deref(), "charges")?,
        limit: u64::from(limit) + 1,
        ..Default::default()
    };
    charge_page(&state, &query, limit).await
}

async fn charge_page(
    state: &ApiState,
    query: &LedgerQuery,
    limit: u32,
) -> Result<Json<ChargePage>, ApiError> {
    let rows = state.store().page_ledger(query).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |r| {
        pagination::encode("charges", &[&r.created_at.to_string(), &r.id])
    });
    Ok(Json(ChargePage {
        items: rows.iter().filter_map(|r| r.as_charge()).collect(),
        next_cursor,
    }))
}

/// List item charges.
#[utoipa::path(
    get,
    path = "/charges",
    operation_id = "listCharges",
    tag = "billing",
    summary = "List item charges, newest first",
    description = "Filters combine (AND). With an application server's key, only that \
                   server's charges are listed.",
    params(ListChargesParams),
    responses(
        (status = 200, description = "One page of charges", body = ChargePage),
        (status = 400, description = "A bad parameter; `errors` names it", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_charges(
    principal: Principal,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<ListChargesParams>,
) -> Result<Json<ChargePage>, ApiError> {
    let limit = pagination::limit(params.limit)?;
    let Some(app_server_id) = principal.app_server_filter(params.app_server_id) else {
        return Ok(Json(ChargePage {
            items: Vec::new(),
            next_cursor: None,
        }));
    };
    let query = LedgerQuery {
        kind: Some(KIND_ITEM),
        user_id: params.user_id,
        app_server_id,
        from: params.from,
        to: params.to,
        after: pagination::decode_time_id(params.cursor.as_deref(), "charges")?,
        limit: u64::from(limit) + 1,
        ..Default::default()
    };
    charge_page(&state, &query, limit).await
}

/// One item charge.
#[utoipa::path(
    get,
    path = "/charges/{id}",
    operation_id = "getCharge",
    tag = "billing",
    summary = "Get one item charge",
    params(("id" = String, Path, description = "The charge's id (`ch_…`)")),
    responses(
        (status = 200, description = "The charge", body = Charge),
        (status = 404, description = "No such charge visible to this key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_charge(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Charge>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no charge {id}"));
    let entry = match state.store().get_ledger_entry(&id).await {
        Ok(e) => e,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let charge = entry.as_charge().ok_or_else(not_found)?;
    if let Principal::AppServer(own) = &principal {
        if charge.app_server_id != own.id {
            return Err(not_found());
        }
    }
    Ok(Json(charge))
}

fn check_adjustment(body: &NewAdjustmentBody) -> Result<(), ApiError> {
    let limit = MAX_UNIT_AMOUNT * MAX_QUANTITY;
    if body.amount == 0 || body.amount.abs() > limit {
        return Err(ApiError::field(
            "amount",
            format!("amount must be non-zero and at most {limit} either way (minor units)"),
        ));
    }
    check_currency(&body.currency).map_err(|m| ApiError::field("currency", m))?;
    let chars = body.reason.chars().count();
    if body.reason.trim().is_empty() || chars > 200 || body.reason.chars().any(char::is_control) {
        return Err(ApiError::field(
            "reason",
            "reason must be 1 to 200 characters without control characters",
        ));
    }
    Ok(())
}

/// Book an adjustment.
#[utoipa::path(
    post,
    path = "/adjustments",
    operation_id = "createAdjustment",
    tag = "billing",
    summary = "Book a correction to a user's bill",
    description = "The ledger is append-only: a correction is a new entry, positive (a debit) \
                   or negative (a credit). Operator key only. `Idempotency-Key` is required.",
    params(("Idempotency-Key" = String, Header, description = "Unique per adjustment; reuse it when retrying")),
    request_body(content = NewAdjustmentBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The adjustment is in the ledger", body = Adjustment),
        (status = 400, description = "Invalid input (or a user, application server or session that does not exist); `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_adjustment(
    _: Operator,
    State(state): State<ApiState>,
    IdempotencyContext(key): IdempotencyContext,
    ApiJson(body): ApiJson<NewAdjustmentBody>,
) -> Result<Response, ApiError> {
    check_adjustment(&body)?;
    let adjustment = NewAdjustment {
        user_id: body.user_id,
        app_server_id: body.app_server_id,
        session_id: body.session_id,
        amount: body.amount,
        currency: body.currency,
        reason: body.reason,
    };
    let outcome = state
        .store()
        .add_adjustment(state.now_ms(), &adjustment, &key, |record| StoredResponse {
            status: 201,
            location: None,
            body: serde_json::to_string(&Adjustment::from_record(record)).unwrap_or_default(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => {
                let field = m.split(':').next().unwrap_or("body").to_owned();
                ApiError::field(field, m)
            }
            other => other.into(),
        })?;
    match outcome {
        AdjustmentOutcome::Created(record) => {
            Ok((StatusCode::CREATED, Json(Adjustment::from_record(&record))).into_response())
        }
        AdjustmentOutcome::Recorded(Recorded::Same(stored)) => Ok(replay(stored)),
        AdjustmentOutcome::Recorded(Recorded::Different) => Err(key_reused(&key.key)),
    }
}

/// A user's statement.
#[utoipa::path(
    get,
    path = "/users/{id}/statement",
    operation_id = "getStatement",
    tag = "billing",
    summary = "A user's statement across every shop",
    description = "Every session of the user that ended in `[from, to)` with its time charge, \
                   every item charge and adjustment booked in it, and the totals per currency. \
                   `Accept: text/csv` gives the same as CSV. Operator key only.",
    params(("id" = String, Path, description = "The user's id"), PeriodParams),
    responses(
        (status = 200, description = "The statement", content(
            (Statement = "application/json"),
            (String = "text/csv", example = "date,kind,session_id,service,app_server,description,quantity,unit_amount,amount,currency\n")
        )),
        (status = 400, description = "A bad `from` or `to`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_statement(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<PeriodParams>,
) -> Result<Response, ApiError> {
    let (from, to) = params.resolve(state.now_ms())?;
    let user = state.store().get_user(&id).await?;
    let head = StatementHead {
        user_id: user.id,
        user: user.name,
        from,
        to,
    };
    let (format, content_type) = if csv_wanted(&headers) {
        (StatementFormat::Csv, "text/csv; charset=utf-8")
    } else {
        (StatementFormat::Json, "application/json")
    };
    // The statement is streamed as it is read (100 000 entries are some 35 MB): the reader
    // sends chunks into a short queue; a client that stops reading stops it.
    let (tx, mut rx) = mpsc::channel(STATEMENT_QUEUE_CHUNKS);
    let sink = ChannelSink {
        tx: tx.clone(),
        rt: Handle::current(),
    };
    let store = state.store().clone();
    tokio::spawn(async move {
        if let Err(e) = write_statement(&store, head, format, sink).await {
            // Before the first chunk the handler answers with a problem; after it, the body
            // ends in an error, so the client never takes a cut statement for a whole one.
            tracing::debug!("statement stopped: {e}");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(ApiError::Internal(format!("writing the statement: {e}"))),
        None => return Err(ApiError::Internal("the statement writer stopped".into())),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = Body::from_stream(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest),
    );
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// Chunks a statement holds queued for its client.
const STATEMENT_QUEUE_CHUNKS: usize = 4;
/// How long a statement waits for its client to take a chunk before it gives up.
const STATEMENT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A statement's chunks, into the queue its response body is read from.
struct ChannelSink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    rt: Handle,
}

impl ChunkSink for ChannelSink {
    fn send(&mut self, chunk: Vec<u8>) -> Result<(), StoreError> {
        let tx = &self.tx;
        // The timer is made inside the runtime's context, which this blocking thread lacks.
        let sent = self.rt.block_on(async move {
            tokio::time::timeout(STATEMENT_SEND_TIMEOUT, tx.send(Ok(Bytes::from(chunk)))).await
        });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Invalid("the client went away".into())),
            Err(_) => Err(StoreError::Invalid("the client stopped reading".into())),
        }
    }
}

/// An application server's settlement.
#[utoipa::path(
    get,
    path = "/app-servers/{id}/settlement",
    operation_id = "getSettlement",
    tag = "billing",
    summary = "An application server's settlement: gross, commission, net",
    description = "Everything booked for the server in `[from, to)` (its item charges, the \
                   time charges of sessions relayed to it, adjustments against it), the \
                   operator's commission at the server's `commission_bps`, and the net, per \
                   currency, with per-session detail. `Accept: text/csv` gives CSV. The \
                   operator reads any server's; a server's key reads only its own.",
    params(("id" = String, Path, description = "The application server's id"), PeriodParams),
    responses(
        (status = 200, description = "The settlement", content(
            (Settlement = "application/json"),
            (String = "text/csv", example = "session_id,user_id,currency,time_amount,items_amount,adjustments_amount,gross\n")
        )),
        (status = 400, description = "A bad `from` or `to`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such application server visible to this key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_settlement(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<PeriodParams>,
) -> Result<Response, ApiError> {
    if let Principal::AppServer(own) = &principal {
        if own.id != id {
            return Err(ApiError::NotFound(format!("no application server {id}")));
        }
    }
    let (from, to) = params.resolve(state.now_ms())?;
    let server = state.store().get_app_server(&id).await?;
    let settlement = Settlement::build(state.store(), &server, from, to).await?;
    if csv_wanted(&headers) {
        return Ok(csv(settlement.to_csv()));
    }
    Ok(Json(settlement).into_response())
}
