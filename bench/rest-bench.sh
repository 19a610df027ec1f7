#!/usr/bin/env bash
# REST read throughput: GET /v1/sessions/{id} (operator key, one SQLite read) against GET /healthz
# (no key, no database) on the same relay in the same run, with wrk (Debian package `wrk`).
# The relay is pinned to CPU 1, wrk to CPU 0.
# Usage: bench/rest-bench.sh [SECONDS]      Environment: TOLLGATE (binary), CONNECTIONS (16)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-10}"
CONNS="${CONNECTIONS:-16}"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi
WORK="$(mktemp -d)"
KEY="bench-operator-key-0123456789"
cat > "$WORK/tollgate.toml" <<TOML
[database]
url = "sqlite://$WORK/bench.db"
[sip]
listen = ["udp:127.0.0.1:5062"]
digest_algorithms = ["MD5", "SHA-256"]
[http]
listen = "127.0.0.1:8089"
[api]
operator_key = "$KEY"
rate_limit_per_second = 0
TOML
tg() { "$TOLLGATE" --config "$WORK/tollgate.toml" "$@"; }
tg user add alice --password secret >/dev/null
tg appserver add uas --uri sip:127.0.0.1:5092 >/dev/null
tg service add service1@portal.com --appserver uas >/dev/null
TOLLGATE_LOG=error taskset -c 1 "$TOLLGATE" --config "$WORK/tollgate.toml" serve > "$WORK/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "ready: http" "$WORK/serve.log" && break; sleep 0.1; done
# One real call makes the session to read.
SC="$ROOT/tests/scenarios"
sipp -sf "$SC/uas.xml" -i 127.0.0.1 -p 5092 -m 1 -cp 8892 -mp 6100 -nostdin >/dev/null 2>&1 &
UAS=$!
timeout 30 sipp 127.0.0.1:5062 -sf "$SC/uac_auth.xml" -s service1 -i 127.0.0.1 -p 5082 -m 1 -cp 8893 -mp 6200 -nostdin >/dev/null 2>&1
wait $UAS || true
ID=$(tg sessions list --json | grep -m1 '"id"' | sed 's/.*"id": "\(.*\)".*/\1/')
echo "session $ID"
run() { taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
health=$(run "http://127.0.0.1:8089/healthz")
session=$(run -H "Authorization: Bearer $KEY" "http://127.0.0.1:8089/v1/sessions/$ID")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:8089/v1/sessions/$ID")
echo "GET /healthz              ${health} req/s"
echo "GET /v1/sessions/{id}     ${session} req/s (status $code)"
awk -v a="$session" -v b="$health" 'BEGIN { printf "ratio session read / healthz: %.2f\n", a / b }'
