#!/usr/bin/env bash
# Full-call SIP benchmark: Tollgate against Kamailio, same machine, same run.
#
# Each call: INVITE → 407 → ACK → INVITE with digest credentials → 100/180/200 → ACK → BYE → 200,
# driven by sipp through ../shared/bench/sip-peer.sh (sipp on CPU 0, the proxy on CPU 1).
# Tollgate runs with authentication and session records on (SQLite, group commit).
#
# Usage: bench/sip-bench.sh [RATES]          e.g. bench/sip-bench.sh 1000,2000,2500,3000
# Environment: CALLS (calls per run, default 10000), HARNESS (path to sip-peer.sh),
#              TOLLGATE (binary; default: cargo build --release), PORT (relay UDP port, 5060).
# Prints every run, then the highest passing rate (<0.1% failed calls) of each proxy and its
# CPU milliseconds per call at that rate, with Tollgate's figures as ratios of Kamailio's.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RATES="${1:-1000,1500,2000,2500,3000}"
export CALLS="${CALLS:-10000}"
HARNESS="${HARNESS:-$ROOT/../shared/bench/sip-peer.sh}"
PORT="${PORT:-5060}"
[ -x "$HARNESS" ] || { echo "harness not found: $HARNESS" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
command -v kamailio >/dev/null || { echo "kamailio missing: apt-get install -y kamailio" >&2; exit 2; }

if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi

WORK="$(mktemp -d)"
OUT="$WORK/results.txt"
cat > "$WORK/tollgate.toml" <<TOML
node_id = "bench"
[database]
url = "sqlite://$WORK/bench.db"
[sip]
domain = "portal.com"
listen = ["udp:127.0.0.1:$PORT"]
digest_algorithms = ["MD5", "SHA-256"]
auth_failure_limit = 1000000
[http]
listen = "127.0.0.1:0"
TOML
tg() { "$TOLLGATE" --config "$WORK/tollgate.toml" "$@" >/dev/null; }
tg user add alice --password secret
tg appserver add uas --uri "sip:127.0.0.1:${UAS_PORT:-5090}"
tg service add service1@portal.com --appserver uas

TOLLGATE_LOG=error taskset -c 1 "$TOLLGATE" --config "$WORK/tollgate.toml" serve > "$WORK/serve.log" 2>&1 &
RELAY_PID=$!
trap 'kill $RELAY_PID 2>/dev/null || true; wait $RELAY_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "tollgate ready: sip udp" "$WORK/serve.log" && break; sleep 0.1; done
grep "tollgate ready" "$WORK/serve.log"

echo "== tollgate (custom-auth) =="
PROXY_PID=$RELAY_PID "$HARNESS" custom-auth "127.0.0.1:$PORT" "$RATES" | tee -a "$OUT"
echo "== kamailio (kamailio-auth) =="
"$HARNESS" kamailio-auth "$RATES" | tee -a "$OUT"

sessions=$("$TOLLGATE" --config "$WORK/tollgate.toml" sessions list --json --limit 1000000 | grep -c '"state": "terminated"' || true)
echo "tollgate terminated sessions recorded: $sessions"

awk '
  $1 !~ /^#/ && NF >= 19 && $19 == "PASS" {
    t = ($1 ~ /^custom/) ? "tollgate" : ($1 ~ /^kamailio/ ? "kamailio" : $1)
    if ($2 + 0 > best[t] + 0) { best[t] = $2; cpu[t] = 1000 * $17 / $4 }
    if ($2 + 0 == best[t] + 0 && 1000 * $17 / $4 < cpu[t]) cpu[t] = 1000 * $17 / $4
    at[t, $2] = 1000 * $17 / $4; rates[$2] = 1
  }
  END {
    printf "\n%-10s %16s %16s\n", "proxy", "best_pass_cps", "cpu_ms_per_call"
    for (t in best) printf "%-10s %16d %16.3f\n", t, best[t], cpu[t]
    if (best["kamailio"] > 0 && best["tollgate"] > 0)
      printf "ratio tollgate/kamailio: rate %.2f, cpu per call %.2f\n",
        best["tollgate"] / best["kamailio"], cpu["tollgate"] / cpu["kamailio"]
    for (r in rates) if ((("tollgate", r) in at) && (("kamailio", r) in at))
      printf "at %d cps both pass: cpu per call tollgate %.3f ms, kamailio %.3f ms, ratio %.2f\n",
        r, at["tollgate", r], at["kamailio", r], at["tollgate", r] / at["kamailio", r]
  }' "$OUT"
