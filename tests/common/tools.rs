//! Where the tests find the tools `scripts/install-api-test-tools.sh` installs (the Python
//! virtualenv, npm packages, Chromium), and what a test does when one is missing: fail, in CI
//! and on a laptop alike (`scripts/test.sh` installs them all).

use std::path::{Path, PathBuf};

/// `what` is not installed: the test fails, saying how to install it.
pub fn missing<T>(what: &str) -> Option<T> {
    panic!("{what} is missing: run scripts/test.sh (or scripts/install-api-test-tools.sh)");
}

/// `path` if it exists; otherwise [`missing`].
pub fn require(path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        Some(path)
    } else {
        missing(&path.display().to_string())
    }
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
