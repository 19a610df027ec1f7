#!/usr/bin/env bash
# Full-call SIP benchmark: Tollgate against Kamailio, same machine, same run.
#
# Each call: INVITE → 407 → ACK → INVITE with digest credentials → 100/180/200 → ACK → BYE → 200,
# driven by sipp through ../shared/bench/sip-peer.sh (sipp on CPU 0, the proxy on CPU 1).
# Tollgate runs with authentication and session records on (SQLite, group commit).
#
# Usage: bench/sip-bench.sh [RATES]          e.g. bench/sip-bench.sh 1000,2000,2500,3000
# Environment: CALLS (calls per run, default 10000), HARNESS (path to sip-peer.sh),
#              TOLLGATE (binary; default: cargo build --release), PORT (relay UDP port, 5060),
#              BASELINE (another tollgate binary, e.g. an older commit's: it runs in the same
#              run, interleaved with TOLLGATE rate by rate, and Kamailio is skipped),
#              ROUNDS (runs per rate and binary, default 1; with BASELINE, pairs alternate).
# Prints every run, then the highest passing rate (<0.1% failed calls) of each proxy and its
# CPU milliseconds per call at that rate, with Tollgate's figures as ratios of Kamailio's (or,
# with BASELINE, of the baseline's: the mean CPU per call over the rounds at each rate).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RATES="${1:-1000,1500,2000,2500,3000}"
export CALLS="${CALLS:-10000}"
HARNESS="${HARNESS:-$ROOT/../shared/bench/sip-peer.sh}"
PORT="${PORT:-5060}"
ROUNDS="${ROUNDS:-1}"
[ -x "$HARNESS" ] || { echo "harness not found: $HARNESS" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install -y sip-tester" >&2; exit 2; }
if [ -z "${BASELINE:-}" ]; then
  command -v kamailio >/dev/null || { echo "kamailio missing: apt-get install -y kamailio" >&2; exit 2; }
fi

if [ -z "${TOLLGATE:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  TOLLGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi

WORK="$(mktemp -d)"
OUT="$WORK/results.txt"
RELAY_PID=""
trap '[ -z "$RELAY_PID" ] || { kill $RELAY_PID 2>/dev/null; wait $RELAY_PID 2>/dev/null; } || true' EXIT

# Runs BINARY as the relay on a fresh database and drives it at RATES; its result lines are
# labelled LABEL (the harness calls every custom proxy "custom-auth").
run_tollgate() {
  local label=$1 binary=$2 rates=$3 dir
  dir="$(mktemp -d -p "$WORK")"
  cat > "$dir/tollgate.toml" <<TOML
node_id = "bench"
[database]
url = "sqlite://$dir/bench.db"
[sip]
domain = "portal.com"
listen = ["udp:127.0.0.1:$PORT"]
digest_algorithms = ["MD5", "SHA-256"]
auth_failure_limit = 1000000
[http]
listen = "127.0.0.1:0"
TOML
  tg() { "$binary" --config "$dir/tollgate.toml" "$@" >/dev/null; }
  tg user add alice --password secret
  tg appserver add uas --uri "sip:127.0.0.1:${UAS_PORT:-5090}"
  tg service add service1@portal.com --appserver uas
  TOLLGATE_LOG=error taskset -c 1 "$binary" --config "$dir/tollgate.toml" serve > "$dir/serve.log" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 100); do grep -q "tollgate ready: sip udp" "$dir/serve.log" && break; sleep 0.1; done
  grep -q "tollgate ready" "$dir/serve.log" || { cat "$dir/serve.log" >&2; exit 1; }
  PROXY_PID=$RELAY_PID "$HARNESS" custom-auth "127.0.0.1:$PORT" "$rates" \
    | sed "s/^custom-auth /$label /" | tee -a "$OUT"
  kill $RELAY_PID; wait $RELAY_PID 2>/dev/null || true; RELAY_PID=""
  sessions=$(sqlite3 "$dir/bench.db" "SELECT count(*) FROM sessions WHERE state = 'terminated'" 2>/dev/null || echo "?")
  echo "# $label: terminated sessions recorded: $sessions"
}

if [ -n "${BASELINE:-}" ]; then
  echo "== tollgate $TOLLGATE against baseline $BASELINE, $ROUNDS round(s) per rate =="
  for rate in ${RATES//,/ }; do
    for _ in $(seq "$ROUNDS"); do
      run_tollgate baseline-auth "$BASELINE" "$rate"
      run_tollgate custom-auth "$TOLLGATE" "$rate"
    done
  done
else
  echo "== tollgate (custom-auth) =="
  for _ in $(seq "$ROUNDS"); do run_tollgate custom-auth "$TOLLGATE" "$RATES"; done
  echo "== kamailio (kamailio-auth) =="
  for _ in $(seq "$ROUNDS"); do "$HARNESS" kamailio-auth "$RATES" | tee -a "$OUT"; done
fi

# The reference is Kamailio, or the baseline build when there is one. CPU per call is proxy CPU
# seconds over successful calls; at each rate, the mean and the least of the rounds that passed
# (other jobs on a shared machine only ever add CPU time, so the least is the least disturbed).
awk -v ref="$([ -n "${BASELINE:-}" ] && echo baseline || echo kamailio)" '
  $1 !~ /^#/ && NF >= 19 && $4 + 0 > 0 {
    t = ($1 ~ /^custom/) ? "tollgate" : ($1 ~ /^kamailio/ ? "kamailio" : ($1 ~ /^baseline/ ? "baseline" : $1))
    c = 1000 * $17 / $4
    if ($19 != "PASS") { failed[t, $2] = failed[t, $2] " " $19; next }
    if ($2 + 0 > best[t] + 0) best[t] = $2
    sum[t, $2] += c; n[t, $2]++; rates[$2] = 1
    if (!((t, $2) in low) || c < low[t, $2]) low[t, $2] = c
  }
  END {
    printf "\n%-10s %16s %16s\n", "proxy", "best_pass_cps", "cpu_ms_per_call"
    for (t in best) printf "%-10s %16d %16.3f\n", t, best[t], sum[t, best[t]] / n[t, best[t]]
    if (best[ref] > 0 && best["tollgate"] > 0)
      printf "ratio tollgate/%s: best passing rate %.2f\n", ref, best["tollgate"] / best[ref]
    for (r in rates) {
      if (!((("tollgate", r) in n) && ((ref, r) in n))) {
        printf "at %d cps not both passing:%s%s\n", r,
          (("tollgate", r) in failed) ? " tollgate" failed["tollgate", r] : "",
          ((ref, r) in failed) ? " " ref failed[ref, r] : ""
        continue
      }
      a = sum["tollgate", r] / n["tollgate", r]; b = sum[ref, r] / n[ref, r]
      printf "at %d cps both pass (%d+%d runs): cpu per call tollgate %.3f ms, %s %.3f ms, ratio %.2f (mean); least %.3f / %.3f ms, ratio %.2f\n",
        r, n["tollgate", r], n[ref, r], a, ref, b, a / b,
        low["tollgate", r], low[ref, r], low["tollgate", r] / low[ref, r]
    }
  }' "$OUT"
