//! `/v1/users`: SIP users. A password goes in once and is stored only as digest HA1 hashes
//! (see [`crate::store`]); no response ever carries it or its hashes. Operator key only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::pagination::{self, PageParams};
use super::{location, ApiState, Operator};
use crate::clock::rfc3339;
use crate::store::{StoreError, UserRecord};

/// A SIP user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "name": "alice", "realm": "portal.com",
    "created_at": "2026-12-01T09:00:00.000Z"
}))]
pub struct User {
    pub id: String,
    /// The digest user name.
    pub name: String,
    /// The digest realm the password was hashed for.
    pub realm: String,
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl From<UserRecord> for User {
    fn from(u: UserRecord) -> Self {
        User {
            id: u.id,
            name: u.name,
            realm: u.realm,
            created_at: u.created_at,
        }
    }
}

/// A user to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "alice", "password": "secret"}))]
pub struct NewUser {
    /// The digest user name: no `:`, `@` or whitespace.
    pub name: String,
    /// Hashed on arrival (MD5 and SHA-256 HA1); never stored or returned.
    #[schema(format = Password)]
    pub password: String,
    /// The digest realm; the relay's SIP domain when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// A new password for a user.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"password": "correct horse battery staple"}))]
pub struct UserPatch {
    /// Hashed on arrival; never stored or returned.
    #[schema(format = Password)]
    pub password: String,
    /// A new digest realm; unchanged when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// One page of users, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "name": "alice", "realm": "portal.com", "created_at": "2026-12-01T09:00:00.000Z"}], "next_cursor": null}))]
pub struct UserList {
    pub items: Vec<User>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The input field a store validation message is about.
fn field_of(message: &str) -> &'static str {
    if message.starts_with("user name") {
        "name"
    } else if message.starts_with("realm") {
        "realm"
    } else {
        "password"
    }
}

/// Create a user.
#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    tag = "users",
    summary = "Create a SIP user",
    description = "Stores the user's digest HA1 hashes (MD5 and SHA-256), never the password.",
    request_body(content = NewUser, content_type = "application/json"),
    responses(
        (status = 201, description = "The user was created", body = User,
            headers(("Location" = String, description = "The new user's URL"))),
        (status = 400, description = "Invalid input; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A user of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_user(
    _: Operator,
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let realm = body
        .realm
        .clone()
        .unwrap_or_else(|| state.inner.default_realm.clone());
    let user = state
        .store()
        .add_user(&body.name, &realm, &body.password)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::field(field_of(&m), m),
            other => other.into(),
        })?;
    let url = format!("/v1/users/{}", user.id);
    Ok((StatusCode::CREATED, location(url), Json(User::from(user))))
}

/// List users.
#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    tag = "users",
    summary = "List SIP users, by name",
    params(PageParams),
    responses(
        (status = 200, description = "One page of users", body = UserList),
        (status = 400, description = "A bad `limit` or `cursor`; `errors` names it", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_users(
    _: Operator,
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<UserList>, ApiError> {
    let limit = pagination::limit(params.limit)?;
    let after = pagination::decode(params.cursor.as_deref(), "users", 1)?;
    let rows = state
        .store()
        .page_users(after.as_ref().map(|a| a[0].as_str()), u64::from(limit) + 1)
        .await?;
    let (rows, next_cursor) =
        pagination::page(rows, limit, |u| pagination::encode("users", &[&u.name]));
    Ok(Json(UserList {
        items: rows.into_iter().map(User::from).collect(),
        next_cursor,
    }))
}

/// Change a user's password.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    operation_id = "updateUser",
    tag = "users",
    summary = "Change a SIP user's password (and realm)",
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = UserPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "Invalid input; `errors` names the field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn update_user(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    let user = state
        .store()
        .set_password_by_id(&id, body.realm.as_deref(), &body.password)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => ApiError::field(field_of(&m), m),
            other => other.into(),
        })?;
    Ok(Json(user.into()))
}

/// One user.
#[utoipa::path(
    get,
    path = "/users/{id}",
    operation_id = "getUser",
    tag = "users",
    summary = "Get one SIP user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_user(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.store().get_user(&id).await?.into()))
}

/// Delete a user.
#[utoipa::path(
    delete,
    path = "/users/{id}",
    operation_id = "deleteUser",
    tag = "users",
    summary = "Delete a SIP user",
    description = "The user can no longer authenticate (relay caches refresh within seconds). \
                   Sessions and bills of the user are kept.",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 204, description = "The user was deleted"),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No user with that id", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn delete_user(
    _: Operator,
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store().delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
