//! Where the tests find the tools `scripts/install-api-test-tools.sh` installs (the Python
//! virtualenv, npm packages, Chromium), and what a test does when one is missing: fail, in CI
//! and on a laptop alike (`scripts/test.sh` installs them all).

use std::path::{Path, PathBuf};

/// The script that installs the SDK and API-test tools (the Python virtualenv, npm packages).
const API_TOOLS: &str = "scripts/install-api-test-tools.sh";
/// The script that installs the browser and interop tools (node packages, Chromium).
const BROWSER_TOOLS: &str = "scripts/install-browser-test-tools.sh";

/// `what` is not installed: the test fails, saying how to install it.
pub fn missing(what: &str) -> ! {
    missing_from(what, API_TOOLS)
}

/// `path`, which must exist; otherwise the test fails ([`missing`]).
pub fn require(path: PathBuf) -> PathBuf {
    present(path, API_TOOLS)
}

fn missing_from(what: &str, installer: &str) -> ! {
    panic!("{what} is missing: run scripts/test.sh (or {installer})");
}

fn present(path: PathBuf, installer: &str) -> PathBuf {
    if !path.exists() {
        missing_from(&path.display().to_string(), installer);
    }
    path
}

/// The virtualenv with the Python tools (`$TOLLGATE_SDK_VENV`, default
/// `~/.cache/tollgate-sdk-venv`).
pub fn venv() -> PathBuf {
    match std::env::var_os("TOLLGATE_SDK_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tollgate-sdk-venv"),
    }
}

/// `path`, which must exist: the browser and interop tests fail (never skip) without their
/// tools, which `scripts/install-browser-test-tools.sh` installs.
pub fn must_exist(path: PathBuf) -> PathBuf {
    present(path, BROWSER_TOOLS)
}

/// `node` on the PATH (or `$TOLLGATE_NODE`), and the npm packages of `tests/browser`.
pub fn node_with_browser_packages() -> PathBuf {
    let node = std::env::var_os("TOLLGATE_NODE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("node"))
                    .find(|n| n.exists())
            })
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    must_exist(browser_dir().join("node_modules/playwright-core"));
    must_exist(browser_dir().join("node_modules/jssip"));
    must_exist(node)
}

/// `tests/browser`: the Node scripts and their packages.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Debian's Chromium (or `$TOLLGATE_CHROMIUM`).
pub fn chromium() -> PathBuf {
    must_exist(
        std::env::var_os("TOLLGATE_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
    )
}
