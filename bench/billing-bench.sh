#!/usr/bin/env bash
# Billing throughput on a release build, each figure beside GET /healthz measured on the same
# relay in the same run (shared machines: only ratios mean something):
#   1. POST /v1/sessions/{id}/charges with 64 concurrent clients (wrk, one fresh
#      Idempotency-Key per request), on SQLite (WAL, synchronous=FULL: every acknowledged
#      charge is on disk) and on PostgreSQL;
#   2. GET /v1/users/{id}/statement for the user, once the ledger holds >= 100 000 entries
#      (time of the whole request, JSON, over loopback, median of 5).
# The relay is pinned to CPU 1, wrk to CPU 0.
# Usage: bench/billing-bench.sh [SECONDS]
# Environment: TOLLGATE (binary; else cargo build --release), CONNECTIONS (64),
#   PG_URL (a PostgreSQL server, default postgres://postgres@127.0.0.1:5432/postgres; the script
#   creates and drops the database tollgate_bench on it; PG_URL=none skips PostgreSQL).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-10}"
CONNS="${CONNECTIONS:-64}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi
WORK="$(mktemp -d)"
KEY="bench-operator-key-0123456789"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT

# wrk script: POST a charge with a key unique across threads and requests.
cat > "$WORK/charge.lua" <<'LUA'
local counter = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) prefix = "bench-" .. tid .. "-" .. os.time() .. "-" end
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", nil, nil,
    '{"description":"bench item","unit_amount":120,"quantity":1,"currency":"EUR"}')
end
LUA

run() { taskset -c 0 wrk -t2 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "NON2XX " $4 > "/dev/stderr"}'; }

bench_engine() { # NAME DATABASE_URL
  local name=$1 url=$2
  cat > "$WORK/tollgate.toml" <<TOML
[database]
url = "$url"
[sip]
listen = ["udp:127.0.0.1:5062"]
digest_algorithms = ["MD5", "SHA-256"]
[http]
listen = "127.0.0.1:8089"
[api]
operator_key = "$KEY"
rate_limit_per_second = 0
[billing]
charge_grace_secs = 86400
TOML
  tg() { "$TOLLGATE" --config "$WORK/tollgate.toml" "$@"; }
  tg user add alice --password secret >/dev/null
  tg appserver add uas --uri sip:127.0.0.1:5092 --json > "$WORK/shop.json"
  tg service add service1@portal.com --appserver uas >/dev/null
  tg tariff set service1@portal.com --currency EUR --per-minute 120 --increment 1 >/dev/null
  local shop_key
  shop_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WORK/shop.json")
  TOLLGATE_LOG=error taskset -c 1 "$TOLLGATE" --config "$WORK/tollgate.toml" serve > "$WORK/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do grep -q "ready: http" "$WORK/serve.log" && break; sleep 0.1; done
  # One real call makes the session to charge.
  local SC="$ROOT/tests/scenarios"
  sipp -sf "$SC/uas.xml" -i 127.0.0.1 -p 5092 -m 1 -cp 8892 -mp 6100 -nostdin >/dev/null 2>&1 &
  local UAS=$!
  timeout 30 sipp 127.0.0.1:5062 -sf "$SC/uac_auth.xml" -s service1 -i 127.0.0.1 -p 5082 -m 1 -cp 8893 -mp 6200 -nostdin >/dev/null 2>&1
  wait $UAS || true
  local sid uid
  sid=$(tg sessions list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  uid=$(curl -sf -H "Authorization: Bearer $KEY" http://127.0.0.1:8089/v1/users | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
  local health charges
  health=$(run "http://127.0.0.1:8089/healthz")
  charges=$(run -s "$WORK/charge.lua" -H "Authorization: Bearer $shop_key" -H "Content-Type: application/json" \
    "http://127.0.0.1:8089/v1/sessions/$sid/charges")
  echo "[$name] GET /healthz                 ${health} req/s"
  echo "[$name] POST charge (64 clients)     ${charges} charges/s"
  awk -v a="$charges" -v b="$health" -v n="$name" 'BEGIN { printf "[%s] ratio charges / healthz: %.2f\n", n, a / b }'
  # Top the ledger up to 100 000 entries, then time the statement.
  local count
  count=$(tg statement alice | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["charges"]))')
  while [ "$count" -lt 100000 ]; do
    run -s "$WORK/charge.lua" -H "Authorization: Bearer $shop_key" -H "Content-Type: application/json" \
      "http://127.0.0.1:8089/v1/sessions/$sid/charges" >/dev/null
    count=$(tg statement alice | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["charges"]))')
  done
  local times=()
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o "$WORK/statement.json" -w '%{time_total}' -H "Authorization: Bearer $KEY" \
      "http://127.0.0.1:8089/v1/users/$uid/statement")")
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
  echo "[$name] statement of $count ledger entries: median ${median}s ($(stat -c %s "$WORK/statement.json") bytes; runs: ${times[*]})"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

bench_engine sqlite "sqlite://$WORK/bench.db"
if [ "$PG_URL" != none ]; then
  base="${PG_URL%/*}"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS tollgate_bench WITH (FORCE)" >/dev/null
  psql "$PG_URL" -qc "CREATE DATABASE tollgate_bench" >/dev/null
  bench_engine postgresql "$base/tollgate_bench"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS tollgate_bench WITH (FORCE)" >/dev/null
fi
