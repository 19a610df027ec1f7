//! The one error type of the HTTP layer, [`ApiError`], and its wire form: an RFC 9457
//! problem document ([`Problem`]) served as `application/problem+json`.
//!
//! Every handler, extractor and middleware of the API fails with an [`ApiError`]; nothing else
//! reaches a client. Each variant has a stable `type` URI (`urn:tollgate:problem:<slug>`,
//! listed in [`ProblemType`]), a fixed `title`, its status code, and a `detail` written for the
//! person reading it. Input problems also carry `errors`: one entry per offending field, named
//! by its JSON path (`app_servers[1]`) or query parameter (`cursor`).
//!
//! Internal failures (the database, a bug) are logged with their cause and answered with a
//! generic 500 whose `detail` reveals nothing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::StoreError;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:tollgate:problem:invalid-request",
    "title": "The request is invalid",
    "status": 400,
    "detail": "missing field `password`",
    "errors": [{"field": "password", "message": "missing field `password`"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tollgate:problem:` followed by one of
    /// `invalid-request`, `unsupported-media-type`, `unauthorized`, `forbidden`, `not-found`,
    /// `method-not-allowed`, `conflict`, `idempotency-key-reused`, `payload-too-large`,
    /// `rate-limited`, `unavailable`, `internal`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem; the same for every occurrence of a `type`.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person.
    pub detail: String,
    /// For invalid input: each offending field and what is wrong with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One offending input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"field": "unit_amount", "message": "unit_amount must be an integer from 0 to 1000000000000 (minor units)"}))]
pub struct FieldError {
    /// The field: a JSON path into the body (`name`, `app_servers[1]`), a query or form
    /// parameter (`cursor`, `token`), or a header (`content-type`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The kinds of problem, each with its `type` URI, title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    InvalidRequest,
    UnsupportedMediaType,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    KeyReused,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl ProblemType {
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "invalid-request",
            ProblemType::UnsupportedMediaType => "unsupported-media-type",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Forbidden => "forbidden",
            ProblemType::NotFound => "not-found",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::Conflict => "conflict",
            ProblemType::KeyReused => "idempotency-key-reused",
            ProblemType::RateLimited => "rate-limited",
            ProblemType::Unavailable => "unavailable",
            ProblemType::Internal => "internal",
        }
    }

    /// `urn:tollgate:problem:<slug>`.
    pub fn uri(self) -> String {
        format!("urn:tollgate:problem:{}", self.slug())
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemType::InvalidRequest => "The request is invalid",
            ProblemType::UnsupportedMediaType => "Unsupported media type",
            ProblemType::Unauthorized => "Authentication required",
            ProblemType::Forbidden => "Not allowed for this key",
            ProblemType::NotFound => "Not found",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::PayloadTooLarge => "Request body too large",
            ProblemType::Conflict => "Conflict",
            ProblemType::KeyReused => "Idempotency-Key reused for another request",
            ProblemType::RateLimited => "Too many requests",
            ProblemType::Unavailable => "Service unavailable",
            ProblemType::Internal => "Internal error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::NotFound => StatusCode::NOT_FOUND,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::Conflict => StatusCode::CONFLICT,
            ProblemType::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: malformed JSON, a missing or mistyped field, a bad parameter. 400.
    #[error("{detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A body that is not JSON (or a form, where a form is expected). 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No key, or an unknown one. 401 with `WWW-Authenticate: Bearer`.
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        /// A key was presented but is not valid (`error="invalid_token"`, RFC 6750 §3.1).
        invalid_token: bool,
    },
    /// A valid key that may not do this (an application server's key on an operator route). 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing, or one the caller may not see. 404.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not. 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is larger than [`super::MAX_BODY_BYTES`]. 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The thing already exists, the state forbids it (a closed session, live sessions), or
    /// the same Idempotency-Key is still being processed. 409.
    #[error("{0}")]
    Conflict(String),
    /// The Idempotency-Key was used for a different request. 422.
    #[error("{0}")]
    KeyReused(String),
    /// The client's request budget is spent. 429 with `Retry-After`.
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A part of the relay this request needs is not running. 503.
    #[error("{0}")]
    Unavailable(String),
    /// A failure on our side; logged, never shown. 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Invalid input in one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::Invalid {
            detail: message.clone(),
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// A store error from an operation whose invalid input lies in `field`.
    pub fn from_store_in(field: &str, err: StoreError) -> ApiError {
        match err {
            StoreError::Invalid(message) => ApiError::field(field, message),
            other => other.into(),
        }
    }

    pub fn problem_type(&self) -> ProblemType {
        match self {
            ApiError::Invalid { .. } => ProblemType::InvalidRequest,
            ApiError::UnsupportedMediaType(_) => ProblemType::UnsupportedMediaType,
            ApiError::Unauthorized { .. } => ProblemType::Unauthorized,
            ApiError::Forbidden(_) => ProblemType::Forbidden,
            ApiError::NotFound(_) => ProblemType::NotFound,
            ApiError::MethodNotAllowed(_) => ProblemType::MethodNotAllowed,
            ApiError::PayloadTooLarge(_) => ProblemType::PayloadTooLarge,
            ApiError::Conflict(_) => ProblemType::Conflict,
            ApiError::KeyReused(_) => ProblemType::KeyReused,
            ApiError::RateLimited { .. } => ProblemType::RateLimited,
            ApiError::Unavailable(_) => ProblemType::Unavailable,
            ApiError::Internal(_) => ProblemType::Internal,
        }
    }

    /// The problem document this error is answered with.
    pub fn to_problem(&self) -> Problem {
        let kind = self.problem_type();
        let detail = match self {
            ApiError::Internal(_) => {
                "the relay failed to handle this request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            problem_type: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail,
            errors,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(m) => ApiError::Invalid {
                detail: m,
                errors: Vec::new(),
            },
            StoreError::Db(e) => ApiError::Internal(format!("database: {e}")),
        }
    }
}

impl From<crate::billing::BillingError> for ApiError {
    fn from(err: crate::billing::BillingError) -> Self {
        use crate::billing::BillingError as B;
        match err {
            B::Invalid { field, message } => ApiError::field(field, message),
            B::NotFound(m) => ApiError::NotFound(m),
            B::NotBillable(m) => ApiError::Conflict(m),
            B::KeyReused(m) => ApiError::KeyReused(m),
            B::Busy(m) => ApiError::Unavailable(m),
            B::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "REST request failed");
        }
        let problem = self.to_problem();
        let status = self.problem_type().status();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthorized { invalid_token, .. } => {
                let challenge = if *invalid_token {
                    "Bearer realm=\"tollgate\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"tollgate\""
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = ApiError::Internal("password=hunter2".into()).to_problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
    }

    #[test]
    fn field_errors_name_the_field() {
        let p = ApiError::field("cursor", "not a cursor").to_problem();
        assert_eq!(p.problem_type, "urn:tollgate:problem:invalid-request");
        assert_eq!(p.errors, vec![FieldError::new("cursor", "not a cursor")]);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], "urn:tollgate:problem:invalid-request");
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let e: ApiError = StoreError::NotFound("no user x".into()).into();
        assert_eq!(e.problem_type().status(), StatusCode::NOT_FOUND);
        let e: ApiError = StoreError::Conflict("user x already exists".into()).into();
        assert_eq!(e.problem_type().status(), StatusCode::CONFLICT);
    }
}
