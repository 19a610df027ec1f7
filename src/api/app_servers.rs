//! `/v1/app-servers`: application servers, their API keys, commission and webhook URL.
//! Operator key only.
//!
//! Creating a server (or reissuing its key) is the one time its API key is shown
//! (`Cache-Control: no-store`): the store keeps a SHA-256 digest (see [`crate::store`]), and
//! no other response carries the key. A reissued key's predecessors keep working for
//! `[api] key_grace_secs` (default 24 h) unless the operator revokes them at once. A deleted
//! server stays in the history (sessions and the ledger name it) but is gone from lists,
//! routing and authentication.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::pagination::{self, PageParams};
use super::webhooks::no_store;
use super::{location, ApiState, Operator, Principal};
use crate::clock::rfc3339;
use crate::store::{AppServerChange, AppServerRecord, StoreError};

/// An application server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "name": "shop1", "uri": "sip:shop1.example.com:5060",
    "commission_bps": 1500, "webhook_url": "https://shop1.example.com/hooks/tollgate",
    "created_at": "2026-12-01T09:00:00.000Z"
}))]
pub struct AppServer {
    pub id: String,
    pub name: String,
    /// The SIP URI the relay forwards INVITEs to.
    pub uri: String,
    /// The operator's commission on this server's settlement, in basis points (1500 = 15 %).
    pub commission_bps: i32,
    /// Where signed webhooks are POSTed; absent when none.
    pub webhook_url: Option<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl From<AppServerRecord> for AppServer {
    fn from(a: AppServerRecord) -> Self {
        AppServer {
            id: a.id,
            name: a.name,
            uri: a.uri,
            commission_bps: a.commission_bps,
            webhook_url: a.webhook_url,
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

/// Changes to an application server; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"commission_bps": 1500, "webhook_url": "https://shop1.example.com/hooks/tollgate"}))]
pub struct AppServerPatch {
    /// A new `sip:` or `sips:` URI.
    #[serde(default)]
    pub uri: Option<String>,
    /// An `http(s)://` URL for webhooks; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
    /// 0 to 10000 basis points.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10000)]
    pub commission_bps: Option<i32>,
}

/// `Some(value)` for a member that is present, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A newly created application server, with its API key: shown this once, never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "name": "shop1", "uri": "sip:shop1.example.com:5060",
    "commission_bps": 0, "webhook_url": null, "created_at": "2026-12-01T09:00:00.000Z",
    "api_key": "tgk_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE"
}))]
pub struct CreatedAppServer {
    pub id: String,
    pub name: String,
    pub uri: String,
    pub commission_bps: i32,
    pub webhook_url: Option<String>,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The server's API key (`tgk_…`). Store it now: only its hash is kept.
    pub api_key: String,
}

/// A new API key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "api_key": "tgk_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE",
    "previous_valid_until": "2026-12-02T09:00:00.000Z"
}))]
pub struct IssuedApiKey {
    /// The application server's id.
    pub app_server_id: String,
    /// The new key (`tgk_…`).
    pub api_key: String,
    /// Until when the previous keys keep working; absent when they were revoked at once.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_valid_until: Option<i64>,
}

/// Options of a key reissue.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReissueParams {
    /// `true` revokes the previous keys at once (a leaked key); by default they keep working
    /// for `[api] key_grace_secs` so the shop can switch without downtime.
    #[serde(default)]
    pub revoke_previous: bool,
}

/// One page of application servers, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "name": "shop1", "uri": "sip:shop1.example.com:5060", "commission_bps": 1500, "webhook_url": null, "created_at": "2026-12-01T09:00:00.000Z"}], "next_cursor": "WyJ2MSIsImFwcC1zZXJ2ZXJzIiwic2hvcDEiXQ"}))]
pub struct AppServerList {
    pub items: Vec<AppServer>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn field_of(message: &str) -> &'static str {
    if message.starts_with("application server name") {
        "name"
    } else if message.starts_with("webhook_url") {
        "webhook_url"
    } else if message.starts_with("commission_bps") {
        "commission_bps"
    } else {
        "uri"
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) => ApiError::field(field_of(&m), m),
        other => other.into(),
    }
}

/// Create an application server.
#[utoipa::path(
    post,
    path = "/app-servers",
    operation_id = "createAppServer",
    tag = "app-servers",
    summary = "Create an application server and its API key",
    description = "The response is the only place the new API key appears (`Cache-Control: \
                   no-store`): it is stored as a SHA-256 digest.",
    request_body(content = NewAppServer, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `api_key` is shown this once", body = CreatedAppServer,
            headers(("Location" = String, description = "The new application server's URL"))),
        (status = 400, description = "Invalid input; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An application server of that name exists (or existed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_app_server(
    _: Operator,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewAppServer>,
) -> Result<Response, ApiError> {
    let (server, key) = state
        .store()
        .add_app_server_with_key(&body.name, &body.uri)
        .await
        .map_err(store_error)?;
    let url = format!("/v1/app-servers/{}", server.id);
    let created = CreatedAppServer {
        id: server.id,
        name: server.name,
        uri: server.uri,
        commission_bps: server.commission_bps,
        webhook_url: server.webhook_url,
        created_at: server.created_at,
        api_key: key.expose().to_owned(),
    };
    Ok(no_store(
        (StatusCode::CREATED, location(url), Json(created)).into_response(),
    ))
}

