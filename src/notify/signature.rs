//! `Tollgate-Signature: t=UNIX_SECONDS,v1=HEX[,v1=HEX…]`: HMAC-SHA256 over `"{t}.{raw body}"`
//! with each signing secret of the application server (several while a replaced secret is
//! still in its grace period). A receiver accepts the event when any `v1` matches one of its
//! secrets and `t` is recent.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header name.
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";

/// Why [`verify`] refused a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed: {0}")]
    Malformed(String),
    #[error(
        "the signature timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)"
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no v1 signature matches the secret")]
    Mismatch,
}

/// Lowercase hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (Unix seconds), one `v1` per secret.
pub fn signature_header(secrets: &[String], timestamp: i64, body: &[u8]) -> String {
    let mut value = format!("t={timestamp}");
    for secret in secrets {
        value.push_str(",v1=");
        value.push_str(&sign(secret, timestamp, body));
    }
    value
}

/// Checks a received webhook: `header` is the `Tollgate-Signature` value, `body` the raw
/// request body (before any JSON parsing), `now_secs` the receiver's Unix time. Accepts when
/// `t` is within `tolerance_secs` of now (300 is a good value; it bounds replays) and a `v1`
/// matches `secret`. Compares in constant time.
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| VerifyError::Malformed(format!("{part:?} is not name=value")))?;
        match name {
            "t" => {
                timestamp = Some(value.parse::<i64>().map_err(|_| {
                    VerifyError::Malformed(format!("t={value} is not Unix seconds"))
                })?)
            }
            "v1" => signatures.push(
                hex::decode(value)
                    .map_err(|_| VerifyError::Malformed(format!("v1={value} is not hex")))?,
            ),
            _ => {} // other schemes, for the future
        }
    }
    let timestamp = timestamp.ok_or_else(|| VerifyError::Malformed("no t=".into()))?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed("no v1=".into()));
    }
    let age_secs = now_secs - timestamp;
    if age_secs.abs() > tolerance_secs {
        return Err(VerifyError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    let expected = mac(secret, timestamp, body).finalize().into_bytes();
    if signatures
        .iter()
        .any(|s| bool::from(s.as_slice().ct_eq(expected.as_slice())))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_a_changed_one_does_not() {
        let secrets = vec!["whsec_new".to_owned(), "whsec_old".to_owned()];
        let body = br#"{"id":"evt_1"}"#;
        let header = signature_header(&secrets, 1_000, body);
        assert!(header.starts_with("t=1000,v1="));
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify(&header, body, "whsec_new", 1_010, 300), Ok(()));
        assert_eq!(
            verify(&header, body, "whsec_old", 1_010, 300),
            Ok(()),
            "rotation"
        );
        assert_eq!(
            verify(&header, b"{\"id\":\"evt_2\"}", "whsec_new", 1_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, "whsec_other", 1_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&header, body, "whsec_new", 2_000, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert!(matches!(
            verify("v1=zz", body, "s", 0, 300),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify("t=5", body, "s", 5, 300),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn the_signed_string_is_timestamp_dot_body() {
        // Independent of this module: HMAC-SHA256("k", "7.x") per RFC 2104.
        let mut m = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        m.update(b"7.x");
        assert_eq!(sign("k", 7, b"x"), hex::encode(m.finalize().into_bytes()));
    }
}
