#!/usr/bin/env bash
# Installs what tests/browser.rs and tests/jssip.rs run, beyond cargo:
# - Debian's chromium, nodejs and npm;
# - playwright-core, jssip and ws (npm), pinned by tests/browser/package-lock.json, in
#   tests/browser/node_modules. playwright-core drives the system chromium: no browser download.
# Idempotent. Those tests fail when any of this is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

(cd tests/browser && npm ci --no-audit --no-fund --silent)
node --version
chromium --version
