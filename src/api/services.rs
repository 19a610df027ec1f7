//! `/v1/services`: services (`name@domain`), their routing (the ordered application servers
//! that deliver them) and their time tariff. Operator key only.
//!
//! A tariff is versioned: `PUT /v1/services/{id}/tariff` adds a version that applies to
//! sessions confirmed from then on; a session keeps the version in force at its confirmation.
//! A deleted service stays in the history but no longer routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::app_servers::AppServer;
use super::error::{ApiError, FieldError, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::pagination::{self, PageParams};
use super::{location, ApiState, Operator};
use crate::billing::Tariff;
use crate::clock::rfc3339;
use crate::store::{ForkMode, ServiceRecord, StoreError, TariffRecord};

/// A service and the application servers that deliver it, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "name": "wine", "domain": "portal.com",
    "address": "wine@portal.com",
    "app_servers": [{"id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "name": "shop1",
        "uri": "sip:shop1.example.com:5060", "commission_bps": 1500, "webhook_url": null,
        "created_at": "2026-12-01T09:00:00.000Z"}],
    "fork_mode": "first_answer",
    "created_at": "2026-12-01T09:05:00.000Z"
}))]
pub struct Service {
    pub id: String,
    /// The user part of the service's address (lowercase).
    pub name: String,
    /// The domain part (lowercase).
    pub domain: String,
    /// `name@domain`: what a client puts in the Request-URI.
    pub address: String,
    /// The application servers that deliver it, in routing order.
    pub app_servers: Vec<AppServer>,
    /// How an INVITE forks to several application servers.
    pub fork_mode: ForkMode,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl From<ServiceRecord> for Service {
    fn from(s: ServiceRecord) -> Self {
        Service {
            address: s.address(),
            id: s.id,
            name: s.name,
            domain: s.domain,
            app_servers: s.app_servers.into_iter().map(AppServer::from).collect(),
            fork_mode: s.fork_mode,
            created_at: s.created_at,
        }
    }
}

/// A service to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "books", "app_servers": ["bookshop1", "bookshop2"], "fork_mode": "all_answers"}))]
pub struct NewService {
    /// The user part of the address, e.g. `service1` (or a whole `service1@portal.com` when
    /// `domain` is absent).
    pub name: String,
    /// The domain part; the relay's SIP domain when absent.
    #[serde(default)]
    pub domain: Option<String>,
    /// Names of existing application servers, in routing order; at least one, no repeats.
    pub app_servers: Vec<String>,
    /// How an INVITE forks to several application servers; `first_answer` when absent.
    #[serde(default)]
    pub fork_mode: ForkMode,
}

/// One page of services, by domain then name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "name": "wine", "domain": "portal.com", "address": "wine@portal.com", "app_servers": [], "fork_mode": "first_answer", "created_at": "2026-12-01T09:05:00.000Z"}], "next_cursor": null}))]
pub struct ServiceList {
    pub items: Vec<Service>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A change to a service: its routing, its fork mode, or both; an absent field stays as it is.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"app_servers": ["9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"], "fork_mode": "serial"}))]
pub struct ServicePatch {
    /// Ids of existing application servers, in routing order; at least one, no repeats.
    #[serde(default)]
    #[schema(value_type = Vec<String>, required = false)]
    pub app_servers: Option<Vec<String>>,
    /// How an INVITE forks to several application servers from now on (calls already ringing
    /// keep the mode they started with).
    #[serde(default)]
    #[schema(value_type = ForkMode, required = false)]
    pub fork_mode: Option<ForkMode>,
}

/// A service's time tariff: what a session costs by its duration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "currency": "EUR", "setup_amount": 50, "per_minute_amount": 120, "increment_secs": 60, "free_secs": 0
}))]
pub struct TariffBody {
    /// ISO 4217 code; item charges of the service's sessions must use it too.
    pub currency: String,
    /// Charged once per confirmed session, minor units; 0 when absent.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub setup_amount: i64,
    /// Price of a minute, minor units.
    #[schema(minimum = 0)]
    pub per_minute_amount: i64,
    /// Billing increment in seconds (1, 6, 60 …); 60 when absent.
    #[serde(default = "default_increment")]
    #[schema(minimum = 1, maximum = 3600)]
    pub increment_secs: i32,
    /// Seconds free of charge at the start; 0 when absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400)]
    pub free_secs: i32,
}

fn default_increment() -> i32 {
    60
}

