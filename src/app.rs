//! Builds and runs a relay node from a [`Config`]: storage, the directory cache, the session
//! writer, the SIP transports, the relay core and the HTTP listener. Returns the bound
//! addresses (every listener may be port 0) and shuts down gracefully, flushing sessions.

use crate::api::{self, ApiParts, ApiSettings, ApiState, RateLimit, Readiness};
use crate::clock::SharedClock;
use crate::config::{ChallengeStyle, Config, Listen, Protocol};
use crate::metrics::Metrics;
use crate::node;
use crate::notify::{Dispatcher, DispatcherSettings};
use crate::relay::auth::{AuthSettings, Authenticator, ChallengeKind};
use crate::relay::core::{Core, CoreParts, CoreSettings};
use crate::relay::directory::DirectoryCache;
use crate::relay::routing::{branch_safe, LocalIdentity};
use crate::relay::session_life::{Draining, LifeSettings};
use crate::sip::digest::Algorithm;
use crate::sip::transport::{StreamLimits, TlsAcceptor, Transports};
use crate::store::{SessionWriter, Store, StoreError};
use crate::tokens::{TokenConfig, TokenError, TokenIssuer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How many nonces' counts the authenticator remembers (about 40 bytes each).
const NC_CACHE_ENTRIES: usize = 200_000;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("session tokens: {0}")]
    Tokens(#[from] TokenError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
}

/// A running relay node.
pub struct Relay {
    /// The SIP listeners as bound.
    pub sip: Vec<Listen>,
    pub http: SocketAddr,
    pub store: Store,
    /// The node's metrics, served at `/metrics`; the relay core counts into it.
    pub metrics: Metrics,
    directory: Arc<DirectoryCache>,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    draining: Draining,
    live: watch::Receiver<usize>,
}

impl Relay {
    /// The bound address of the first SIP listener of `protocol`.
    pub fn sip_addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.sip
            .iter()
            .find(|l| l.protocol == protocol)
            .map(|l| l.addr)
    }

    /// Reloads the users and services now, rather than at the next periodic refresh.
    pub async fn reload_directory(&self) -> Result<(), StoreError> {
        self.directory.refresh(&self.store).await
    }

    /// The number of live dialogs (sessions being set up, confirmed or ending).
    pub fn live_sessions(&self) -> usize {
        *self.live.borrow()
    }

    /// Stops taking new sessions (new INVITEs get 503, `/readyz` says not ready) and waits
    /// until the live ones have ended or `within` has passed, relaying their in-dialog
    /// requests meanwhile. Returns how many are still live; they are stored, and the next
    /// start of this node carries on with them.
    pub async fn drain(&mut self, within: Duration) -> usize {
        self.draining.start();
        let _ = tokio::time::timeout(within, self.live.wait_for(|n| *n == 0)).await;
        self.live_sessions()
    }

    /// Stops listening, then waits until every session event is on disk.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.writer.await;
    }
}

