//! `/v1/app-servers`: application servers and their API keys. Operator key only.
//!
//! Creating a server (or reissuing its key) is the one time its API key is shown: the store
//! keeps a SHA-256 digest (see [`crate::store`]), and no other response carries the key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::ApiJson;
use super::{location, ApiState, Operator};
use crate::store::{AppServerRecord, StoreError};

/// An application server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppServer {
    pub id: String,
    pub name: String,
    /// The SIP URI the relay forwards INVITEs to.
    pub uri: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

impl From<AppServerRecord> for AppServer {
    fn from(a: AppServerRecord) -> Self {
        AppServer {
            id: a.id,
            name: a.name,
            uri: a.uri,
            created_at: a.created_at,
        }
    }
}

/// An application server to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "shop1", "uri": "sip:shop1.example.com:5060"}))]
pub struct NewAppServer {
    /// A unique name without spaces.
    pub name: String,
    /// A `sip:` or `sips:` URI.
    pub uri: String,
}

/// A newly created application server, with its API key: shown this once, never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAppServer {
    pub id: String,
    pub name: String,
    pub uri: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The server's API key (`tgk_…`). Store it now: only its hash is kept.
    pub api_key: String,
}

/// A new API key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedApiKey {
    /// The application server's id.
    pub app_server_id: String,
    /// The new key (`tgk_…`); the previous ones no longer work.
    pub api_key: String,
}

/// Every application server, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppServerList {
    pub items: Vec<AppServer>,
}

fn field_of(message: &str) -> &'static str {
    if message.starts_with("application server name") {
        "name"
    } else {
        "uri"
    }
}

/// Create an application server.
#[utoipa::path(
    post,
    path = "/app-servers",
    operation_id = "createAppServer",
    tag = "app-servers",
    summary = "Create an application server and its API key",
    description = "The response is the only place the new API key appears: it is stored as a \
                   SHA-256 digest.",
    request_body(content = NewAppServer, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `api_key` is shown this once", body = CreatedAppServer,
            headers(("Location" = String, description = "The new application server's URL"))),
        (status = 400, description = "Invalid input; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An application server of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_app_server(
    _: Operator,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewAppServer>,
) -> Result<impl IntoResponse, ApiError> {
    let (server, key) = state
        .store()
        .add_app_server_with_key(&body.name, &body.uri)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::field(field_of(&m), m),
            other => other.into(),
        })?;
    let url = format!("/v1/app-servers/{}", server.id);
    let created = CreatedAppServer {
        id: server.id,
        name: server.name,
        uri: server.uri,
        created_at: server.created_at,
        api_key: key.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, location(url), Json(created)))
}

/// List application servers.
#[utoipa::path(
    get,
    path = "/app-servers",
    operation_id = "listAppServers",
    tag = "app-servers",
    summary = "List application servers",
    description = "API keys are not listed: they were shown once, at creation.",
    responses(
        (status = 200, description = "Every application server, by name", body = AppServerList),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_app_servers(
    _: Operator,
    State(state): State<ApiState>,
) -> Result<Json<AppServerList>, ApiError> {
    let items = state
        .store()
        .list_app_servers()
        .await?
        .into_iter()
        .map(AppServer::from)
        .collect();
    Ok(Json(AppServerList { items }))
}

/// One application server.
#[utoipa::path(
    get,
    path = "/app-servers/{id}",
    operation_id = "getAppServer",
    tag = "app-servers",
    summary = "Get one application server",
    params(("id" = String, Path, description = "The application server's id")),
    responses(
        (status = 200, description = "The application server", body = AppServer),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No application server with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_app_server(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AppServer>, ApiError> {
    Ok(Json(state.store().get_app_server(&id).await?.into()))
}

/// Replace an application server's API key.
#[utoipa::path(
    post,
    path = "/app-servers/{id}/api-key",
    operation_id = "reissueAppServerApiKey",
    tag = "app-servers",
    summary = "Replace an application server's API key",
    description = "Makes a new key and revokes the previous ones at once (a lost or leaked \
                   key). The response is the only place the new key appears.",
    params(("id" = String, Path, description = "The application server's id")),
    responses(
        (status = 201, description = "The new key, shown this once", body = IssuedApiKey),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No application server with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn reissue_api_key(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let key = state.store().reissue_api_key(&id).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedApiKey {
            app_server_id: id,
            api_key: key.expose().to_owned(),
        }),
    ))
}
