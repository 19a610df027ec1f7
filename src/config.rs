//! Layered configuration: built-in defaults → `tollgate.toml` → `TOLLGATE_*` environment.
//!
//! Names are part of the external contract: `[database] url`, `[sip] domain`, `[sip] listen`
//! (a list such as `["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]`), `[http] listen`, and the
//! environment variables `TOLLGATE_DATABASE_URL`, `TOLLGATE_SIP_DOMAIN`,
//! `TOLLGATE_SIP_LISTEN` (comma-separated), `TOLLGATE_HTTP_LISTEN`, `TOLLGATE_NODE_ID`,
//! `TOLLGATE_PUBLIC_URL`, `TOLLGATE_SIP_PUBLIC_HOST`, `TOLLGATE_SIP_DIGEST_ALGORITHMS` and `TOLLGATE_SIP_NONCE_SECRET`.
//! The REST API: `[api] operator_key` / `TOLLGATE_OPERATOR_KEY`, `[api] rate_limit_per_second`
//! / `TOLLGATE_API_RATE_LIMIT_PER_SECOND`, `[api] rate_limit_burst` /
//! `TOLLGATE_API_RATE_LIMIT_BURST`.
//! `[api] key_grace_secs` / `TOLLGATE_API_KEY_GRACE_SECS`.
//! Session tokens: `[tokens] key_encryption_key` / `TOLLGATE_KEY_ENCRYPTION_KEY` (the
//! environment wins, as everywhere).
//! Billing: `[billing] charge_grace_secs` / `TOLLGATE_BILLING_CHARGE_GRACE_SECS`. Webhooks:
//! `[webhooks] max_age_secs` / `TOLLGATE_WEBHOOKS_MAX_AGE_SECS`, `[webhooks]
//! secret_grace_secs` / `TOLLGATE_WEBHOOKS_SECRET_GRACE_SECS`.
//! Secrets are wrapped in [`Secret`] so they never reach a log line.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
}

/// A value that must not be printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A SIP transport the relay listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
    /// SIP over WebSocket (RFC 7118), for browsers.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