/// Starts a relay node. Pending migrations are applied; sessions a previous run left open are
/// closed honestly (billed to their last proof of life).
pub async fn start(config: &Config, clock: SharedClock) -> Result<Relay, AppError> {
    if let Some(key) = &config.api.operator_key {
        if key.expose().chars().count() < 16 {
            return Err(AppError::Config(
                "[api] operator_key must be at least 16 characters".into(),
            ));
        }
    }
    let node_id = node::node_id(config)?;
    let store = Store::connect_with(
        &config.database.url,
        Duration::from_secs(config.database.acquire_timeout_secs.max(1)),
    )
    .await?
    .with_charge_grace_ms(secs_to_ms(config.billing.charge_grace_secs));
    // Sessions silent for longer than a session interval are over; the others go on.
    let resumed = store
        .resume_sessions(
            &node_id,
            clock.now_ms(),
            secs_to_ms(config.sip.session_expires.max(config.sip.min_se)),
        )
        .await?;
    if resumed.closed_count() > 0 {
        tracing::warn!(
            closed = resumed.closed_count(),
            "closed sessions a previous run left open and silent"
        );
    }
    let directory = DirectoryCache::load(&store).await?;
    let refresh = directory.spawn_refresh(
        store.clone(),
        Duration::from_millis(config.sip.cache_refresh_ms.max(100)),
    );
    let (sessions, writer) = SessionWriter::spawn_with(store.clone(), config.sessions.writer_queue);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AppError::Bind {
            what: format!("HTTP listener {}", config.http.listen),
            source,
        })?;
    let http = listener.local_addr().map_err(|source| AppError::Bind {
        what: "HTTP listener".into(),
        source,
    })?;
    let token_config = TokenConfig::from_config(config, http)?;
    let tokens = TokenIssuer::load(&store, token_config, clock.now_ms()).await?;
    let key_reload = spawn_key_reload(tokens.clone(), store.clone(), clock.clone());

    let (inbound_tx, inbound_rx) = mpsc::channel(16 * 1024);
    let limits = StreamLimits {
        max_connections: config.sip.tcp_max_connections,
        idle: Duration::from_secs(config.sip.tcp_idle_secs.max(1)),
    };
    let tls = tls_acceptor(config)?;
    let transports = Transports::bind(&config.sip.listen, limits, tls, inbound_tx)
        .await
        .map_err(|source| AppError::Bind {
            what: "SIP listeners".into(),
            source,
        })?;
    let bound = transports.bound().to_vec();
    let local = local_identity(config, &bound, &node_id);
    tracing::info!(host = %local.host, "Via and Record-Route name this relay as");

    let (nonce_keys, nonce_reload) = node::nonce_keys(config, &store, clock.clone()).await?;
    let algorithms = config
        .sip
        .digest_algorithms
        .iter()
        .map(|a| {
            a.parse::<Algorithm>()
                .ok()
                .filter(|alg| *alg != Algorithm::Sha512_256)
                .ok_or_else(|| {
                    AppError::Config(format!(
                        "[sip] digest_algorithms: `{a}` is not MD5 or SHA-256"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(AppError::Config("[sip] digest_algorithms is empty".into()));
    }
    let auth = Authenticator::new(AuthSettings {
        realm: config.sip.domain.clone(),
        nonce_keys,
        nonce_lifetime_ms: secs_to_ms(config.sip.nonce_lifetime_secs),
        failure_limit: config.sip.auth_failure_limit,
        user_failure_limit: config.sip.auth_user_failure_limit,
        nc_cache_entries: NC_CACHE_ENTRIES,
        failure_window_ms: secs_to_ms(config.sip.auth_failure_window_secs),
        block_ms: secs_to_ms(config.sip.auth_block_secs),
        algorithms,
    });
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let draining = Draining::default();
    let calls = (sessions.clone(), draining.clone());
    readiness.set_calls_check(move || {
        if calls.1.is_on() {
            Some("the node is draining for a stop".to_string())
        } else {
            calls.0.trouble().map(|t| t.to_string())
        }
    });
    let (live_tx, live) = watch::channel(0);
    let api_state = ApiState::new(ApiParts {
        store: store.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        tokens: Some(tokens.clone()),
        settings: ApiSettings {
            operator_key: config.api.operator_key.clone(),
            default_realm: config.sip.domain.clone(),
            default_domain: config.sip.domain.clone(),
            rate_limit: RateLimit {
                per_second: config.api.rate_limit_per_second,
                burst: config.api.rate_limit_burst,
            },
            key_grace_ms: secs_to_ms(config.api.key_grace_secs),
            secret_grace_ms: secs_to_ms(config.webhooks.secret_grace_secs),
        },
    });
    let webhooks = Dispatcher::new(
        store.clone(),
        clock.clone(),
        DispatcherSettings {
            max_age_ms: secs_to_ms(config.webhooks.max_age_secs),
            ..DispatcherSettings::default()
        },
    )
    .spawn();
    let purge = spawn_idempotency_purge(store.clone(), clock.clone());
    let page_clock = clock.clone();
    let core = Core::new(
        CoreSettings {
            node_id: node_id.clone(),
            t1: Duration::from_millis(config.sip.t1_ms.max(1)),
            timer_c: Duration::from_secs(config.sip.timer_c_secs.max(1)),
            challenge: match config.sip.challenge {
                ChallengeStyle::Proxy => ChallengeKind::Proxy,
                ChallengeStyle::Www => ChallengeKind::Www,
            },
            local,
            store_timeout: Duration::from_millis(config.sessions.store_timeout_ms.max(1)),
            life: LifeSettings {
                session_expires: u32::try_from(config.sip.session_expires).unwrap_or(u32::MAX),
                min_se: u32::try_from(config.sip.min_se).unwrap_or(u32::MAX),
                max_duration: (config.sessions.max_duration_secs > 0)
                    .then(|| Duration::from_secs(config.sessions.max_duration_secs)),
                checkpoint: Duration::from_secs(config.sessions.checkpoint_secs.max(1)),
            },
        },
        CoreParts {
            transports,
            directory: directory.clone(),
            auth,
            sessions,
            store: store.clone(),
            clock,
            tokens,
            metrics: metrics.clone(),
            draining: draining.clone(),
            live: live_tx,
        },
    );
    let core_ready = readiness.clone();
    let core_task = tokio::spawn(async move {
        core.run(resumed, inbound_rx).await;
        core_ready.set_sip_ready(false);
    });
    readiness.set_sip_ready(true);

    let websocket = bound.iter().find_map(|l| match l.protocol {
        Protocol::Ws => Some(("ws", l.addr.port())),
        Protocol::Wss => Some(("wss", l.addr.port())),
        _ => None,
    });
    let pages = crate::web::router(crate::web::WebSettings {
        store: store.clone(),
        directory: directory.clone(),
        clock: page_clock,
        failures: Default::default(),
        domain: config.sip.domain.clone(),
        websocket,
    });
    let router = api::router(api_state)
        .merge(pages)
        .into_make_service_with_connect_info::<SocketAddr>();
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    Ok(Relay {
        sip: bound,
        http,
        store,
        metrics,
        directory,
        tasks: [core_task, refresh, key_reload, http_task, webhooks, purge]
            .into_iter()
            .chain(nonce_reload)
            .collect(),
        writer,
        draining,
        live,
    })
}

/// The TLS acceptor for `wss:` listeners, from `[sip] tls_cert` and `tls_key` (PEM).
fn tls_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, AppError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.sip.tls_cert, &config.sip.tls_key) else {
        return Ok(None);
    };
    let bad =
        |what: &str, e: &dyn std::fmt::Display| AppError::Config(format!("[sip] {what}: {e}"));
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("tls_cert", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key", &e))?;
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("tls", &e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| bad("tls_cert", &e))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// Seconds from the configuration as milliseconds, saturating.
fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Deletes idempotency records past their 24 hours, once an hour.
fn spawn_idempotency_purge(store: Store, clock: SharedClock) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match store.purge_idempotency_keys(clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency records deleted"),
                Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
            }
        }
    })
}

