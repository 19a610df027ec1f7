//! `/v1/users`: SIP users. A password goes in once and is stored only as digest HA1 hashes
//! (see [`crate::store`]); no response ever carries it or its hashes. Operator key only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::extract::ApiJson;
use super::{location, ApiState, Operator};
use crate::store::{StoreError, UserRecord};

/// A SIP user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    /// The digest user name.
    pub name: String,
    /// The digest realm the password was hashed for.
    pub realm: String,
    /// Milliseconds since the Unix epoch.
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

/// Every user, by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
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
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json")
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
    summary = "List SIP users",
    responses(
        (status = 200, description = "Every user, by name", body = UserList),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_users(
    _: Operator,
    State(state): State<ApiState>,
) -> Result<Json<UserList>, ApiError> {
    let items = state
        .store()
        .list_users()
        .await?
        .into_iter()
        .map(User::from)
        .collect();
    Ok(Json(UserList { items }))
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
