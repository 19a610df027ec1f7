//! Cursor pagination shared by every list: `limit` (1 to 500, default 50) and an opaque
//! `cursor`, the previous page's `next_cursor`.
//!
//! A cursor is base64url of a JSON array `["v1", <position>…]`: the sort key of the page's
//! last item. The next page is everything strictly after it in the list's order, so items
//! added while a client pages neither shift nor repeat. A cursor that does not decode, or was
//! made by another list, is a 400 naming `cursor`. (`GET /v1/sessions` keeps its own older
//! format, see [`super::sessions`].)

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;

/// Most items on one page.
pub const MAX_LIMIT: u32 = 500;
/// Items on a page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;

/// `limit` and `cursor` of a list without filters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Checks `limit` (1..=500, default 50).
pub fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
        ))
    }
}

/// The opaque cursor for a position of `kind` (the list it belongs to).
pub fn encode(kind: &str, position: &[&str]) -> String {
    let mut parts = vec!["v1", kind];
    parts.extend_from_slice(position);
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&parts).unwrap_or_default())
}

/// The position in a cursor of `kind` with `len` parts; a 400 naming `cursor` otherwise.
pub fn decode(
    cursor: Option<&str>,
    kind: &str,
    len: usize,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            "cursor",
            "not a cursor this list issued: pass a page's next_cursor unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| bad())?;
    let parts: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match parts.as_slice() {
        [v, k, rest @ ..] if v == "v1" && k == kind && rest.len() == len => Ok(Some(rest.to_vec())),
        _ => Err(bad()),
    }
}

/// A `(time, id)` position, the usual keyset of newest-first lists.
pub fn decode_time_id(cursor: Option<&str>, kind: &str) -> Result<Option<(i64, String)>, ApiError> {
    match decode(cursor, kind, 2)? {
        None => Ok(None),
        Some(parts) => {
            let at = parts[0]
                .parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor this list issued"))?;
            Ok(Some((at, parts[1].clone())))
        }
    }
}

/// Cuts `rows` (fetched with `limit + 1`) to `limit` and makes the next page's cursor from
/// the last kept row.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_per_list() {
        let c = encode("users", &["alice"]);
        assert_eq!(
            decode(Some(&c), "users", 1).unwrap(),
            Some(vec!["alice".to_owned()])
        );
        assert!(
            decode(Some(&c), "services", 1).is_err(),
            "another list's cursor"
        );
        assert!(decode(Some("garbage!"), "users", 1).is_err());
        let t = encode("charges", &["17", "ch_1"]);
        assert_eq!(
            decode_time_id(Some(&t), "charges").unwrap(),
            Some((17, "ch_1".to_owned()))
        );
        assert!(limit(Some(0)).is_err() && limit(Some(501)).is_err());
        assert_eq!(limit(None).unwrap(), 50);
    }
}
