#!/usr/bin/env bash
# Billing on a release build, on SQLite (WAL, synchronous=FULL: every acknowledged charge has
# been fsynced) and on PostgreSQL, each engine on a fresh database:
#   1. the ledger of one user is filled to 100 000 entries (+ at most CONNECTIONS) through the
#      REST API, then GET /v1/users/{id}/statement is timed (whole request, JSON, loopback,
#      median of 5), with the relay's CPU time per statement;
#   2. ROUNDS times, GET /healthz then POST /v1/sessions/{id}/charges, each with CONNECTIONS
#      concurrent clients for SECONDS (wrk, one fresh Idempotency-Key per request): charges/s,
#      the ratio to /healthz of the same round (shared machines: only ratios compare across
#      runs), the relay's CPU time per charge, and the ledger entries actually written.
# The relay is pinned to CPU 1, wrk to CPU 0; each figure line says what load the machine was
# under (load average, /proc/pressure cpu and io).
# Usage: bench/billing-bench.sh [SECONDS]
# Environment: TOLLGATE (binary; else cargo build --release), CONNECTIONS (64), ROUNDS (3),
#   PG_URL (a PostgreSQL server, default postgres://postgres@127.0.0.1:5432/postgres; the script
#   creates and drops the database tollgate_bench on it; PG_URL=none skips PostgreSQL).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-10}"
CONNS="${CONNECTIONS:-64}"
ROUNDS="${ROUNDS:-3}"
ENTRIES="${ENTRIES:-100000}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
HTTP=http://127.0.0.1:8089
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi
WORK="$(mktemp -d)"
KEY="bench-operator-key-0123456789"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# wrk script: POST a charge with an Idempotency-Key unique across runs (RUN_ID), threads and
# requests: a repeated key would be a replay, not a new charge. With LIMIT_PER_THREAD set, each
# thread stops sending after that many answers (the run still lasts its whole duration).
cat > "$WORK/charge.lua" <<'LUA'
local counter = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args)
  prefix = "bench-" .. os.getenv("RUN_ID") .. "-" .. tid .. "-"
  limit = tonumber(os.getenv("LIMIT_PER_THREAD") or "")
  answered = 0
end
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", nil, nil,
    '{"description":"bench item","unit_amount":120,"quantity":1,"currency":"EUR"}')
end
function response(status, headers, body)
  answered = answered + 1
  if limit and answered >= limit then wrk.thread:stop() end
end
LUA

# One wrk run of DURATION; prints requests/s; non-2xx answers are reported on stderr.
run() { # DURATION WRK-ARGS...
  local duration=$1; shift
  RUN_ID="$(date +%s%N)" taskset -c 0 wrk -t2 -c"$CONNS" -d"$duration" "$@" |
    awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "NON2XX " $4 > "/dev/stderr"}'
}
charge() { # DURATION
  run "$1" -s "$WORK/charge.lua" -H "Authorization: Bearer $SHOP_KEY" \
    -H "Content-Type: application/json" "$HTTP/v1/sessions/$SID/charges"
}
# The relay's CPU time so far, in clock ticks (utime + stime).
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
load() { echo "load $(cut -d' ' -f1 /proc/loadavg), pressure cpu $(awk '/some/ {print $2}' /proc/pressure/cpu) io $(awk '/some/ {print $2}' /proc/pressure/io)"; }
# Ledger entries of the user (its statement over all time, read from the database).
ledger_count() {
  "$TOLLGATE" --config "$WORK/tollgate.toml" statement alice | python3 -c 'import json,sys
d = json.load(sys.stdin)
print(len(d["charges"]) + len(d["adjustments"]) + sum(1 for s in d["sessions"] if s.get("time_charge")))'
}

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
  SHOP_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WORK/shop.json")
  TOLLGATE_LOG=error taskset -c 1 "$TOLLGATE" --config "$WORK/tollgate.toml" serve > "$WORK/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do grep -q "ready: http" "$WORK/serve.log" && break; sleep 0.1; done
  # One real call makes the session to charge.
  local SC="$ROOT/tests/scenarios"
  sipp -sf "$SC/uas.xml" -i 127.0.0.1 -p 5092 -m 1 -cp 8892 -mp 6100 -nostdin >/dev/null 2>&1 &
  local UAS=$!
  timeout 30 sipp 127.0.0.1:5062 -sf "$SC/uac_auth.xml" -s service1 -i 127.0.0.1 -p 5082 -m 1 -cp 8893 -mp 6200 -nostdin >/dev/null 2>&1
  wait $UAS || true
  SID=$(tg sessions list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  local uid
  uid=$(curl -sf -H "Authorization: Bearer $KEY" "$HTTP/v1/users" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')

  # 1. The statement of 100 000 entries.
  local count t0 t1
  count=$(ledger_count)
  while [ "$count" -lt "$ENTRIES" ]; do # 5 s slices (wrk runs its whole duration even when stopped)
    LIMIT_PER_THREAD=$(((ENTRIES - count + 1) / 2)) charge 5s >/dev/null
    count=$(ledger_count)
  done
  # Statistics, as autovacuum would gather them: the PostgreSQL this runs on may have autovacuum
  # off, and without statistics its plans for the charge batch degrade as the tables grow.
  if [ "$name" = postgresql ]; then
    echo "[$name] autovacuum $(psql "$url" -Atc 'SHOW autovacuum'); running ANALYZE"
    psql "$url" -qc "ANALYZE"
  fi
  local times=()
  t0=$(ticks)
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o "$WORK/statement.json" -w '%{time_total}' -H "Authorization: Bearer $KEY" \
      "$HTTP/v1/users/$uid/statement")")
  done
  t1=$(ticks)
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
  echo "[$name] statement of $count ledger entries ($(stat -c %s "$WORK/statement.json") bytes of JSON): median ${median} s, relay CPU $(((t1 - t0) * TICK_US / 5000)) ms each; runs: ${times[*]}; $(load)"

  # 2. Charges beside /healthz, ROUNDS times.
  local round health charges before after
  for round in $(seq "$ROUNDS"); do
    health=$(run "${SECS}s" "$HTTP/healthz")
    before=$(ledger_count)
    t0=$(ticks)
    charges=$(charge "${SECS}s")
    t1=$(ticks)
    after=$(ledger_count)
    awk -v n="$name" -v r="$round" -v c="$charges" -v h="$health" -v conns="$CONNS" \
      -v w="$((after - before))" -v us="$(((t1 - t0) * TICK_US))" -v l="$(load)" 'BEGIN {
      printf "[%s] round %d: POST charge %.0f/s (%d clients), GET /healthz %.0f/s, ratio %.3f; relay CPU %.0f us per charge, %d entries written; %s\n",
        n, r, c, conns, h, c / h, us / w, w, l }'
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

bench_engine sqlite "sqlite://$WORK/bench.db"
if [ "$PG_URL" != none ]; then
  base="${PG_URL%/*}"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS tollgate_bench WITH (FORCE)" 2>/dev/null
  psql "$PG_URL" -qc "CREATE DATABASE tollgate_bench"
  bench_engine postgresql "$base/tollgate_bench"
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS tollgate_bench WITH (FORCE)"
fi