/// A tariff version of a service.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", "service_id": "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
    "currency": "EUR", "setup_amount": 50, "per_minute_amount": 120, "increment_secs": 60,
    "free_secs": 0, "effective_from": "2026-12-01T10:00:00.000Z"
}))]
pub struct ServiceTariff {
    /// The version's id, recorded on the sessions it prices.
    pub id: String,
    pub service_id: String,
    pub currency: String,
    pub setup_amount: i64,
    pub per_minute_amount: i64,
    pub increment_secs: i32,
    pub free_secs: i32,
    /// Sessions confirmed from this instant on use this version.
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub effective_from: i64,
}

impl From<TariffRecord> for ServiceTariff {
    fn from(t: TariffRecord) -> Self {
        ServiceTariff {
            id: t.id,
            service_id: t.service_id,
            currency: t.tariff.currency,
            setup_amount: t.tariff.setup_amount,
            per_minute_amount: t.tariff.per_minute_amount,
            increment_secs: t.tariff.increment_secs,
            free_secs: t.tariff.free_secs,
            effective_from: t.effective_from,
        }
    }
}

/// Checks what can be checked without the database, naming each offending field.
fn validate(body: &NewService) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if body.app_servers.is_empty() {
        errors.push(FieldError::new(
            "app_servers",
            "a service needs at least one application server",
        ));
    }
    for (i, name) in body.app_servers.iter().enumerate() {
        if body.app_servers[..i].contains(name) {
            errors.push(FieldError::new(
                format!("app_servers[{i}]"),
                format!("application server {name} is listed twice"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            detail: errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            errors,
        })
    }
}

/// One half of `name@domain` as the store accepts it.
fn well_formed(part: &str) -> bool {
    !part.is_empty()
        && !part
            .chars()
            .any(|c| c == '@' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Create a service.
#[utoipa::path(
    post,
    path = "/services",
    operation_id = "createService",
    tag = "services",
    summary = "Create a service and its routing",
    description = "The relay routes `INVITE sip:name@domain` to the listed application servers \
                   in order. Its caches pick the new service up within seconds.",
    request_body(content = NewService, content_type = "application/json"),
    responses(
        (status = 201, description = "The service was created", body = Service,
            headers(("Location" = String, description = "The new service's URL"))),
        (status = 400, description = "Invalid input, or an application server that does not exist; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The service exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_service(
    _: Operator,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewService>,
) -> Result<impl IntoResponse, ApiError> {
    validate(&body)?;
    let address = match &body.domain {
        Some(domain) => {
            if body.name.contains('@') {
                return Err(ApiError::field(
                    "name",
                    "give the name without @domain when `domain` is set",
                ));
            }
            format!("{}@{domain}", body.name)
        }
        None if body.name.contains('@') => body.name.clone(),
        None => format!("{}@{}", body.name, state.inner.default_domain),
    };
    let service = state
        .store()
        .add_service(&address, &body.app_servers, body.fork_mode)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) if m.starts_with("service") => {
                let name_part = address.split('@').next().unwrap_or_default();
                let field = if well_formed(name_part) {
                    "domain"
                } else {
                    "name"
                };
                ApiError::field(field, m)
            }
            StoreError::Invalid(m) => ApiError::field("app_servers", m),
            StoreError::NotFound(m) => {
                let index = body
                    .app_servers
                    .iter()
                    .position(|s| m.ends_with(&format!("named {s}")));
                let field = match index {
                    Some(i) => format!("app_servers[{i}]"),
                    None => "app_servers".to_owned(),
                };
                ApiError::field(field, m)
            }
            other => other.into(),
        })?;
    let url = format!("/v1/services/{}", service.id);
    Ok((
        StatusCode::CREATED,
        location(url),
        Json(Service::from(service)),
    ))
}

/// List services.
#[utoipa::path(
    get,
    path = "/services",
    operation_id = "listServices",
    tag = "services",
    summary = "List services and their routing, by domain then name",
    params(PageParams),
    responses(
        (status = 200, description = "One page of services", body = ServiceList),
        (status = 400, description = "A bad `limit` or `cursor`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_services(
    _: Operator,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<ServiceList>, ApiError> {
    let limit = pagination::limit(params.limit)?;
    let after = pagination::decode(params.cursor.as_deref(), "services", 2)?;
    let rows = state
        .store()
        .page_services(
            after.as_ref().map(|a| (a[0].as_str(), a[1].as_str())),
            u64::from(limit) + 1,
        )
        .await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |s| {
        pagination::encode("services", &[&s.domain, &s.name])
    });
    Ok(Json(ServiceList {
        items: rows.into_iter().map(Service::from).collect(),
        next_cursor,
    }))
}

/// One service.
#[utoipa::path(
    get,
    path = "/services/{id}",
    operation_id = "getService",
    tag = "services",
    summary = "Get one service and its routing",
    params(("id" = String, Path, description = "The service's id")),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No service with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_service(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(state.store().get_service(&id).await?.into()))
}

/// Change a service's routing or fork mode.
#[utoipa::path(
    patch,
    path = "/services/{id}",
    operation_id = "updateService",
    tag = "services",
    summary = "Change the application servers that deliver a service, or how it forks",
    description = "Give `app_servers`, `fork_mode` or both; what is absent stays as it is. The \
                   relay's caches pick the change up within seconds; calls already ringing \
                   finish with the routing they started with.",
    params(("id" = String, Path, description = "The service's id")),
    request_body(content = ServicePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The service as it is now", body = Service),
        (status = 400, description = "Nothing to change, no, repeated or unknown application servers, or an unknown fork mode; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No service with that id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn update_service(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ServicePatch>,
) -> Result<Json<Service>, ApiError> {
    if body.app_servers.is_none() && body.fork_mode.is_none() {
        return Err(ApiError::field(
            "app_servers",
            "give app_servers, fork_mode or both",
        ));
    }
    let servers = body.app_servers.as_deref().unwrap_or_default();
    for (i, server) in servers.iter().enumerate() {
        if servers[..i].contains(server) {
            return Err(ApiError::field(
                format!("app_servers[{i}]"),
                format!("application server {server} is listed twice"),
            ));
        }
    }
    let service = state
        .store()
        .update_service(&id, body.app_servers.as_deref(), body.fork_mode)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => {
                let field = servers
                    .iter()
                    .position(|s| m.ends_with(s.as_str()))
                    .map_or("app_servers".to_owned(), |i| format!("app_servers[{i}]"));
                ApiError::field(field, m)
            }
            other => other.into(),
        })?;
    Ok(Json(service.into()))
}

