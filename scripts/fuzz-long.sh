#!/usr/bin/env bash
# The long fuzz run (not part of the test suite): the mutation properties of tests/fuzz.rs,
# in release mode, each for FUZZ_SECS seconds (default 120). Prints the cases each ran.
# Usage: scripts/fuzz-long.sh [seconds per property]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${FUZZ_SECS:-120}}"
# libtest prints each test's output on its `test name ... ` line, hence -o, not ^fuzz.
TOLLGATE_FUZZ_MS=$((secs * 1000)) cargo test --release --test fuzz -- --nocapture --test-threads 1 2>&1 |
  grep -oE 'fuzz [a-z ]+: [0-9]+ cases, [0-9]+ panics|test result: .*|panicked.*'
