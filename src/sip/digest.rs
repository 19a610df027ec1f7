//! HTTP/SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), both sides.
//!
//! rsipstack's own digest parsing rejects `algorithm=SHA-256` and `nc` values above `0xff`, so
//! this module carries its own parser for `Authorization`/`Proxy-Authorization` values
//! ([`parse_credentials`]) and for `WWW-Authenticate`/`Proxy-Authenticate` values
//! ([`parse_challenge`], [`parse_challenges`]).
//!
//! Server side (the relay):
//! - [`NonceKey`] issues *stateless* nonces: `base64url(issue-time ‖ random ‖ HMAC-SHA256)`,
//!   the MAC also covering the client's source address, so any relay node that shares the
//!   secret can check any node's nonce, but only for a request from the address it was issued
//!   to ([`NonceKey::check`] tells valid, stale and forged apart). [`NonceKeys`] holds the
//!   current secret and the ones still accepted during a rotation.
//! - [`challenge_headers`] builds one challenge per algorithm, most preferred first.
//! - [`verify`] recomputes a `qop=auth` response from the stored HA1, hashing the `uri=`
//!   parameter exactly as the client sent it and the `nc` exactly as it was written, and
//!   compares in constant time. RFC 2069 responses (no qop) are refused.
//!
//! Client side (`tollgate call`): [`parse_challenge`], [`choose_challenge`] and [`answer`].
//!
//! What the caller still owns: checking the nonce with [`NonceKeys::check`], that
//! `realm` is ours, that `uri=` names the request, picking the HA1 that matches
//! [`Credentials::algorithm`], and refusing a replayed `nc` (a stateless nonce can be
//! replayed within its lifetime; the relay tracks the highest `nc` per [`NonceId`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

/// Everything that can go wrong while parsing digest headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header does not use the `Digest` scheme (e.g. `Basic`).
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// The header is not a well-formed auth-param list.
    #[error("malformed digest header: {0}")]
    Syntax(&'static str),
    /// A required parameter is absent.
    #[error("digest parameter `{0}` is missing")]
    MissingParam(&'static str),
    /// A parameter appears twice (RFC 7616 §3.4: each at most once).
    #[error("digest parameter `{0}` appears more than once")]
    DuplicateParam(String),
    /// An algorithm other than MD5, SHA-256 or SHA-512-256.
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// `nc` is not 1–8 hexadecimal digits.
    #[error("invalid nonce count `{0}`")]
    InvalidNc(String),
    /// The challenge offers only quality-of-protection values we cannot answer.
    #[error("unsupported qop `{0}`")]
    UnsupportedQop(String),
}

/// A digest hash algorithm (RFC 7616 §3.2, RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the RFC 2617 / RFC 3261 default.
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-512-256`: SHA-512/256 (RFC 7616, RFC 8760).
    Sha512_256,
}

impl Algorithm {
    /// Parses an `algorithm=` value, case-insensitively. `None` (parameter absent) is MD5.
    pub fn parse(value: Option<&str>) -> Result<Self, DigestError> {
        match value {
            None => Ok(Self::Md5),
            Some(v) => v.parse(),
        }
    }

    /// The name as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
            Self::Sha512_256 => "SHA-512-256",
        }
    }

    /// `H(data)` as lowercase hex.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Self::Md5 => hex::encode(Md5::digest(data)),
            Self::Sha256 => hex::encode(Sha256::digest(data)),
            Self::Sha512_256 => hex::encode(Sha512_256::digest(data)),
        }
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("MD5") {
            Ok(Self::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Ok(Self::Sha256)
        } else if s.eq_ignore_ascii_case("SHA-512-256") {
            Ok(Self::Sha512_256)
        } else {
            Err(DigestError::UnsupportedAlgorithm(s.to_string()))
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// auth-param tokenizer
// ---------------------------------------------------------------------------------------------

/// One `scheme k=v, k="v", …` item from a header value.
struct AuthItem {
    scheme: String,
    /// `(lowercased key, unescaped value)` in the order they were written.
    params: Vec<(String, String)>,
}

impl AuthItem {
    /// The value of `key` (lowercase), rejecting duplicates.
    fn get(&self, key: &'static str) -> Result<Option<&str>, DigestError> {
        let mut found = None;
        for (k, v) in &self.params {
            if k == key {
                if found.is_some() {
                    return Err(DigestError::DuplicateParam(key.to_string()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    fn require(&self, key: &'static str) -> Result<&str, DigestError> {
        self.get(key)?.ok_or(DigestError::MissingParam(key))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A quoted-string; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, DigestError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(DigestError::Syntax("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or(DigestError::Syntax("unterminated quoted string"))?;
                    out.push(c);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| DigestError::Syntax("quoted string is not UTF-8"))
    }

    /// Skips a token68 (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`) if
    /// one stands here as a whole list element.
    fn skip_token68(&mut self) {
        let mut p = self.pos;
        let is_t68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        while self.s.get(p).copied().is_some_and(is_t68) {
            p += 1;
        }
        if p == self.pos {
            return;
        }
        while self.s.get(p) == Some(&b'=') {
            p += 1;
        }
        while self.s.get(p).copied().is_some_and(is_ws) {
            p += 1;
        }
        if matches!(self.s.get(p), None | Some(b',')) {
            self.pos = p;
        }
    }

    /// An unquoted value: leniently, anything up to a comma or whitespace.
    fn bare_value(&mut self) -> Result<String, DigestError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b != b',' && b != b'"' && !is_ws(b))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(DigestError::Syntax("empty parameter value"));
        }
        String::from_utf8(self.s[start..self.pos].to_vec())
            .map_err(|_| DigestError::Syntax("value is not UTF-8"))
    }
}