impl Protocol {
    /// The name used in `[sip] listen` and in a URI's `transport=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
        }
    }

    /// The transport token of a Via header (`SIP/2.0/UDP` …).
    pub fn via_name(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Ws => "WS",
            Protocol::Wss => "WSS",
        }
    }

    /// Reliable transports need no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        self != Protocol::Udp
    }

    /// The transport a URI's `transport=` parameter value names; UDP when unknown.
    pub fn from_uri_param(value: &str) -> Protocol {
        match value.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "ws" => Protocol::Ws,
            "wss" => Protocol::Wss,
            _ => Protocol::Udp,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `transport:address` entry of `[sip] listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not transport:address (e.g. udp:0.0.0.0:5060)"))?;
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            "ws" => Protocol::Ws,
            "wss" => Protocol::Wss,
            other => return Err(format!("unknown transport `{other}` (udp, tcp, ws or wss)")),
        };
        let addr = addr
            .parse()
            .map_err(|e| format!("`{addr}` is not an IP address and port: {e}"))?;
        Ok(Listen { protocol, addr })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which challenge an unauthenticated INVITE gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStyle {
    /// 407 Proxy-Authenticate (the default for a proxy).
    Proxy,
    /// 401 WWW-Authenticate.
    Www,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://file.db` (or any form sqlx accepts: `sqlite:file.db`, `sqlite://file.db?mode=rwc`,
    /// `sqlite::memory:`) or `postgres://…`.
    pub url: String,
    /// How long a query waits for a pooled connection before it fails.
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// The domain whose services and users this relay serves (also the digest realm).
    pub domain: String,
    pub listen: Vec<Listen>,
    /// Host written into Via and Record-Route; defaults to the bound IP, or this machine's
    /// primary address when bound to 0.0.0.0.
    pub public_host: Option<String>,
    pub challenge: ChallengeStyle,
    /// Digest algorithms offered, one challenge each, most preferred first (RFC 8760).
    /// Default `["MD5"]`: sipp 3.6 and libre-based phones (baresip) fail when a SHA-256
    /// challenge is present at all. `["SHA-256", "MD5"]` opts in to SHA-256 (see
    /// docs/decisions/0020-digest-defaults.md).
    pub digest_algorithms: Vec<String>,
    /// A fixed HMAC key for nonces, shared by every node through configuration. Unset (the
    /// default), the nodes share rotating keys kept in the database (`nonce_keys`).
    pub nonce_secret: Option<Secret>,
    pub nonce_lifetime_secs: u64,
    /// How often the database nonce key is replaced (the previous one stays accepted).
    pub nonce_key_rotation_secs: u64,
    /// Wrong credentials from one source within `auth_failure_window_secs` before it is blocked.
    pub auth_failure_limit: u32,
    /// Wrong credentials for one user name (from all sources) within
    /// `auth_failure_window_secs` before the user is blocked for `auth_block_secs`.
    pub auth_user_failure_limit: u32,
    pub auth_failure_window_secs: u64,
    pub auth_block_secs: u64,
    /// RFC 3261 T1 in milliseconds (retransmission base).
    pub t1_ms: u64,
    /// Timer C (RFC 3261 §16.6 step 11): how long an INVITE branch may go without a
    /// provisional response before it is cancelled. More than 180 s.
    pub timer_c_secs: u64,
    /// Most simultaneous TCP connections.
    pub tcp_max_connections: usize,
    /// A TCP or WebSocket connection idle for this long is closed.
    pub tcp_idle_secs: u64,
    /// PEM certificate chain and private key for `wss:` listeners.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often the user and service cache is reloaded from the database.
    pub cache_refresh_ms: u64,
    /// RFC 4028: the session interval inserted into an INVITE that has none, in seconds.
    pub session_expires: u64,
    /// RFC 4028: the smallest session interval accepted (a smaller one gets 422).
    pub min_se: u64,
    /// On SIGTERM/SIGINT: how long live sessions may go on (new INVITEs get 503) before the
    /// relay stops, leaving them to the next start.
    pub drain_secs: u64,
}

/// Session life (`[sessions]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// How often the node records that its confirmed sessions are alive (one statement for
    /// all): a crash bills at most this much less than was carried.
    pub checkpoint_secs: u64,
    /// Any session is ended at this age (`end_reason = max_duration`); 0 = no limit.
    pub max_duration_secs: u64,
    /// The longest the relay waits for a confirmation or an end to be stored before it gives
    /// up on it (ends the call instead of relaying the ACK).
    pub store_timeout_ms: u64,
    /// Session events queued for the database beyond which new INVITEs get 503.
    pub writer_queue: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            checkpoint_secs: 10,
            max_duration_secs: 24 * 60 * 60,
            store_timeout_ms: 2000,
            writer_queue: 50_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The relay's public base URL: the `iss` of its session tokens and the base of the URLs
    /// it hands out. Defaults to `http://` plus the bound HTTP address.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of a session token in seconds.
    pub ttl_secs: u64,
    /// `ES256` (default) or `EdDSA`; a change takes effect through `tollgate keys rotate`.
    pub algorithm: String,
    /// How long a retired signing key stays published, in seconds.
    pub retired_grace_secs: u64,
    /// The key that encrypts the private signing keys in the database: the base64 of 32
    /// random bytes (`tollgate keys generate-kek`, `openssl rand -base64 32`). Unset, they are
    /// stored in the clear and the relay warns at start. Every node needs the same one.
    pub key_encryption_key: Option<Secret>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            algorithm: "ES256".into(),
            retired_grace_secs: 24 * 60 * 60,
            key_encryption_key: None,
        }
    }
}

/// The REST API (`[api]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The operator key (`Authorization: Bearer KEY`), at least 16 characters; without one,
    /// no operator operation is possible over REST.
    pub operator_key: Option<Secret>,
    /// Sustained requests per second per client (API key, or IP address without one);
    /// 0 turns the limit off.
    pub rate_limit_per_second: f64,
    /// Requests a quiet client may send at once.
    pub rate_limit_burst: u32,
    /// How long an application server's previous API key keeps working after a reissue
    /// (unless the operator revokes it at once).
    pub key_grace_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            operator_key: None,
            rate_limit_per_second: 50.0,
            rate_limit_burst: 100,
            key_grace_secs: 24 * 60 * 60,
        }
    }
}

