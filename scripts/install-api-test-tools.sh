#!/usr/bin/env bash
# Installs what tests/sdk.rs and tests/docs_ui.rs run, beyond cargo:
# - Debian's chromium (headless browser for the docs UI test);
# - in a virtualenv at $TOLLGATE_SDK_VENV (default ~/.cache/tollgate-sdk-venv):
#   openapi-python-client (PyPI; the generated client's own dependencies, httpx, attrs and
#   python-dateutil, come with it), playwright (PyPI; drives the system chromium, no browser
#   download) and pyjwt[crypto] (PyPI; tests/token_e2e.rs verifies relay tokens with it);
# - openapi-typescript and typescript (npm), pinned by tests/sdk/package-lock.json, in
#   tests/sdk/node_modules.
# Idempotent. Under CI=true those tests fail when any of this is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

venv="${TOLLGATE_SDK_VENV:-$HOME/.cache/tollgate-sdk-venv}"
pyjwt_version="2.15.1"
if [ ! -x "$venv/bin/openapi-python-client" ] || [ ! -x "$venv/bin/playwright" ] \
  || ! "$venv/bin/python" -c "import sys, jwt, cryptography; sys.exit(jwt.__version__ != '$pyjwt_version')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "openapi-python-client==0.29.1" "playwright==1.65.2" "pyjwt[crypto]==$pyjwt_version"
fi
"$venv/bin/openapi-python-client" --version
"$venv/bin/python" -c "import jwt; print('pyjwt', jwt.__version__)"

(cd tests/sdk && npm ci --no-audit --no-fund --silent)
tests/sdk/node_modules/.bin/openapi-typescript --version
