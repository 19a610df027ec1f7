//! The demo in a real browser: `tollgate demo` started in-process on port 0 (relay, two
//! reference shops, the demo data), then `tests/browser/demo.mjs` (playwright-core driving
//! Debian's headless Chromium) walks through it as a newcomer would — see that script for
//! the steps. Screenshots of each step are written to `$CARGO_TARGET_TMPDIR/browser-demo/`.
//!
//! Tools: node, Chromium and `tests/browser/node_modules` (scripts/install-browser-test-tools.sh).
//! Without them the test fails.

mod common;

use common::demo::start_demo;
use common::tools::{browser_dir, chromium, node_with_browser_packages};
use tollgate::demo::DEMO_OPERATOR_KEY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_calls_buys_leaves_and_reads_the_bill_in_the_browser() {
    let node = node_with_browser_packages();
    let chromium = chromium();
    let (running, _dir) = start_demo().await;
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