/// Billing (`[billing]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// How long after a session ends its application server may still add charges.
    pub charge_grace_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            charge_grace_secs: 600,
        }
    }
}

/// Webhooks (`[webhooks]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long an undelivered event is retried, counted from the event.
    pub max_age_secs: u64,
    /// How long a replaced webhook secret still signs events.
    pub secret_grace_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_age_secs: 3 * 24 * 60 * 60,
            secret_grace_secs: 24 * 60 * 60,
        }
    }
}

/// The whole configuration of one relay node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Names this node on the session rows it writes and in its branches; unique per node and
    /// stable across restarts. Unset, the node generates one at its first start and keeps it
    /// in `<data_dir>/node-id`.
    pub node_id: Option<String>,
    /// Where the node keeps its own files (its generated node id). Defaults to the config
    /// file's directory, else the SQLite database's directory, else the working directory.
    pub data_dir: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub sip: SipConfig,
    pub http: HttpConfig,
    pub tokens: TokensConfig,
    pub api: ApiConfig,
    pub billing: BillingConfig,
    pub webhooks: WebhooksConfig,
    pub sessions: SessionsConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://tollgate.db".into(),
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            domain: "portal.com".into(),
            listen: vec![
                "udp:0.0.0.0:5060".parse().expect("valid default"),
                "tcp:0.0.0.0:5060".parse().expect("valid default"),
            ],
            public_host: None,
            challenge: ChallengeStyle::Proxy,
            digest_algorithms: vec!["MD5".into()],
            nonce_secret: None,
            nonce_lifetime_secs: 300,
            nonce_key_rotation_secs: 24 * 60 * 60,
            auth_failure_limit: 10,
            auth_user_failure_limit: 50,
            auth_failure_window_secs: 60,
            auth_block_secs: 60,
            t1_ms: 500,
            timer_c_secs: 181,
            tcp_max_connections: 10_000,
            tcp_idle_secs: 3600,
            tls_cert: None,
            tls_key: None,
            cache_refresh_ms: 2000,
            session_expires: 1800,
            min_se: 90,
            drain_secs: 30,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            public_url: None,
        }
    }
}

