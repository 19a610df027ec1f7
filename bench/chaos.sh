#!/usr/bin/env bash
# Chaos: a steady sipp load through the relay on PostgreSQL; in the middle of it the relay is
# killed with SIGKILL and restarted at once, later PostgreSQL is stopped under it and started
# again. Prints what was attempted and completed, what was recorded, and what was lost,
# doubled or billed wrongly (must be 0).
#
# Usage: bench/chaos.sh            (CALLS=600 RATE=20 HOLD_MS=4000; TOLLGATE=binary)
# Needs sipp, python3 and Debian's postgresql (a throwaway cluster is started on a free port).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CALLS="${CALLS:-600}"
RATE="${RATE:-20}"
HOLD_MS="${HOLD_MS:-4000}"
CHECKPOINT_SECS=10
SCENARIOS="$ROOT/../shared/bench/scenarios"
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi

WORK="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
pg_port=$(free_port)
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$WORK"; else as_pg=(); fi
pg() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w "$@" >/dev/null; }
"${as_pg[@]}" "$pg_bin/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
pg -o "-h 127.0.0.1 -p $pg_port -k $WORK" start
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres chaos

SIP_PORT=$(free_port); UAS_PORT=$(free_port); UAC_PORT=$(free_port)
cat > "$WORK/tollgate.toml" <<TOML
node_id = "chaos"
[database]
url = "postgres://postgres@127.0.0.1:$pg_port/chaos"
acquire_timeout_secs = 2
[sip]
domain = "portal.com"
listen = ["udp:127.0.0.1:$SIP_PORT"]
digest_algorithms = ["MD5"]
nonce_secret = "chaos-nonce-secret-shared-across-restarts"
[sessions]
checkpoint_secs = $CHECKPOINT_SECS
[http]
listen = "127.0.0.1:0"
TOML
tg() { "$TOLLGATE" --config "$WORK/tollgate.toml" "$@"; }
tg user add alice --password secret >/dev/null
tg appserver add as1 --uri "sip:127.0.0.1:$UAS_PORT" >/dev/null
tg service add service1@portal.com --appserver as1 >/dev/null

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pg -m immediate stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
start_relay() {
  TOLLGATE_LOG=error "$TOLLGATE" --config "$WORK/tollgate.toml" serve >>"$WORK/relay.log" 2>&1 &
  RELAY=$!; PIDS+=("$RELAY")
  for _ in $(seq 100); do
    ss -lun | grep -q "127.0.0.1:$SIP_PORT " && return 0
    sleep 0.1
  done
  echo "relay did not start" >&2; tail "$WORK/relay.log" >&2; exit 1
}

start_relay
sipp -sf "$SCENARIOS/uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin >"$WORK/uas.log" 2>&1 &
PIDS+=("$!")
sipp -sf "$SCENARIOS/uac_auth.xml" "127.0.0.1:$SIP_PORT" -s service1 -i 127.0.0.1 -p "$UAC_PORT" \
  -r "$RATE" -m "$CALLS" -d "$HOLD_MS" -nostdin -timeout 300 -trace_stat -stf "$WORK/stat.csv" \
  >"$WORK/uac.log" 2>&1 &
UAC=$!; PIDS+=("$UAC")
run_secs=$(( CALLS / RATE ))

sleep $(( run_secs / 4 ))
echo "t≈$(( run_secs / 4 ))s: kill -9 the relay, restart it"
kill -9 "$RELAY"; wait "$RELAY" 2>/dev/null || true
start_relay
sleep $(( run_secs / 4 ))
echo "t≈$(( run_secs / 2 ))s: stop PostgreSQL for 3 s"
pg -m fast stop
sleep 3
pg -o "-h 127.0.0.1 -p $pg_port -k $WORK" start
wait "$UAC" || true
if ! kill -TERM "$RELAY" 2>/dev/null; then
  echo "the relay had stopped by itself:" >&2; tail -5 "$WORK/relay.log" >&2
fi
wait "$RELAY" 2>/dev/null || true

tg sessions list --json --limit 1000000 >"$WORK/sessions.json"
ok=$(grep -E "Successful call" "$WORK/uac.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
bad=$(grep -E "Failed call" "$WORK/uac.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
python3 - "$WORK/sessions.json" "$CALLS" "${ok:-0}" "${bad:-0}" "$HOLD_MS" "$CHECKPOINT_SECS" <<'PY'
import json, sys, collections
rows = json.load(open(sys.argv[1]))
calls, ok, bad, hold, checkpoint = (int(a) for a in sys.argv[2:])
by_call = collections.Counter(r["call_id"] for r in rows if r["state"] in ("confirmed", "terminated"))
doubled = sum(1 for n in by_call.values() if n > 1)
ended = [r for r in rows if r["state"] == "terminated"]
by_bye = [r for r in ended if r.get("end_reason") == "bye"]
open_rows = [r for r in rows if r["state"] in ("trying", "confirmed")]
off = [r for r in by_bye if abs((r.get("duration_ms") or 0) - hold) > checkpoint * 1000]
lost = max(0, ok - len(by_bye))
print(f"calls attempted {calls}, completed by sipp {ok}, failed {bad}")
print(f"sessions recorded {len(rows)}: terminated {len(ended)} (by BYE {len(by_bye)}), "
      f"failed/cancelled {sum(r['state'] in ('failed','cancelled') for r in rows)}, left open {len(open_rows)}")
print(f"billed duration off sipp's {hold} ms by more than {checkpoint} s: {len(off)}")
print(f"lost (completed by sipp, no BYE-ended session): {lost}; doubled: {doubled}")
sys.exit(1 if (lost or doubled or off) else 0)
PY
