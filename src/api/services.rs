//! `/v1/services`: services (`name@domain`) and their routing, the ordered application servers
//! that deliver them. Operator key only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::app_servers::AppServer;
use super::error::{ApiError, FieldError, Problem};
use super::extract::ApiJson;
use super::{location, ApiState, Operator};
use crate::store::{ForkMode, ServiceRecord, StoreError};

/// A service and the application servers that deliver it, in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// Milliseconds since the Unix epoch.
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

/// Every service, by address.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    pub items: Vec<Service>,
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
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
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
    summary = "List services and their routing",
    responses(
        (status = 200, description = "Every service, by address", body = ServiceList),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_services(
    _: Operator,
    State(state): State<ApiState>,
) -> Result<Json<ServiceList>, ApiError> {
    let items = state
        .store()
        .list_services()
        .await?
        .into_iter()
        .map(Service::from)
        .collect();
    Ok(Json(ServiceList { items }))
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