/// Splits a header value into `scheme params` items. Several challenges may share one header
/// line (`Digest …, Digest …`): a list element of the form `token SP token…` (no `=` after
/// the first token) starts a new item.
fn tokenize(value: &str) -> Result<Vec<AuthItem>, DigestError> {
    let mut c = Cursor {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut items: Vec<AuthItem> = Vec::new();
    c.skip_ws();
    loop {
        // Skip empty list elements.
        while c.peek().is_some_and(|b| b == b',' || is_ws(b)) {
            c.pos += 1;
        }
        if c.peek().is_none() {
            break;
        }
        let name = c.token();
        if name.is_empty() {
            return Err(DigestError::Syntax("expected a token"));
        }
        // Lossless: tchars are ASCII.
        let name = String::from_utf8_lossy(name).into_owned();
        c.skip_ws();
        if c.peek() == Some(b'=') {
            // key=value inside the current item.
            c.pos += 1;
            c.skip_ws();
            let v = match c.peek() {
                Some(b'"') => c.quoted()?,
                Some(_) => c.bare_value()?,
                None => return Err(DigestError::Syntax("missing parameter value")),
            };
            let item = items
                .last_mut()
                .ok_or(DigestError::Syntax("parameter before the scheme"))?;
            item.params.push((name.to_ascii_lowercase(), v));
            c.skip_ws();
            match c.peek() {
                None | Some(b',') => {}
                Some(_) => return Err(DigestError::Syntax("expected `,` between parameters")),
            }
        } else {
            // A new scheme, possibly followed by a token68 (Basic's credentials): skip that.
            items.push(AuthItem {
                scheme: name,
                params: Vec::new(),
            });
            c.skip_token68();
        }
    }
    if items.is_empty() {
        return Err(DigestError::Syntax("empty header"));
    }
    Ok(items)
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Server side: credentials, nonces, challenges, verification
// ---------------------------------------------------------------------------------------------

/// The parameters of an `Authorization` / `Proxy-Authorization` digest header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The `uri=` parameter exactly as sent (after removing the quoting); this is what is hashed.
    pub uri: String,
    /// The client's response, as sent.
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    /// The nonce count, parsed from hex.
    pub nc: Option<u32>,
    /// The nonce count exactly as written (hashed as written).
    pub nc_raw: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Parses a `Digest username="…", realm="…", …` credentials value.
///
/// Keys are case-insensitive, in any order; unknown keys are ignored; values may be quoted
/// strings (with backslash escapes) or bare tokens.
pub fn parse_credentials(header_value: &str) -> Result<Credentials, DigestError> {
    let items = tokenize(header_value)?;
    if items.len() != 1 {
        return Err(DigestError::Syntax("expected exactly one credentials item"));
    }
    let item = &items[0];
    if !item.scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let username = item.require("username")?.to_string();
    let realm = item.require("realm")?.to_string();
    let nonce = item.require("nonce")?.to_string();
    let uri = item.require("uri")?.to_string();
    let response = item.require("response")?.to_string();
    let algorithm = Algorithm::parse(item.get("algorithm")?)?;
    let qop = item.get("qop")?.map(str::to_string);
    let nc_raw = item.get("nc")?.map(str::to_string);
    let cnonce = item.get("cnonce")?.map(str::to_string);
    let opaque = item.get("opaque")?.map(str::to_string);
    let nc = match &nc_raw {
        None => None,
        Some(raw) => {
            if raw.is_empty() || raw.len() > 8 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::InvalidNc(raw.clone()));
            }
            Some(u32::from_str_radix(raw, 16).map_err(|_| DigestError::InvalidNc(raw.clone()))?)
        }
    };
    if qop.is_some() {
        if nc.is_none() {
            return Err(DigestError::MissingParam("nc"));
        }
        if cnonce.is_none() {
            return Err(DigestError::MissingParam("cnonce"));
        }
    }
    Ok(Credentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        qop,
        nc,
        nc_raw,
        cnonce,
        opaque,
    })
}