/// Picks up key rotations made by another process or node (and drops expired retired keys
/// from the published set) once a minute.
fn spawn_key_reload(tokens: TokenIssuer, store: Store, clock: SharedClock) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = tokens.reload(&store, clock.now_ms()).await {
                tracing::warn!(error = %e, "signing key reload failed");
            }
        }
    })
}

/// The host other parties reach this relay at: configured, the bound IP, or (bound to a
/// wildcard) the address this machine uses for outgoing traffic.
fn local_identity(config: &Config, bound: &[Listen], node_id: &str) -> LocalIdentity {
    let port = |p: Protocol| {
        bound
            .iter()
            .find(|l| l.protocol == p)
            .map(|l| l.addr.port())
    };
    let bound_ip = bound.first().map(|l| l.addr.ip());
    let host = match (&config.sip.public_host, bound_ip) {
        (Some(h), _) => h.clone(),
        (None, Some(ip)) if !ip.is_unspecified() => ip.to_string(),
        _ => outgoing_ip().to_string(),
    };
    let mut hosts: Vec<String> = bound.iter().map(|l| l.addr.ip().to_string()).collect();
    hosts.push(host.clone());
    if bound_ip.is_some_and(|ip| ip.is_unspecified()) {
        hosts.push("127.0.0.1".into());
        hosts.push(outgoing_ip().to_string());
    }
    LocalIdentity {
        host,
        ports: [Protocol::Udp, Protocol::Tcp, Protocol::Ws, Protocol::Wss]
            .into_iter()
            .filter_map(|p| Some((p, port(p)?)))
            .collect(),
        hosts,
        domain: config.sip.domain.clone(),
        node: branch_safe(node_id),
    }
}

/// The source address the kernel would pick for outgoing traffic (no packet is sent).
fn outgoing_ip() -> IpAddr {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
