//! Extractors that fail with [`ApiError`] and name the offending field.
//!
//! axum's own `Json`, `Query` and `Form` rejections say what went wrong in prose only. These
//! read the raw body or query string and deserialize it through `serde_path_to_error`, which
//! reports *where* deserialization stopped: the JSON path of a wrongly typed value
//! (`app_servers[1]`), or, for a missing or unknown field, its parent path plus the name serde
//! puts in backquotes (`missing field \`password\``).
//!
//! - [`ApiJson`]: a JSON body (`application/json` or any `+json` type; else 415).
//! - [`ApiQuery`]: the query string.
//! - [`ApiForm`]: an `application/x-www-form-urlencoded` body (RFC 7662 introspection).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};

/// A JSON request body, deserialized with field-precise errors.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// The query string, deserialized with field-precise errors.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

/// A form-encoded request body, deserialized with field-precise errors.
#[derive(Debug, Clone)]
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_urlencoded(
            parts.uri.query().unwrap_or_default().as_bytes(),
            "query string",
        )
        .map(ApiQuery)
    }
}

impl<S, T> FromRequest<S> for ApiForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if media_type(req.headers()).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be a form \
                 (Content-Type: application/x-www-form-urlencoded)"
                    .into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_urlencoded(&bytes, "form").map(ApiForm)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ))
        } else {
            ApiError::field("body", rejection.body_text())
        }
    })
}

/// The media type of the body, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// Deserializes a JSON document, naming the field where it failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            let detail = format!(
                "the body is not well-formed JSON: {message} at line {} column {}",
                inner.line(),
                inner.column()
            );
            // `?` stands for a map key not read yet; `.` for the root.
            let known = path.trim_end_matches('?').trim_end_matches('.');
            let field = if known.is_empty() {
                "body".to_owned()
            } else {
                known.to_owned()
            };
            return ApiError::Invalid {
                detail,
                errors: vec![FieldError::new(field, message)],
            };
        }
        field_error(&path, message)
    })?;
    de.end().map_err(|e| {
        ApiError::field(
            "body",
            format!("unexpected data after the JSON document: {e}"),
        )
    })?;
    Ok(value)
}

/// Deserializes `a=1&b=2`, naming the parameter where it failed.
pub fn parse_urlencoded<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        match field_error(&path, message) {
            ApiError::Invalid { errors, .. } => {
                let detail = match errors.first() {
                    Some(e) => format!("{what}: {}: {}", e.field, e.message),
                    None => format!("{what} is invalid"),
                };
                ApiError::Invalid { detail, errors }
            }
            other => other,
        }
    })
}

/// serde_json appends " at line L column C"; the field path says more, so drop it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// An input error at `path` (serde_path_to_error's rendering: `.` for the root, else `a.b[0]`).
/// For a missing field the path is the parent's; the field's own name is in backquotes in the
/// message.
fn field_error(path: &str, message: String) -> ApiError {
    let path = if path == "." { "" } else { path };
    let name_in = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let field = if let Some(name) = name_in("missing field `") {
        // The path is the parent's.
        if path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        }
    } else if path.is_empty() {
        // An unknown field's path is already the field itself; a root-level failure has none.
        name_in("unknown field `").unwrap_or_else(|| "body".to_owned())
    } else {
        path.to_owned()
    };
    ApiError::Invalid {
        detail: format!("{field}: {message}"),
        errors: vec![FieldError::new(field, message)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        servers: Vec<String>,
        limit: Option<u32>,
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Invalid { errors, .. } => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let missing = parse_json::<Body>(br#"{"servers": []}"#).unwrap_err();
        assert_eq!(fields(missing), ["name"]);
        let wrong = parse_json::<Body>(br#"{"name": "a", "servers": ["x", 7]}"#).unwrap_err();
        assert_eq!(fields(wrong), ["servers[1]"]);
        let unknown =
            parse_json::<Body>(br#"{"name": "a", "servers": [], "nmae": 1}"#).unwrap_err();
        assert_eq!(fields(unknown), ["nmae"]);
        let syntax = parse_json::<Body>(br#"{"name": "a", "#).unwrap_err();
        assert_eq!(fields(syntax), ["body"]);
        let trailing = parse_json::<Body>(br#"{"name": "a", "servers": []} x"#).unwrap_err();
        assert_eq!(fields(trailing), ["body"]);
        assert!(parse_json::<Body>(br#"{"name": "a", "servers": []}"#).is_ok());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        limit: Option<u32>,
        cursor: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let bad = parse_urlencoded::<Params>(b"limit=abc", "query string").unwrap_err();
        assert_eq!(fields(bad), ["limit"]);
        let unknown = parse_urlencoded::<Params>(b"limt=5", "query string").unwrap_err();
        assert_eq!(fields(unknown), ["limt"]);
        let ok: Params = parse_urlencoded(b"limit=5&cursor=abc", "query string").unwrap();
        assert_eq!(ok.limit, Some(5));
    }
}
