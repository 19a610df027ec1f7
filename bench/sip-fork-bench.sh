#!/usr/bin/env bash
# Forked SIP benchmark: a service delivered by two application servers, first answer wins,
# against the same relay binary with one application server, in the same run, at one rate.
#
# Each call is the full authenticated call of bench/sip-bench.sh (INVITE → 407 → ACK → INVITE
# with credentials → 100/180/200 → ACK → BYE → 200), driven by ../shared/bench/sip-peer.sh
# (sipp on CPU 0, the relay on CPU 1). In the forked run the relay sends every INVITE to both
# servers: the harness's UAS (5090) answers 180/200 at once; the second (UAS2_PORT, sipp
# with bench/scenarios/uas_cancelled.xml, also on CPU 0) answers 100 and is CANCELled (200,
# 487, ACK). So each forked call costs a second branch, a CANCEL transaction and a second
# session row (recorded cancelled).
#
# Usage: bench/sip-fork-bench.sh [RATE]        e.g. bench/sip-fork-bench.sh 500
# Environment: CALLS (per run, default 10 s at RATE), HARNESS (path to sip-peer.sh),
#              TOLLGATE (binary; default: cargo build --release), PORT (relay UDP port, 5060),
#              UAS2_PORT (5091).
# Prints both harness lines, then the CPU milliseconds per call of each and forked/single.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RATE="${1:-500}"
export CALLS="${CALLS:-$((RATE * 10))}"
HARNESS="${HARNESS:-$ROOT/../shared/bench/sip-peer.sh}"
PORT="${PORT:-5060}"
UAS2_PORT="${UAS2_PORT:-5091}"
[ -x "$HARNESS" ] || { echo "harness not found: $HARNESS" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }

if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi

WORK="$(mktemp -d)"
RELAY_PID=""
UAS2_PID=""
cleanup() {
  for pid in $RELAY_PID $UAS2_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_relay NAME [--appserver NAME --fork first …]: a relay of its own (config, database).
start_relay() {
  local name="$1"; shift
  local cfg="$WORK/$name.toml"
  cat > "$cfg" <<TOML
node_id = "bench-$name"
[database]
url = "sqlite://$WORK/$name.db"
[sip]
domain = "portal.com"
listen = ["udp:127.0.0.1:$PORT"]
digest_algorithms = ["MD5", "SHA-256"]
auth_failure_limit = 1000000
[http]
listen = "127.0.0.1:0"
TOML
  tg() { "$TOLLGATE" --config "$cfg" "$@" >/dev/null; }
  tg user add alice --password secret
  tg appserver add uas --uri "sip:127.0.0.1:${UAS_PORT:-5090}"
  tg appserver add uas2 --uri "sip:127.0.0.1:$UAS2_PORT"
  tg service add service1@portal.com --appserver uas "$@"
  TOLLGATE_LOG=error taskset -c 1 "$TOLLGATE" --config "$cfg" serve > "$WORK/$name.log" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 100); do grep -q "tollgate ready: sip udp" "$WORK/$name.log" && break; sleep 0.1; done
  grep -q "tollgate ready" "$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 1; }
}

stop_relay() {
  kill "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null || true; RELAY_PID=""
}

echo "== single: one application server =="
start_relay single
PROXY_PID=$RELAY_PID "$HARNESS" custom-auth "127.0.0.1:$PORT" "$RATE" | tee "$WORK/single.txt"
stop_relay

echo "== forked: two application servers, first answer wins =="
(cd "$WORK" && exec taskset -c 0 sipp -sf "$ROOT/bench/scenarios/uas_cancelled.xml" \
  -i 127.0.0.1 -p "$UAS2_PORT" -cp 8892 -mp 16020 -buff_size 4194304 \
  -default_behaviors all,-abortunexp -nostdin -trace_err -error_file "$WORK/uas2_errors.log" \
  > "$WORK/uas2.out" 2>&1) &
UAS2_PID=$!
start_relay forked --appserver uas2 --fork first
PROXY_PID=$RELAY_PID "$HARNESS" custom-auth "127.0.0.1:$PORT" "$RATE" | tee "$WORK/forked.txt"
stop_relay
cancelled=$("$TOLLGATE" --config "$WORK/forked.toml" sessions list --json --limit 1000000 | grep -c '"state": "cancelled"' || true)
echo "forked run: sessions recorded cancelled (the losing branch): $cancelled"

awk '
  FNR == 1 { run = (FILENAME ~ /forked/) ? "forked" : "single" }
  $1 !~ /^#/ && NF >= 19 {
    verdict[run] = $19; cps[run] = $8; cpu[run] = ($4 > 0) ? 1000 * $17 / $4 : 0
  }
  END {
    printf "\n%-8s %12s %16s %8s\n", "run", "achieved_cps", "cpu_ms_per_call", "verdict"
    for (r in cpu) printf "%-8s %12.1f %16.3f %8s\n", r, cps[r], cpu[r], verdict[r]
    if (cpu["single"] > 0 && cpu["forked"] > 0)
      printf "ratio forked/single: cpu per call %.2f\n", cpu["forked"] / cpu["single"]
  }' "$WORK/single.txt" "$WORK/forked.txt"
