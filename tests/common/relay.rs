//! Starts a real relay on port 0 with a fresh SQLite database for one test.

use super::db::{create_postgres_database, test_database_url};
use super::raw::{Client, RawTcp, RawUdp};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use tempfile::TempDir;
use tollgate::app::{self, Relay};
use tollgate::clock::{SharedClock, SystemClock};
use tollgate::config::{Config, Protocol};
use tollgate::store::{ForkMode, SessionFilter, SessionRecord, Store};

pub const DOMAIN: &str = "portal.com";

/// The operator key of every test relay (`[api] operator_key`); override it in the config
/// passed to [`start_relay_with`].
pub const OPERATOR_KEY: &str = "test-operator-key-0123456789";

/// A running relay and the database behind it.
pub struct TestRelay {
    pub relay: Relay,
    pub store: Store,
    pub dir: TempDir,
}

impl TestRelay {
    pub fn udp(&self) -> SocketAddr {
        self.relay.sip_addr(Protocol::Udp).expect("udp listener")
    }
    pub fn tcp(&self) -> SocketAddr {
        self.relay.sip_addr(Protocol::Tcp).expect("tcp listener")
    }
    pub fn addr(&self, protocol: Protocol) -> SocketAddr {
        self.relay.sip_addr(protocol).expect("listener")
    }
}

/// The directory a test starts with: user alice/secret and `service1@portal.com` served by
/// application servers at the given URIs (named shop1, shop2, …).
pub struct Seed {
    pub app_servers: Vec<String>,
}

pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.database.url = test_database_url(dir.path());
    // The node keeps its generated id here (not in the working directory).
    config.data_dir = Some(dir.path().to_path_buf());
    config.sip.domain = DOMAIN.into();
    config.sip.listen = vec![
        "udp:127.0.0.1:0".parse().unwrap(),
        "tcp:127.0.0.1:0".parse().unwrap(),
    ];
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.api.operator_key = Some(tollgate::config::Secret::new(OPERATOR_KEY));
    // Some tests run under tokio's paused clock, which jumps ahead while SQLite works on its
    // own thread: waits on the database must not time out there. The tests of an unavailable
    // store set their own bounds.
    config.database.acquire_timeout_secs = 3600;
    config.sessions.store_timeout_ms = 3_600_000;
    config
}

pub async fn start_relay(seed: Seed) -> TestRelay {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&dir);
    start_relay_with(seed, config, dir).await
}

pub async fn start_relay_with(seed: Seed, config: Config, dir: TempDir) -> TestRelay {
    start_forking_relay_with(seed, ForkMode::FirstAnswer, config, dir).await
}

/// A relay whose `service1` forks to its application servers as `mode` says.
pub async fn start_forking_relay(seed: Seed, mode: ForkMode) -> TestRelay {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&dir);
    start_forking_relay_with(seed, mode, config, dir).await
}

/// Like [`start_forking_relay`], timing sessions on `clock`.
pub async fn start_forking_relay_on(seed: Seed, mode: ForkMode, clock: SharedClock) -> TestRelay {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(&dir);
    launch(seed, mode, config, dir, clock).await
}

/// A relay on `config`, timing sessions on `clock`.
pub async fn start_relay_on(
    seed: Seed,
    clock: SharedClock,
    config: Config,
    dir: TempDir,
) -> TestRelay {
    launch(seed, ForkMode::FirstAnswer, config, dir, clock).await
}

pub async fn start_forking_relay_with(
    seed: Seed,
    mode: ForkMode,
    config: Config,
    dir: TempDir,
) -> TestRelay {
    launch(seed, mode, config, dir, Arc::new(SystemClock)).await
}

async fn launch(
    seed: Seed,
    mode: ForkMode,
    config: Config,
    dir: TempDir,
    clock: SharedClock,
) -> TestRelay {
    create_postgres_database(&config.database.url).await;
    let store = Store::connect(&config.database.url).await.expect("store");
    store
        .add_user("alice", DOMAIN, "secret")
        .await
        .expect("user");
    let mut names = Vec::new();
    for (i, uri) in seed.app_servers.iter().enumerate() {
        let name = format!("shop{}", i + 1);
        store.add_app_server(&name, uri).await.expect("app server");
        names.push(name);
    }
    if !names.is_empty() {
        store
            .add_service(&format!("service1@{DOMAIN}"), &names, mode)
            .await
            .expect("service");
    }
    let relay = app::start(&config, clock).await.expect("relay starts");
    TestRelay { relay, store, dir }
}

/// A UDP and TCP port that is free right now on 127.0.0.1, for a peer that binds it later.
///
/// It is taken below the kernel's ephemeral range: relays and clients started after the pick
/// bind port 0, which draws from that range, so they cannot take it in the meantime (a relay
/// that did once answered its own forwarded INVITE with 482). A port is handed out once per
/// test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000, ephemeral_low.max(10_000 + 2_000));
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), low..high);
        if handed_out.contains(&port) {
            continue;
        }
        let bound = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if bound {
            handed_out.push(port);
            return port;
        }
    }
}

/// Stops the relay (the session writer flushes) and returns every session row, newest first.
pub async fn sessions_after_shutdown(relay: TestRelay) -> Vec<SessionRecord> {
    let TestRelay { relay, store, dir } = relay;
    relay.shutdown().await;
    let rows = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 1000,
        })
        .await
        .expect("list sessions");
    drop(dir);
    rows
}

/// A client of `relay` over `protocol` (UDP or TCP), and the relay address it talks to.
pub async fn client_for(relay: &TestRelay, protocol: Protocol) -> (Client, SocketAddr) {
    client_from(relay, protocol, IpAddr::from([127, 0, 0, 1])).await
}

/// Like [`client_for`], from a port of `ip` (another loopback address such as 127.0.0.2).
pub async fn client_from(
    relay: &TestRelay,
    protocol: Protocol,
    ip: IpAddr,
) -> (Client, SocketAddr) {
    let to = relay.addr(protocol);
    let client = match protocol {
        Protocol::Tcp => Client::Tcp(RawTcp::connect_from(ip, to).await),
        _ => Client::Udp(RawUdp::bind_on(SocketAddr::new(ip, 0)).await),
    };
    (client, to)
}
