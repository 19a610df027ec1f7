#!/usr/bin/env bash
# The whole test suite, with every tool it needs installed first, on both storage engines.
# Usage: scripts/test.sh [extra cargo test arguments]
#
# - Installs sipp (sip-tester), PostgreSQL, Chromium and the SDK/browser test tools when missing.
# - PostgreSQL: TOLLGATE_TEST_POSTGRES_URL=postgres://… names a server to create test databases
#   on; without it a throwaway cluster is started from Debian's `postgresql` package (initdb in
#   a temporary directory, a free port) and stopped afterwards.
# - Runs `cargo test --workspace` (SQLite for the relay-level tests, both engines for the
#   storage tests), then the relay-level tests again on PostgreSQL (TOLLGATE_TEST_ENGINE).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The SDK generators and the browser tests/sdk.rs and tests/docs_ui.rs run.
scripts/install-api-test-tools.sh
# Chromium, node and the npm packages tests/browser.rs and tests/jssip.rs run.
scripts/install-browser-test-tools.sh

if [ -z "${TOLLGATE_TEST_POSTGRES_URL:-}" ]; then
  pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
  pg_dir=$(mktemp -d)
  pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # initdb refuses to run as root: the cluster belongs to the `postgres` user then.
  if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$pg_dir"; else as_pg=(); fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-h 127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off" start >/dev/null
  trap '"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
  "${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres test
  export TOLLGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/test"
  echo "throwaway PostgreSQL at $TOLLGATE_TEST_POSTGRES_URL"
fi

cargo test --workspace "$@"

# The relay-level tests once more, every relay on PostgreSQL.
relay_tests=()
for t in api billing change_transfer fork handover lose_nothing sip_calls sip_flows timers \
  sipp_scenarios token_e2e trust_wire websocket; do
  relay_tests+=(--test "$t")
done
TOLLGATE_TEST_ENGINE=postgres cargo test "${relay_tests[@]}" "$@"
