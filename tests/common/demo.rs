//! `tollgate demo` in-process with every listener on port 0, on a fresh data directory.

use std::sync::Arc;

use tempfile::TempDir;
use tollgate::clock::SystemClock;
use tollgate::config::Config;
use tollgate::demo::{self, Demo, DemoSettings};

/// A running demo (domain `portal.com`) and its data directory.
pub async fn start_demo() -> (Demo, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let any = "127.0.0.1:0".parse().unwrap();
    let settings = DemoSettings {
        http: any,
        sip_udp: any,
        sip_ws: any,
        shops: [(any, any), (any, any)],
    };
    let mut base = Config::default();
    base.sip.domain = "portal.com".into();
    let config = demo::config(base, dir.path(), &settings);
    let running = demo::start(&config, &settings, Arc::new(SystemClock))
        .await
        .expect("the demo starts");
    (running, dir)
}
