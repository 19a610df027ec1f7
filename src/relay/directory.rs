//! The per-node cache of users and services the relay reads on every message.
//!
//! The whole directory is loaded from the store into an immutable [`Snapshot`] and swapped in
//! atomically, so the message path never waits on the database or a lock. A background task
//! reloads it every `cache_refresh_ms`; a change made through the admin CLI is seen by a running
//! relay within that period. Application-server URIs are resolved to socket addresses here,
//! once per reload, never on the message path.

use crate::config::Protocol;
use crate::store::{ForkMode, Store, StoreError, UserCredentials};
use arc_swap::ArcSwap;
use rsipstack::sip::{Host, Param, Uri};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where one application server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The application server's id: the audience of the session tokens minted for it.
    pub id: String,
    /// The application server's name in the directory.
    pub name: String,
    /// The id of the service this target delivers (recorded on the session).
    pub service_id: String,
    /// Its SIP URI; a URI with a user part also becomes the forwarded Request-URI.
    pub uri: Uri,
    /// Where requests go: the first address its host resolved to.
    pub addr: SocketAddr,
    /// Every address its host resolved to (same port): responses are accepted from any of
    /// them, so an application server behind a name with several addresses may answer from
    /// whichever one it likes.
    pub sources: Vec<SocketAddr>,
    pub protocol: Protocol,
}

/// How a service is reached: its application servers in order, and how to fork to them.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub fork_mode: ForkMode,
    pub targets: Vec<Target>,
}

/// One consistent view of users and services.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: HashMap<String, UserCredentials>,
    /// `name@domain` (lowercase) → how it is delivered.
    pub services: HashMap<String, Route>,
}

impl Snapshot {
    pub fn service(&self, name: &str, domain: &str) -> Option<&Route> {
        let key = format!("{}@{}", name, domain).to_ascii_lowercase();
        self.services.get(&key)
    }
}

/// The cache; cheap to share between tasks.
pub struct DirectoryCache {
    current: ArcSwap<Snapshot>,
}

impl DirectoryCache {
    /// Loads the first snapshot; fails when the database cannot be read.
    pub async fn load(store: &Store) -> Result<Arc<DirectoryCache>, StoreError> {
        let snapshot = build_snapshot(store).await?;
        Ok(Arc::new(DirectoryCache {
            current: ArcSwap::from_pointee(snapshot),
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reloads now.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let snapshot = build_snapshot(store).await?;
        self.current.store(Arc::new(snapshot));
        Ok(())
    }

    /// Reloads every `period` until the task is aborted.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        store: Store,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = this.refresh(&store).await {
                    tracing::warn!(error = %e, "directory refresh failed; keeping the previous one");
                }
            }
        })
    }
}

async fn build_snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let directory = store.load_directory().await?;
    let mut services = HashMap::with_capacity(directory.services.len());
    for (key, service) in directory.services {
        let mut targets = Vec::with_capacity(service.app_servers.len());
        for server in service.app_servers {
            match resolve(&server.uri).await {
                Some((uri, sources, protocol)) => targets.push(Target {
                    id: server.id,
                    name: server.name,
                    service_id: service.id.clone(),
                    uri,
                    addr: sources[0],
                    sources,
                    protocol,
                }),
                None => tracing::warn!(
                    app_server = %server.name, uri = %server.uri,
                    "cannot resolve application server; it gets no requests until it resolves"
                ),
            }
        }
        let route = Route {
            fork_mode: service.fork_mode,
            targets,
        };
        services.insert(key.to_ascii_lowercase(), route);
    }
    Ok(Snapshot {
        users: directory.users,
        services,
    })
}

/// Resolves a SIP URI to the socket addresses (at least one) and transport used to reach it.
pub async fn resolve(uri: &str) -> Option<(Uri, Vec<SocketAddr>, Protocol)> {
    let parsed = Uri::try_from(uri).ok()?;
    let protocol = uri_protocol(&parsed);
    let port = parsed.host_with_port.port.map(u16::from).unwrap_or(5060);
    let addrs: Vec<SocketAddr> = match &parsed.host_with_port.host {
        Host::IpAddr(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Domain(domain) => tokio::net::lookup_host((domain.to_string(), port))
            .await
            .ok()?
            .collect(),
    };
    (!addrs.is_empty()).then_some((parsed, addrs, protocol))
}

/// The transport a URI asks for (`;transport=tcp`, `ws`, `wss`), UDP otherwise.
pub fn uri_protocol(uri: &Uri) -> Protocol {
    uri.params
        .iter()
        .find_map(|p| match p {
            Param::Transport(t) => Some(Protocol::from_uri_param(&t.to_string())),
            _ => None,
        })
        .unwrap_or(Protocol::Udp)
}
