#!/usr/bin/env bash
# The whole test suite, with every tool it needs installed first.
# Usage: scripts/test.sh [extra cargo test arguments]
# Set TOLLGATE_TEST_POSTGRES_URL=postgres://… to run the storage tests on PostgreSQL too.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# The SDK generators and the browser tests/sdk.rs and tests/docs_ui.rs run.
scripts/install-api-test-tools.sh

cargo test --workspace "$@"
