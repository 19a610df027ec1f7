//! Interop over SIP over WebSocket (RFC 7118) with a third-party library: JsSIP in Node
//! (`tests/browser/jssip.mjs`) registers with the demo's relay, calls `wine@portal.com`
//! (answered by a reference shop), gets the URL and token, and hangs up. The relay must then
//! hold one terminated session with a duration.
//!
//! Tools: node and `tests/browser/node_modules` (scripts/install-browser-test-tools.sh);
//! without them the test fails.

mod common;

use common::demo::start_demo;
use common::tools::{browser_dir, node_with_browser_packages};
use tollgate::config::Protocol;
use tollgate::store::{SessionFilter, SessionState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_registers_calls_and_hangs_up_through_the_relay() {
    let node = node_with_browser_packages();
    let (running, _dir) = start_demo().await;
    let ws = running.relay.sip_addr(Protocol::Ws).unwrap();

    let out = tokio::process::Command::new(node)
        .current_dir(browser_dir())
        .args([
            "jssip.mjs",
            &format!("ws://{ws}"),
            "portal.com",
            "alice",
            "secret",
        ])
        .arg("wine@portal.com")
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("jssip: ok"),
        "jssip.mjs failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("jssip: ended by local"), "{stdout}");

    let store = running.relay.store.clone();
    running.shutdown().await;
    let sessions = store
        .list_sessions(SessionFilter {
            state: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].state, SessionState::Terminated);
    assert_eq!(sessions[0].caller, "alice");
    assert!(sessions[0].duration_ms.is_some());
}
