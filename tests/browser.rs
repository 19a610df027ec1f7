//! The demo in a real browser: `tollgate demo` started in-process on port 0 (relay, two
//! reference shops, the demo data), then `tests/browser/demo.mjs` (playwright-core driving
//! Debian's headless Chromium) walks through it as a newcomer would — see that script for
//! the steps. Screenshots of each step are written to `$CARGO_TARGET_TMPDIR/browser-demo/`.
//!
//! Tools: node, Chromium and `tests/browser/node_modules` (scripts/install-browser-test-tools.sh).
//! Without them the test fails.

mod common;

use std::sync::Arc;

use common::tools::{browser_dir, chromium, node_with_browser_packages};
use tollgate::clock::SystemClock;
use tollgate::config::Config;
use tollgate::demo::{self, DemoSettings, DEMO_OPERATOR_KEY};

/// Every demo listener on port 0.
fn port_zero() -> DemoSettings {
    let any = "127.0.0.1:0".parse().unwrap();
    DemoSettings {
        http: any,
        sip_udp: any,
        sip_ws: any,
        shops: [(any, any), (any, any)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_calls_buys_leaves_and_reads_the_bill_in_the_browser() {
    let node = node_with_browser_packages();
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let settings = port_zero();
    let mut base = Config::default();
    base.sip.domain = "portal.com".into();
    let config = demo::config(base, dir.path(), &settings);
    let running = demo::start(&config, &settings, Arc::new(SystemClock))
        .await
        .expect("the demo starts");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-demo");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();

    let out = tokio::process::Command::new(node)
        .current_dir(browser_dir())
        .arg("demo.mjs")
        .arg(running.client_url())
        .arg(running.console_url())
        .arg(DEMO_OPERATOR_KEY)
        .arg(&running.shops[0].landing_url)
        .arg(&out_dir)
        .arg(chromium)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("browser demo: ok"),
        "demo.mjs failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let shots = std::fs::read_dir(&out_dir).unwrap().count();
    assert!(shots >= 8, "{shots} screenshots in {}", out_dir.display());
    println!("screenshots: {}", out_dir.display());
    running.shutdown().await;
}
