//! `/v1` webhooks: an application server's signing secret and the delivery log.
//!
//! ```text
//!  POST /v1/app-servers/{id}/webhook-secret   operator, or that server; shown once (no-store)
//!  GET  /v1/webhook-deliveries                operator (all), application server (its own)
//! ```
//! Events, their signature and retries: [`crate::notify`] and `docs/webhooks.md`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::ApiQuery;
use super::pagination;
use super::{ApiState, Principal};
use crate::clock::rfc3339;
use crate::store::{DeliveryQuery, DeliveryRecord};

/// A new webhook signing secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "secret": "whsec_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE",
    "previous_valid_until": "2026-12-02T21:54:13.123Z"
}))]
pub struct WebhookSecret {
    pub app_server_id: String,
    /// HMAC-SHA256 key of the `Tollgate-Signature` header (`whsec_…`). Store it now.
    pub secret: String,
    /// Until then events also carry a signature by the previous secret(s).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub previous_valid_until: i64,
}

/// One delivery attempt of a webhook event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "whd_1f2e3d4c5b6a49788796a5b4c3d2e1f0", "event_id": "evt_5e0f6c1d9a7b4e3f8a2c1d0e9f8a7b6c",
    "event_type": "charge.created", "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "attempt": 1, "url": "https://shop.example.com/hooks/tollgate",
    "attempted_at": "2026-12-01T21:54:13.456Z", "status_code": 200, "error": null,
    "response_body": "ok", "duration_ms": 35, "event_state": "delivered"
}))]
pub struct WebhookDelivery {
    pub id: String,
    /// The event's id (`evt_…`), also its `id` in the body.
    pub event_id: String,
    /// `session.confirmed`, `session.terminated` or `charge.created`.
    pub event_type: String,
    pub app_server_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub url: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: i64,
    /// The receiver's HTTP status; absent when it did not answer.
    pub status_code: Option<u16>,
    /// Why no answer came (timeout, refused connection).
    pub error: Option<String>,
    /// The start of the receiver's answer (at most 1 KiB).
    pub response_body: Option<String>,
    pub duration_ms: i64,
    /// The event now: `pending` (more attempts to come), `delivered`, or `failed` (given up
    /// after `[webhooks] max_age_secs`).
    pub event_state: String,
}

impl From<DeliveryRecord> for WebhookDelivery {
    fn from(d: DeliveryRecord) -> Self {
        WebhookDelivery {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            app_server_id: d.app_server_id,
            attempt: d.attempt,
            url: d.url,
            attempted_at: d.attempted_at,
            status_code: d.status_code,
            error: d.error,
            response_body: d.response_body,
            duration_ms: d.duration_ms,
            event_state: d.event_state,
        }
    }
}

/// One page of delivery attempts, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [], "next_cursor": null}))]
pub struct WebhookDeliveryPage {
    pub items: Vec<WebhookDelivery>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/webhook-deliveries`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveriesParams {
    /// Only attempts for this application server (id). A server's key only sees its own.
    pub app_server_id: Option<String>,
    /// Only attempts of this event (`evt_…`).
    pub event_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only attempts answered with a 2xx (`true`) or not (`false`).
    pub succeeded: Option<bool>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Attempts per page, 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A response that carries a secret: never cached anywhere.
pub fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Issue a webhook secret.
#[utoipa::path(
    post,
    path = "/app-servers/{id}/webhook-secret",
    operation_id = "issueWebhookSecret",
    tag = "webhooks",
    summary = "Issue a new webhook signing secret",
    description = "Shown once (`Cache-Control: no-store`). The previous secret keeps signing \
                   (a second `v1=` in `Tollgate-Signature`) until `previous_valid_until` \
                   (`[webhooks] secret_grace_secs`, default 24 h), so receivers can switch \
                   without losing events. The operator, or the application server itself.",
    params(("id" = String, Path, description = "The application server's id")),
    responses(
        (status = 201, description = "The new secret, shown this once", body = WebhookSecret),
        (status = 404, description = "No such application server visible to this key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This Idempotency-Key is still being processed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn issue_webhook_secret(
    principal: Principal,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Principal::AppServer(own) = &principal {
        if own.id != id {
            return Err(ApiError::NotFound(format!("no application server {id}")));
        }
    }
    let now = state.now_ms();
    let grace = state.inner.secret_grace_ms;
    let secret = state.store().issue_webhook_secret(&id, now, grace).await?;
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(WebhookSecret {
                app_server_id: id,
                secret: secret.expose().to_owned(),
                previous_valid_until: now + grace,
            }),
        )
            .into_response(),
    ))
}

/// List webhook delivery attempts.
#[utoipa::path(
    get,
    path = "/webhook-deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    summary = "List webhook delivery attempts and the answers, newest first",
    params(ListDeliveriesParams),
    responses(
        (status = 200, description = "One page of attempts", body = WebhookDeliveryPage),
        (status = 400, description = "A bad parameter; `errors` names it", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_webhook_deliveries(
    principal: Principal,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<ListDeliveriesParams>,
) -> Result<Json<WebhookDeliveryPage>, ApiError> {
    let limit = pagination::limit(params.limit)?;
    let Some(app_server_id) = principal.app_server_filter(params.app_server_id) else {
        return Ok(Json(WebhookDeliveryPage {
            items: Vec::new(),
            next_cursor: None,
        }));
    };
    let query = DeliveryQuery {
        app_server_id,
        event_id: params.event_id,
        event_type: params.event_type,
        succeeded: params.succeeded,
        after: pagination::decode_time_id(params.cursor.as_deref(), "deliveries")?,
        limit: u64::from(limit) + 1,
    };
    let rows = state.store().list_webhook_deliveries(&query).await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |d| {
        pagination::encode("deliveries", &[&d.attempted_at.to_string(), &d.id])
    });
    Ok(Json(WebhookDeliveryPage {
        items: rows.into_iter().map(WebhookDelivery::from).collect(),
        next_cursor,
    }))
}
