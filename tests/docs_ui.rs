//! The docs UI at `/docs` renders in headless Chromium with no network beyond the relay:
//! `tests/sdk/docs_ui_check.py` (Playwright driving Debian's chromium) refuses every request to
//! another host, waits for Swagger UI to show every operation of the OpenAPI document, and
//! saves a full-page screenshot, whose path this test prints.
//!
//! Tools: `scripts/install-api-test-tools.sh` (chromium, and playwright in the virtualenv at
//! `$TOLLGATE_SDK_VENV`, default `~/.cache/tollgate-sdk-venv`). Without them the test fails, in
//! CI and on a laptop alike (never a skip).

mod common;

use std::path::Path;

use common::relay::{start_relay, Seed};
use common::tools::{chromium, require, venv};

/// How many operations the document has (each is one block in Swagger UI).
fn operation_count() -> usize {
    let doc: serde_json::Value = serde_json::from_str(&tollgate::api::openapi_json()).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum()
}

#[tokio::test]
async fn the_docs_ui_renders_every_operation_offline() {
    let chromium = chromium();
    let python = require(venv().join("bin/python"));
    require(venv().join("bin/playwright"));

    let relay = start_relay(Seed {
        app_servers: vec![],
    })
    .await;
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tollgate-docs-ui.png");
    let _ = std::fs::remove_file(&screenshot);
    // The relay runs on this test's runtime: wait for the browser without blocking it.
    let out = tokio::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/docs_ui_check.py"))
        .arg(format!("http://{}", relay.relay.http))
        .arg(&chromium)
        .arg(&screenshot)
        .arg(operation_count().to_string())
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docs_ui_check.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("docs ui: ok"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    println!("docs UI screenshot: {}", screenshot.display());
}