/// `H(username:realm:password)` as lowercase hex: what the user store keeps instead of a password.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// The expected `response=` value for `qop=auth` (when `qop` is `Some`) or RFC 2069 style.
fn expected_response(
    alg: Algorithm,
    ha1_hex: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, &str, &str)>, // (nc as written, cnonce, qop as written)
) -> String {
    let ha2 = alg.hash_hex(format!("{method}:{uri}").as_bytes());
    let ha1_hex = ha1_hex.to_ascii_lowercase();
    let kd = match qop {
        Some((nc, cnonce, qop)) => format!("{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        None => format!("{ha1_hex}:{nonce}:{ha2}"),
    };
    alg.hash_hex(kd.as_bytes())
}

/// Checks `creds.response` against the HA1 the caller stores for `creds.algorithm`.
///
/// Only `qop=auth` is accepted: an RFC 2069 response (no qop) carries no nonce count and no
/// client nonce, so nothing distinguishes its replay from the original; `qop=auth-int` is not
/// supported either (`false`). The nonce, realm, user, `uri=` and `nc` freshness are not
/// checked here.
pub fn verify(creds: &Credentials, method: &str, ha1_hex: &str) -> bool {
    let qop = match (&creds.qop, &creds.nc_raw, &creds.cnonce) {
        (Some(q), Some(nc), Some(cnonce)) if q.eq_ignore_ascii_case("auth") => {
            Some((nc.as_str(), cnonce.as_str(), q.as_str()))
        }
        _ => return false,
    };
    let expected = expected_response(
        creds.algorithm,
        ha1_hex,
        &creds.nonce,
        method,
        &creds.uri,
        qop,
    );
    let got = creds.response.to_ascii_lowercase();
    expected.as_bytes().ct_eq(got.as_bytes()).into()
}

/// Which nonce a client presented: its issue time and random part. Ordered by issue time, so
/// a cache of nonce counts can drop the oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NonceId {
    pub issued_ms: i64,
    pub random: u64,
}

/// The state of a nonce presented by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Issued to this source by a node sharing our secret, within its lifetime.
    Valid(NonceId),
    /// Issued to this source, but expired: challenge again with `stale=true`.
    Stale,
    /// Forged, corrupted, from another secret, or issued to another source address.
    Invalid,
}

const NONCE_TS_LEN: usize = 8;
const NONCE_RAND_LEN: usize = 8;
const NONCE_MAC_LEN: usize = 16;
const NONCE_LEN: usize = NONCE_TS_LEN + NONCE_RAND_LEN + NONCE_MAC_LEN;
/// How far in the future a nonce's issue time may be (clock skew between relay nodes).
pub const MAX_CLOCK_SKEW_MS: i64 = 30_000;
const NONCE_DOMAIN: &[u8] = b"tollgate-nonce-v2";