/// Delete a service.
#[utoipa::path(
    delete,
    path = "/services/{id}",
    operation_id = "deleteService",
    tag = "services",
    summary = "Delete a service",
    description = "Refused (409) while it has live sessions. It stops routing at once (relay \
                   caches within seconds); sessions and bills keep it.",
    params(("id" = String, Path, description = "The service's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No service with that id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The service has live sessions", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn delete_service(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store().delete_service(&id, state.now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a service's tariff.
#[utoipa::path(
    put,
    path = "/services/{id}/tariff",
    operation_id = "setServiceTariff",
    tag = "services",
    summary = "Set a service's time tariff (a new version)",
    description = "Sessions confirmed from now on are billed with this version: \
                   `setup_amount + ceil(per_minute_amount × billable_secs / 60)` where \
                   `billable_secs = ceil(max(0, duration_ms − free_secs·1000) / \
                   (increment_secs·1000)) × increment_secs`. Sessions confirmed earlier keep \
                   theirs.",
    params(("id" = String, Path, description = "The service's id")),
    request_body(content = TariffBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The new version, in force now", body = ServiceTariff),
        (status = 400, description = "Invalid tariff; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No service with that id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn set_tariff(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TariffBody>,
) -> Result<Json<ServiceTariff>, ApiError> {
    let tariff = Tariff {
        currency: body.currency,
        setup_amount: body.setup_amount,
        per_minute_amount: body.per_minute_amount,
        increment_secs: body.increment_secs,
        free_secs: body.free_secs,
    };
    tariff
        .validate()
        .map_err(|(field, message)| ApiError::field(field, message))?;
    let record = state
        .store()
        .set_tariff(&id, &tariff, state.now_ms())
        .await?;
    Ok(Json(record.into()))
}

/// A service's tariff.
#[utoipa::path(
    get,
    path = "/services/{id}/tariff",
    operation_id = "getServiceTariff",
    tag = "services",
    summary = "Get the tariff version in force now",
    params(("id" = String, Path, description = "The service's id")),
    responses(
        (status = 200, description = "The version in force", body = ServiceTariff),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No service with that id, or it has no tariff (its sessions are not billed for time)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_tariff(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ServiceTariff>, ApiError> {
    state.store().get_service(&id).await?;
    state
        .store()
        .tariff_at(&id, state.now_ms())
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::NotFound(format!("service {id} has no tariff")))
}