impl Config {
    /// Defaults, then `path` (or `./tollgate.toml` when it exists), then the environment.
    /// Without an explicit database URL the SQLite file lives next to the config file.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path = Path::new("tollgate.toml");
        let file = match path {
            Some(p) => Some(p),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let mut config = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let mut config: Config =
                    toml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: p.to_path_buf(),
                        source,
                    })?;
                let dir = p.parent().unwrap_or(Path::new("."));
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if !text_sets_database_url(&text) {
                    config.database.url = format!("sqlite://{}", dir.join("tollgate.db").display());
                }
                config.data_dir.get_or_insert_with(|| dir.to_path_buf());
                config
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies `TOLLGATE_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.into(),
                message: e.to_string(),
            })
        }
        if let Some(v) = get("TOLLGATE_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("TOLLGATE_NODE_ID") {
            self.node_id = Some(v);
        }
        if let Some(v) = get("TOLLGATE_SIP_DOMAIN") {
            self.sip.domain = v;
        }
        if let Some(v) = get("TOLLGATE_SIP_LISTEN") {
            self.sip.listen = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse("TOLLGATE_SIP_LISTEN", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("TOLLGATE_SIP_DIGEST_ALGORITHMS") {
            self.sip.digest_algorithms = v.split(',').map(|s| s.trim().to_string()).collect();
        }
        if let Some(v) = get("TOLLGATE_SIP_PUBLIC_HOST") {
            self.sip.public_host = Some(v);
        }
        if let Some(v) = get("TOLLGATE_SIP_TLS_CERT") {
            self.sip.tls_cert = Some(v.into());
        }
        if let Some(v) = get("TOLLGATE_SIP_TLS_KEY") {
            self.sip.tls_key = Some(v.into());
        }
        if let Some(v) = get("TOLLGATE_SIP_NONCE_SECRET") {
            self.sip.nonce_secret = Some(Secret::new(v));
        }
        if let Some(v) = get("TOLLGATE_PUBLIC_URL") {
            self.http.public_url = Some(v);
        }
        if let Some(v) = get("TOLLGATE_HTTP_LISTEN") {
            self.http.listen = parse("TOLLGATE_HTTP_LISTEN", &v)?;
        }
        if let Some(v) = get("TOLLGATE_KEY_ENCRYPTION_KEY") {
            self.tokens.key_encryption_key = Some(Secret::new(v));
        }
        if let Some(v) = get("TOLLGATE_OPERATOR_KEY") {
            self.api.operator_key = Some(Secret::new(v));
        }
        if let Some(v) = get("TOLLGATE_API_RATE_LIMIT_PER_SECOND") {
            self.api.rate_limit_per_second = parse("TOLLGATE_API_RATE_LIMIT_PER_SECOND", &v)?;
        }
        if let Some(v) = get("TOLLGATE_API_RATE_LIMIT_BURST") {
            self.api.rate_limit_burst = parse("TOLLGATE_API_RATE_LIMIT_BURST", &v)?;
        }
        if let Some(v) = get("TOLLGATE_API_KEY_GRACE_SECS") {
            self.api.key_grace_secs = parse("TOLLGATE_API_KEY_GRACE_SECS", &v)?;
        }
        if let Some(v) = get("TOLLGATE_BILLING_CHARGE_GRACE_SECS") {
            self.billing.charge_grace_secs = parse("TOLLGATE_BILLING_CHARGE_GRACE_SECS", &v)?;
        }
        if let Some(v) = get("TOLLGATE_WEBHOOKS_MAX_AGE_SECS") {
            self.webhooks.max_age_secs = parse("TOLLGATE_WEBHOOKS_MAX_AGE_SECS", &v)?;
        }
        if let Some(v) = get("TOLLGATE_WEBHOOKS_SECRET_GRACE_SECS") {
            self.webhooks.secret_grace_secs = parse("TOLLGATE_WEBHOOKS_SECRET_GRACE_SECS", &v)?;
        }
        Ok(())
    }
}

fn text_sets_database_url(text: &str) -> bool {
    toml::from_str::<toml::Value>(text)
        .ok()
        .and_then(|v| v.get("database")?.get("url").cloned())
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_values() {
        let mut c: Config = toml::from_str(
            "[sip]\ndomain = \"a.example\"\nlisten = [\"udp:127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        assert_eq!(c.sip.domain, "a.example");
        c.apply_env(|n| match n {
            "TOLLGATE_SIP_LISTEN" => Some("udp:127.0.0.1:5999, tcp:127.0.0.1:5998".into()),
            "TOLLGATE_SIP_DOMAIN" => Some("b.example".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.sip.domain, "b.example");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.listen[1].protocol, Protocol::Tcp);
    }

    #[test]
    fn bad_listen_names_the_variable() {
        let mut c = Config::default();
        let err = c
            .apply_env(|n| (n == "TOLLGATE_SIP_LISTEN").then(|| "sctp:1.2.3.4:5".into()))
            .unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_SIP_LISTEN"), "{err}");
        assert!(err.to_string().contains("sctp"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[sip]\ndomian = \"x\"\n").is_err());
    }

    #[test]
    fn the_key_encryption_key_comes_from_the_file_and_the_environment_wins() {
        let mut c: Config =
            toml::from_str("[tokens]\nkey_encryption_key = \"from-file\"\n").unwrap();
        let kek = |c: &Config| {
            c.tokens
                .key_encryption_key
                .as_ref()
                .map(|s| s.expose().to_owned())
        };
        assert_eq!(kek(&c).as_deref(), Some("from-file"));
        c.apply_env(|_| None).unwrap();
        assert_eq!(kek(&c).as_deref(), Some("from-file"));
        c.apply_env(|n| (n == "TOLLGATE_KEY_ENCRYPTION_KEY").then(|| "from-env".into()))
            .unwrap();
        assert_eq!(kek(&c).as_deref(), Some("from-env"));
        assert!(!format!("{c:?}").contains("from-env"));
        assert_eq!(kek(&Config::default()), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
