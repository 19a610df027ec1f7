//! Handing the session token to the caller with the application server's answer.
//!
//! The application server answers its 200 with the URL where its service lives, either as
//! JSON `{"url": "…"}` or as a plain-text URL (`text/plain`, `text/uri-list`). The relay
//! replaces that body with one documented JSON object:
//!
//! ```json
//! {"url": "https://shop.example/wine", "token": "<JWT>", "session_id": "…",
//!  "expires_at": "2026-11-26T08:10:00Z"}
//! ```
//!
//! A 200 whose body holds no URL (an SDP answer from a media server, say) keeps its body;
//! the token and session id then travel only in the `Tollgate-Session-Token` and
//! `Tollgate-Session-Id` headers, which every relayed 2xx carries.

use crate::clock::Millis;
use crate::sip::message as msg;
use rsipstack::sip::{Header, Response};
use std::time::{Duration, UNIX_EPOCH};

/// Header carrying the session token, on the forwarded INVITE and on the relayed 2xx.
pub const TOKEN_HEADER: &str = "Tollgate-Session-Token";
/// Header carrying the session id on the relayed 2xx.
pub const SESSION_HEADER: &str = "Tollgate-Session-Id";

/// The token minted for one branch.
#[derive(Debug, Clone)]
pub struct BranchToken {
    pub jwt: String,
    pub expires_at_ms: Millis,
}

/// Rewrites a 2xx for the caller: token headers always, the JSON body when a URL is found.
pub fn hand_over(resp: &mut Response, token: &BranchToken, session_id: &str) {
    msg::push_header(
        &mut resp.headers,
        Header::Other(TOKEN_HEADER.into(), token.jwt.clone()),
    );
    msg::push_header(
        &mut resp.headers,
        Header::Other(SESSION_HEADER.into(), session_id.into()),
    );
    let content_type = resp.headers.iter().find_map(|h| match h {
        Header::ContentType(v) => Some(v.value().to_ascii_lowercase()),
        _ => None,
    });
    let Some(url) = url_in_body(content_type.as_deref(), &resp.body) else {
        return;
    };
    let body = serde_json::json!({
        "url": url,
        "token": token.jwt,
        "session_id": session_id,
        "expires_at": rfc3339(token.expires_at_ms),
    });
    let mut old = std::mem::take(&mut resp.body);
    msg::set_body(
        &mut resp.headers,
        &mut old,
        Some("application/json"),
        body.to_string().into_bytes(),
    );
    resp.body = old;
}

/// The service URL an application server put in its answer, if any.
pub fn url_in_body(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let is_url = |s: &str| s.starts_with("https://") || s.starts_with("http://");
    match content_type {
        Some(ct) if ct.contains("json") => {
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            let url = value.get("url")?.as_str()?;
            is_url(url).then(|| url.to_string())
        }
        Some(ct) if ct.starts_with("text/plain") || ct.starts_with("text/uri-list") => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| is_url(l))
            .map(str::to_string),
        _ => None,
    }
}

fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_json_and_plain_text_but_not_sdp() {
        assert_eq!(
            url_in_body(
                Some("application/json"),
                br#"{"url":"https://shop.example/w"}"#
            ),
            Some("https://shop.example/w".into())
        );
        assert_eq!(
            url_in_body(Some("text/plain"), b"\r\n https://shop.example/b \r\n"),
            Some("https://shop.example/b".into())
        );
        assert_eq!(url_in_body(Some("application/sdp"), b"v=0\r\n"), None);
        assert_eq!(
            url_in_body(
                Some("application/json"),
                br#"{"url":"javascript:alert(1)"}"#
            ),
            None,
            "only http(s) URLs are handed to a browser"
        );
    }

    #[test]
    fn expiry_is_rfc3339_utc() {
        assert_eq!(rfc3339(1_795_680_000_000), "2026-11-26T08:00:00Z");
    }
}