/// One server secret behind stateless nonces (HMAC-SHA256). Every relay node shares it.
#[derive(Clone)]
pub struct NonceKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// The 16 bytes a source address contributes to a nonce's MAC (IPv4-mapped IPv6 counts as
/// its IPv4 address, so a dual-stack socket does not change the binding).
fn source_bytes(source: IpAddr) -> [u8; 16] {
    match source {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl NonceKey {
    /// A key from a server secret (any length; 32 random bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"),
        }
    }

    fn tag(&self, body: &[u8], source: IpAddr) -> [u8; NONCE_MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(NONCE_DOMAIN);
        mac.update(&source_bytes(source));
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; NONCE_MAC_LEN];
        out.copy_from_slice(&full[..NONCE_MAC_LEN]);
        out
    }

    /// A fresh nonce for a client at `source`:
    /// `base64url(issue_ms (i64 BE) ‖ 8 random bytes ‖ HMAC-SHA256(source ‖ …)[..16])`,
    /// 43 characters. The source address is not written into the nonce, only into its MAC:
    /// the nonce verifies only for a request from the same address.
    pub fn issue(&self, now_ms: i64, source: IpAddr) -> String {
        let mut raw = [0u8; NONCE_LEN];
        raw[..NONCE_TS_LEN].copy_from_slice(&now_ms.to_be_bytes());
        let random: [u8; NONCE_RAND_LEN] = rand::random();
        raw[NONCE_TS_LEN..NONCE_TS_LEN + NONCE_RAND_LEN].copy_from_slice(&random);
        let tag = self.tag(&raw[..NONCE_TS_LEN + NONCE_RAND_LEN], source);
        raw[NONCE_TS_LEN + NONCE_RAND_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued with this secret to `source` and is younger than
    /// `lifetime_ms`.
    pub fn check(&self, nonce: &str, source: IpAddr, now_ms: i64, lifetime_ms: i64) -> NonceStatus {
        if nonce.len() > 64 {
            return NonceStatus::Invalid;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceStatus::Invalid;
        };
        if raw.len() != NONCE_LEN {
            return NonceStatus::Invalid;
        }
        let (body, mac) = raw.split_at(NONCE_TS_LEN + NONCE_RAND_LEN);
        if !bool::from(self.tag(body, source).ct_eq(mac)) {
            return NonceStatus::Invalid;
        }
        let mut ts = [0u8; NONCE_TS_LEN];
        ts.copy_from_slice(&body[..NONCE_TS_LEN]);
        let mut random = [0u8; NONCE_RAND_LEN];
        random.copy_from_slice(&body[NONCE_TS_LEN..]);
        let issued = i64::from_be_bytes(ts);
        let age = now_ms.saturating_sub(issued);
        if age < -MAX_CLOCK_SKEW_MS {
            // Authentic but from a node whose clock is far ahead: do not trust it.
            NonceStatus::Invalid
        } else if age > lifetime_ms {
            NonceStatus::Stale
        } else {
            NonceStatus::Valid(NonceId {
                issued_ms: issued,
                random: u64::from_be_bytes(random),
            })
        }
    }
}

/// The secrets a node issues and accepts nonces with: it issues with the current one and
/// accepts the current one and the others given (the previous one during a rotation, and a
/// next one other nodes may already use).
#[derive(Debug, Clone)]
pub struct NonceKeys {
    current: NonceKey,
    others: Vec<NonceKey>,
}

impl NonceKeys {
    /// Issues with `current`; also accepts `others`.
    pub fn new(current: &[u8], others: &[&[u8]]) -> Self {
        Self {
            current: NonceKey::new(current),
            others: others.iter().map(|s| NonceKey::new(s)).collect(),
        }
    }

    /// A fresh nonce for `source` under the current secret.
    pub fn issue(&self, now_ms: i64, source: IpAddr) -> String {
        self.current.issue(now_ms, source)
    }

    /// The first verdict other than [`NonceStatus::Invalid`] among the accepted secrets.
    pub fn check(&self, nonce: &str, source: IpAddr, now_ms: i64, lifetime_ms: i64) -> NonceStatus {
        std::iter::once(&self.current)
            .chain(&self.others)
            .map(|k| k.check(nonce, source, now_ms, lifetime_ms))
            .find(|s| *s != NonceStatus::Invalid)
            .unwrap_or(NonceStatus::Invalid)
    }
}

/// The algorithms the relay challenges with by default: MD5 only. sipp 3.6 and libre-based
/// softphones (baresip) fail outright when a SHA-256 challenge is present at all; SHA-256 is
/// opt-in through `[sip] digest_algorithms` (see docs/decisions/0020-digest-defaults.md).
pub const CHALLENGE_ALGORITHMS: [Algorithm; 1] = [Algorithm::Md5];

/// `WWW-Authenticate` / `Proxy-Authenticate` values, one per algorithm in
/// [`CHALLENGE_ALGORITHMS`] order, e.g.
/// `Digest realm="portal.com", nonce="…", algorithm=SHA-256, qop="auth"`.
///
/// No `opaque`: the nonce already carries the state, and RFC 3261 clients echo it anyway.
pub fn challenge_headers(
    realm: &str,
    nonce: &str,
    stale: bool,
    algorithms: &[Algorithm],
) -> Vec<String> {
    algorithms
        .iter()
        .map(|alg| {
            let mut v = format!(
                "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"",
                quote(realm),
                quote(nonce),
                alg
            );
            if stale {
                v.push_str(", stale=true");
            }
            v
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// One digest challenge from a `WWW-Authenticate` / `Proxy-Authenticate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// `Some("auth")` when the server offers `auth`; `None` when it offers no qop.
    pub qop: Option<String>,
    pub opaque: Option<String>,
    pub stale: bool,
}

fn challenge_from_item(item: &AuthItem) -> Result<Challenge, DigestError> {
    if !item.scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let realm = item.require("realm")?.to_string();
    let nonce = item.require("nonce")?.to_string();
    let algorithm = Algorithm::parse(item.get("algorithm")?)?;
    let qop = match item.get("qop")? {
        None => None,
        Some(list) => {
            if list
                .split(',')
                .any(|q| q.trim().eq_ignore_ascii_case("auth"))
            {
                Some("auth".to_string())
            } else {
                return Err(DigestError::UnsupportedQop(list.to_string()));
            }
        }
    };
    let opaque = item.get("opaque")?.map(str::to_string);
    let stale = item
        .get("stale")?
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    Ok(Challenge {
        realm,
        nonce,
        algorithm,
        qop,
        opaque,
        stale,
    })
}

/// Parses a header value holding exactly one digest challenge.
pub fn parse_challenge(header_value: &str) -> Result<Challenge, DigestError> {
    let items = tokenize(header_value)?;
    if items.len() != 1 {
        return Err(DigestError::Syntax("expected exactly one challenge"));
    }
    challenge_from_item(&items[0])
}

/// Parses every challenge in a header value (`Digest …, Digest …` on one line is allowed),
/// keeping those we can answer. Non-digest and unsupported challenges are skipped.
pub fn parse_challenges(header_value: &str) -> Vec<Challenge> {
    match tokenize(header_value) {
        Ok(items) => items
            .iter()
            .filter_map(|i| challenge_from_item(i).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Picks the challenge to answer among all header values: SHA-256, then SHA-512-256, then MD5.
/// Within one algorithm the first offered wins.
pub fn choose_challenge<'a, I>(header_values: I) -> Option<Challenge>
where
    I: IntoIterator<Item = &'a str>,
{
    let rank = |a: Algorithm| match a {
        Algorithm::Sha256 => 0,
        Algorithm::Sha512_256 => 1,
        Algorithm::Md5 => 2,
    };
    let mut best: Option<Challenge> = None;
    for ch in header_values.into_iter().flat_map(parse_challenges) {
        if best
            .as_ref()
            .is_none_or(|b| rank(ch.algorithm) < rank(b.algorithm))
        {
            best = Some(ch);
        }
    }
    best
}

/// The full `Digest username="…", …` value answering `ch` for `method uri`.
pub fn answer(
    ch: &Challenge,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let h1 = ha1(ch.algorithm, user, &ch.realm, password);
    let nc_hex = format!("{nc:08x}");
    let qop = ch.qop.as_deref().map(|q| (nc_hex.as_str(), cnonce, q));
    let response = expected_response(ch.algorithm, &h1, &ch.nonce, method, uri, qop);
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{}\", algorithm={}",
        quote(user),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
        response,
        ch.algorithm
    );
    if let Some(q) = &ch.qop {
        v.push_str(&format!(", qop={q}, nc={nc_hex}, cnonce={}", quote(cnonce)));
    }
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque={}", quote(o)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const RFC_REALM: &str = "http-auth@example.org";

    fn rfc7616_header(alg: &str, response: &str) -> String {
        format!(
            "Digest username=\"Mufasa\",\r\n realm=\"{RFC_REALM}\",\r\n uri=\"/dir/index.html\",\r\n \
             algorithm={alg},\r\n nonce=\"{RFC_NONCE}\",\r\n nc=00000001,\r\n \
             cnonce=\"{RFC_CNONCE}\",\r\n qop=auth,\r\n response=\"{response}\",\r\n \
             opaque=\"{RFC_OPAQUE}\""
        )
    }

    #[test]
    fn rfc7616_md5_example() {
        let h = rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        let c = parse_credentials(&h).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, RFC_REALM);
        assert_eq!(c.uri, "/dir/index.html");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.nc_raw.as_deref(), Some("00000001"));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.opaque.as_deref(), Some(RFC_OPAQUE));
        let h1 = ha1(Algorithm::Md5, "Mufasa", RFC_REALM, "Circle of Life");
        assert!(verify(&c, "GET", &h1));
        assert!(!verify(&c, "POST", &h1));
    }

    #[test]
    fn rfc7616_sha256_example() {
        let h = rfc7616_header(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
        let c = parse_credentials(&h).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let h1 = ha1(Algorithm::Sha256, "Mufasa", RFC_REALM, "Circle of Life");
        assert!(verify(&c, "GET", &h1));
        // The MD5 HA1 does not verify a SHA-256 response.
        let md5 = ha1(Algorithm::Md5, "Mufasa", RFC_REALM, "Circle of Life");
        assert!(!verify(&c, "GET", &md5));
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5.
        let h = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
                 nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
                 qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
                 response=\"6629fae49393a05397450978507c4ef1\", \
                 opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let c = parse_credentials(h).unwrap();
        let h1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(verify(&c, "GET", &h1));
    }

    #[test]
    fn client_answer_reproduces_rfc7616_vectors() {
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let ch = Challenge {
                realm: RFC_REALM.into(),
                nonce: RFC_NONCE.into(),
                algorithm: alg,
                qop: Some("auth".into()),
                opaque: Some(RFC_OPAQUE.into()),
                stale: false,
            };
            let v = answer(
                &ch,
                "GET",
                "/dir/index.html",
                "Mufasa",
                "Circle of Life",
                1,
                RFC_CNONCE,
            );
            let c = parse_credentials(&v).unwrap();
            assert_eq!(c.response, expected, "{alg}");
            assert_eq!(c.opaque.as_deref(), Some(RFC_OPAQUE));
            assert!(verify(
                &c,
                "GET",
                &ha1(alg, "Mufasa", RFC_REALM, "Circle of Life")
            ));
        }
    }

    #[test]
    fn rfc2069_response_without_qop_is_refused() {
        let h1 = ha1(Algorithm::Md5, "alice", "portal.com", "secret");
        let nonce = "abc123";
        let uri = "sip:127.0.0.1:5060";
        // Computed independently: MD5(HA1:nonce:MD5(INVITE:uri)).
        let ha2 = hex::encode(Md5::digest(format!("INVITE:{uri}").as_bytes()));
        let resp = hex::encode(Md5::digest(format!("{h1}:{nonce}:{ha2}").as_bytes()));
        let h = format!(
            "Digest username=\"alice\",realm=\"portal.com\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{resp}\",algorithm=MD5"
        );
        let c = parse_credentials(&h).unwrap();
        assert_eq!(c.qop, None);
        assert_eq!(c.nc, None);
        // Correct by RFC 2069, but replayable: refused.
        assert!(!verify(&c, "INVITE", &h1));
    }

    #[test]
    fn nc_above_0xff_and_as_written() {
        let ch = Challenge {
            realm: "portal.com".into(),
            nonce: "n".into(),
            algorithm: Algorithm::Sha256,
            qop: Some("auth".into()),
            opaque: None,
            stale: false,
        };
        let v = answer(
            &ch,
            "INVITE",
            "sip:s@portal.com",
            "alice",
            "pw",
            0x1234abcd,
            "c",
        );
        let c = parse_credentials(&v).unwrap();
        assert_eq!(c.nc, Some(0x1234abcd));
        assert_eq!(c.nc_raw.as_deref(), Some("1234abcd"));
        let h1 = ha1(Algorithm::Sha256, "alice", "portal.com", "pw");
        assert!(verify(&c, "INVITE", &h1));

        // Nine digits or non-hex are refused.
        for bad in ["123456789", "xyz", ""] {
            let h = format!(
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth, nc={bad}, cnonce=\"c\""
            );
            assert!(parse_credentials(&h).is_err(), "{bad:?}");
        }

        // An nc written with fewer digits is hashed as written.
        let h1m = ha1(Algorithm::Md5, "a", "r", "p");
        let ha2 = hex::encode(Md5::digest(b"INVITE:u"));
        let resp = hex::encode(Md5::digest(format!("{h1m}:n:1ff:c:auth:{ha2}").as_bytes()));
        let h = format!(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"{resp}\", qop=auth, nc=1ff, cnonce=\"c\""
        );
        let c = parse_credentials(&h).unwrap();
        assert_eq!(c.nc, Some(0x1ff));
        assert!(verify(&c, "INVITE", &h1m));
    }

    #[test]
    fn sha512_256_round_trip() {
        let ch = Challenge {
            realm: "portal.com".into(),
            nonce: "nonce".into(),
            algorithm: Algorithm::Sha512_256,
            qop: Some("auth".into()),
            opaque: None,
            stale: false,
        };
        let v = answer(&ch, "INVITE", "sip:x@portal.com", "bob", "pw", 1, "cn");
        let c = parse_credentials(&v).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha512_256);
        assert_eq!(c.response.len(), 64);
        assert!(verify(
            &c,
            "INVITE",
            &ha1(Algorithm::Sha512_256, "bob", "portal.com", "pw")
        ));
        // SHA-512/256 is not truncated SHA-512 (different IV).
        assert_eq!(
            Algorithm::Sha512_256.hash_hex(b"abc"),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }

    #[test]
    fn tampered_response_is_refused() {
        let h = rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbed");
        let c = parse_credentials(&h).unwrap();
        let h1 = ha1(Algorithm::Md5, "Mufasa", RFC_REALM, "Circle of Life");
        assert!(!verify(&c, "GET", &h1));
        let mut c2 = c.clone();
        c2.response = String::new();
        assert!(!verify(&c2, "GET", &h1));
        // A different uri than was hashed.
        let h = rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbec")
            .replace("/dir/index.html", "/dir/index.htm");
        assert!(!verify(&parse_credentials(&h).unwrap(), "GET", &h1));
        // auth-int is not supported.
        let mut c3 =
            parse_credentials(&rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbec")).unwrap();
        c3.qop = Some("auth-int".into());
        assert!(!verify(&c3, "GET", &h1));
    }

    #[test]
    fn parser_details() {
        // Case-insensitive scheme and keys, escapes, order, unknown params, extra commas.
        let h = "digest  ,USERNAME=\"al\\\"ice\", Realm = portal.com ,uri=\"sip:a@b;x=1,2\", \
                 nonce=n1, response=\"r\", foo=\"bar\", algorithm=sha-256,";
        let c = parse_credentials(h).unwrap();
        assert_eq!(c.username, "al\"ice");
        assert_eq!(c.realm, "portal.com");
        assert_eq!(c.uri, "sip:a@b;x=1,2");
        assert_eq!(c.algorithm, Algorithm::Sha256);

        assert_eq!(
            parse_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            parse_credentials("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\""),
            Err(DigestError::MissingParam("username"))
        );
        assert_eq!(
            parse_credentials(
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c"
            ),
            Err(DigestError::MissingParam("nc"))
        );
        assert_eq!(
            parse_credentials(
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=1"
            ),
            Err(DigestError::MissingParam("cnonce"))
        );
        assert_eq!(
            parse_credentials("Digest username=a, username=b, realm=r, nonce=n, uri=u, response=x"),
            Err(DigestError::DuplicateParam("username".into()))
        );
        assert!(matches!(
            parse_credentials(
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, algorithm=MD5-sess"
            ),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        for garbage in [
            "",
            "   ",
            "Digest",
            "Digest username",
            "Digest username=",
            "Digest username=\"unterminated",
            "Digest username=\"a\" realm=\"b\"",
            "=x",
            "Digest ,,, =",
            "Digest username=a, Digest realm=b",
            "\u{0}\u{1}Digest",
        ] {
            assert!(parse_credentials(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn algorithm_names() {
        for a in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
            assert_eq!(a.to_string().parse::<Algorithm>().unwrap(), a);
            assert_eq!(
                a.to_string().to_lowercase().parse::<Algorithm>().unwrap(),
                a
            );
        }
        assert_eq!(Algorithm::parse(None).unwrap(), Algorithm::Md5);
        assert!(Algorithm::parse(Some("SHA-1")).is_err());
    }

    #[test]
    fn nonces_valid_stale_invalid() {
        let here: IpAddr = "192.0.2.7".parse().unwrap();
        let key = NonceKey::new(b"shared secret of the cluster");
        let other_node = NonceKey::new(b"shared secret of the cluster");
        let now = 1_700_000_000_000;
        let n = key.issue(now, here);
        assert_eq!(n.len(), 43);
        assert_ne!(n, key.issue(now, here), "random part differs");
        assert!(
            matches!(key.check(&n, here, now, 30_000), NonceStatus::Valid(id) if id.issued_ms == now)
        );
        assert!(matches!(
            other_node.check(&n, here, now + 30_000, 30_000),
            NonceStatus::Valid(_)
        ));
        assert_eq!(
            key.check(&n, here, now + 30_001, 30_000),
            NonceStatus::Stale
        );
        // Slight skew between nodes is tolerated, a far-future nonce is not.
        assert!(matches!(
            key.check(&n, here, now - 1_000, 30_000),
            NonceStatus::Valid(_)
        ));
        assert_eq!(
            key.check(&n, here, now - 600_000, 30_000),
            NonceStatus::Invalid
        );

        // Bound to the source address: another address (even a neighbour) cannot use it,
        // and an IPv4-mapped IPv6 source is the same address.
        for elsewhere in ["192.0.2.8", "::1", "2001:db8::7"] {
            let elsewhere: IpAddr = elsewhere.parse().unwrap();
            assert_eq!(key.check(&n, elsewhere, now, 30_000), NonceStatus::Invalid);
        }
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(matches!(
            key.check(&n, mapped, now, 30_000),
            NonceStatus::Valid(_)
        ));

        let stranger = NonceKey::new(b"another secret");
        assert_eq!(stranger.check(&n, here, now, 30_000), NonceStatus::Invalid);

        // Any flipped character invalidates it.
        let mut bytes = n.clone().into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(key.check(&flipped, here, now, 30_000), NonceStatus::Invalid);
        for bad in ["", "abc", "!!!!", &"A".repeat(43), &"A".repeat(1000)] {
            assert_eq!(key.check(bad, here, now, 30_000), NonceStatus::Invalid);
        }
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn rotated_keys_accept_current_and_previous() {
        let here: IpAddr = "2001:db8::1".parse().unwrap();
        let before = NonceKeys::new(b"old", &[]);
        let old_nonce = before.issue(0, here);
        let after = NonceKeys::new(b"new", &[b"old"]);
        let new_nonce = after.issue(0, here);
        assert!(matches!(
            after.check(&old_nonce, here, 1, 30_000),
            NonceStatus::Valid(_)
        ));
        assert!(matches!(
            after.check(&new_nonce, here, 1, 30_000),
            NonceStatus::Valid(_)
        ));
        assert_eq!(
            before.check(&new_nonce, here, 1, 30_000),
            NonceStatus::Invalid
        );
        let retired = NonceKeys::new(b"newer", &[b"new"]);
        assert_eq!(
            retired.check(&old_nonce, here, 1, 30_000),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn challenges_in_preference_order_and_parsable() {
        let both = [Algorithm::Sha256, Algorithm::Md5];
        assert_eq!(
            challenge_headers("portal.com", "NONCE", false, &CHALLENGE_ALGORITHMS),
            vec!["Digest realm=\"portal.com\", nonce=\"NONCE\", algorithm=MD5, qop=\"auth\""]
        );
        let hs = challenge_headers("portal.com", "NONCE", false, &both);
        assert_eq!(
            hs,
            vec![
                "Digest realm=\"portal.com\", nonce=\"NONCE\", algorithm=SHA-256, qop=\"auth\"",
                "Digest realm=\"portal.com\", nonce=\"NONCE\", algorithm=MD5, qop=\"auth\"",
            ]
        );
        let stale = challenge_headers("portal.com", "NONCE", true, &both);
        assert!(stale.iter().all(|h| h.ends_with(", stale=true")));
        let ch = parse_challenge(&stale[1]).unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(ch.stale);
        assert_eq!(ch.qop.as_deref(), Some("auth"));

        // The client picks SHA-256 whatever the order.
        let rev: Vec<&str> = hs.iter().rev().map(String::as_str).collect();
        assert_eq!(choose_challenge(rev).unwrap().algorithm, Algorithm::Sha256);
        // Several challenges on one line.
        let joined = format!("{}, {}", hs[1], hs[0]);
        assert_eq!(parse_challenges(&joined).len(), 2);
        assert_eq!(
            choose_challenge([joined.as_str()]).unwrap().algorithm,
            Algorithm::Sha256
        );
        // Unknown algorithms and other schemes are skipped.
        let mixed = "Basic realm=\"x\", Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1, \
                     Digest realm=\"r\", nonce=\"n2\", qop=\"auth-int, auth\"";
        let chosen = choose_challenge([mixed]).unwrap();
        assert_eq!(chosen.nonce, "n2");
        assert_eq!(chosen.algorithm, Algorithm::Md5);
        assert_eq!(chosen.qop.as_deref(), Some("auth"));
        assert!(matches!(
            parse_challenge("Digest realm=r, nonce=n, qop=\"auth-int\""),
            Err(DigestError::UnsupportedQop(_))
        ));
        assert_eq!(choose_challenge(["garbage \"", ""]), None);
    }

    #[test]
    fn realm_with_quotes_round_trips() {
        let hs = challenge_headers("we \"quote\" \\ things", "n", false, &[Algorithm::Sha256]);
        let ch = parse_challenge(&hs[0]).unwrap();
        assert_eq!(ch.realm, "we \"quote\" \\ things");
        let a = answer(&ch, "INVITE", "sip:x@y", "u\"1", "p", 1, "c");
        let c = parse_credentials(&a).unwrap();
        assert_eq!(c.username, "u\"1");
        assert!(verify(
            &c,
            "INVITE",
            &ha1(Algorithm::Sha256, "u\"1", "we \"quote\" \\ things", "p")
        ));
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_6a7e);
        let alphabet: &[u8] =
            b"Digest usernamrlocqpf=\",\\ \t\r\n:/@;0123456789abcdefSHA-MD5\xff\x00";
        let seeds = [
            rfc7616_header("SHA-256", "00"),
            "Digest username=\"alice\",realm=\"portal.com\",uri=\"sip:127.0.0.1:5060\",nonce=\"x\",response=\"y\",algorithm=MD5".to_string(),
        ];
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = rng.gen_range(0..120);
                (0..len)
                    .map(|_| {
                        if rng.gen_bool(0.8) {
                            alphabet[rng.gen_range(0..alphabet.len())]
                        } else {
                            rng.gen()
                        }
                    })
                    .collect()
            } else {
                // Mutate a valid header.
                let mut b = seeds[i % 4 / 2].clone().into_bytes();
                for _ in 0..rng.gen_range(1..6) {
                    let pos = rng.gen_range(0..b.len());
                    match rng.gen_range(0..3) {
                        0 => b[pos] = alphabet[rng.gen_range(0..alphabet.len())],
                        1 => {
                            b.remove(pos);
                        }
                        _ => b.truncate(pos),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(c) = parse_credentials(&s) {
                let _ = verify(&c, "INVITE", "00");
            }
            let _ = parse_challenge(&s);
            let _ = parse_challenges(&s);
            let _ = NonceKey::new(b"k").check(&s, IpAddr::from([127, 0, 0, 1]), 0, 1);
        }
    }
}
