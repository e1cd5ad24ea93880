#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests of every crate, and the
# integration and fault tests that start real ringkv processes on 127.0.0.1.
# Some fault tests mount a small tmpfs (disk full) and need root; without it
# they print SKIP and pass. Ends with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "all tests: $passed passed, $failed failed"
exit "$status"