/// List application servers.
#[utoipa::path(
    get,
    path = "/app-servers",
    operation_id = "listAppServers",
    tag = "app-servers",
    summary = "List application servers, by name",
    description = "API keys are not listed: they were shown once, at creation.",
    params(PageParams),
    responses(
        (status = 200, description = "One page of application servers", body = AppServerList),
        (status = 400, description = "A bad `limit` or `cursor`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_app_servers(
    _: Operator,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<AppServerList>, ApiError> {
    let limit = pagination::limit(params.limit)?;
    let after = pagination::decode(params.cursor.as_deref(), "app-servers", 1)?;
    let rows = state
        .store()
        .page_app_servers(after.as_ref().map(|a| a[0].as_str()), u64::from(limit) + 1)
        .await?;
    let (rows, next_cursor) = pagination::page(rows, limit, |a| {
        pagination::encode("app-servers", &[&a.name])
    });
    Ok(Json(AppServerList {
        items: rows.into_iter().map(AppServer::from).collect(),
        next_cursor,
    }))
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

/// The application server whose key calls.
#[utoipa::path(
    get,
    path = "/app-servers/me",
    operation_id = "getOwnAppServer",
    tag = "app-servers",
    summary = "Get the application server the calling key belongs to",
    description = "For an application server's key: its own record. A shop needs its `id`, \
                   the `aud` of the session tokens minted for it. The operator key is not an \
                   application server and gets 403.",
    responses(
        (status = 200, description = "The calling application server", body = AppServer),
        (status = 403, description = "The operator key, which belongs to no application server", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_own_app_server(principal: Principal) -> Result<Json<AppServer>, ApiError> {
    match principal {
        Principal::AppServer(own) => Ok(Json(own.into())),
        Principal::Operator => Err(ApiError::Forbidden(
            "the operator key belongs to no application server; call with the server's own key"
                .into(),
        )),
    }
}

/// Change an application server.
#[utoipa::path(
    patch,
    path = "/app-servers/{id}",
    operation_id = "updateAppServer",
    tag = "app-servers",
    summary = "Change an application server's URI, webhook URL or commission",
    description = "A new `commission_bps` applies to settlements generated from then on.",
    params(("id" = String, Path, description = "The application server's id")),
    request_body(content = AppServerPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed application server", body = AppServer),
        (status = 400, description = "Invalid input; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No application server with that id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn update_app_server(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AppServerPatch>,
) -> Result<Json<AppServer>, ApiError> {
    let change = AppServerChange {
        uri: body.uri,
        webhook_url: body.webhook_url,
        commission_bps: body.commission_bps,
    };
    let server = state
        .store()
        .update_app_server(&id, &change)
        .await
        .map_err(store_error)?;
    state.inner.key_cache.clear();
    Ok(Json(server.into()))
}

/// Delete an application server.
#[utoipa::path(
    delete,
    path = "/app-servers/{id}",
    operation_id = "deleteAppServer",
    tag = "app-servers",
    summary = "Delete an application server",
    description = "Refused (409) while it has live sessions or a service still routes to it. \
                   Its keys stop working at once; sessions, charges and settlements keep it.",
    params(("id" = String, Path, description = "The application server's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No application server with that id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It has live sessions, or a service routes to it", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn delete_app_server(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store().delete_app_server(&id, state.now_ms()).await?;
    state.inner.key_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Replace an application server's API key.
#[utoipa::path(
    post,
    path = "/app-servers/{id}/api-key",
    operation_id = "reissueAppServerApiKey",
    tag = "app-servers",
    summary = "Issue a new API key for an application server",
    description = "The previous keys keep working until `previous_valid_until` (`[api] \
                   key_grace_secs`, default 24 h) so the shop can switch without downtime; \
                   `revoke_previous=true` revokes them at once (a leaked key). The response is \
                   the only place the new key appears (`Cache-Control: no-store`).",
    params(("id" = String, Path, description = "The application server's id"), ReissueParams),
    responses(
        (status = 201, description = "The new key, shown this once", body = IssuedApiKey),
        (status = 400, description = "A bad parameter; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No application server with that id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn reissue_api_key(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ReissueParams>,
) -> Result<Response, ApiError> {
    let until = (!params.revoke_previous).then(|| state.now_ms() + state.inner.key_grace_ms);
    let key = state.store().reissue_api_key(&id, until).await?;
    state.inner.key_cache.clear();
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(IssuedApiKey {
                app_server_id: id,
                api_key: key.expose().to_owned(),
                previous_valid_until: until,
            }),
        )
            .into_response(),
    ))
}
