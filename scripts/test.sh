#!/usr/bin/env bash
# Runs the whole test suite:
#   1. unit and property tests of every crate, the bounded fuzz passes, and
#      the integration and fault tests that start real ringkv processes on
#      127.0.0.1 (`cargo test`);
#   2. the chaos suite (`ringkv-chaos --short`): a 5-node cluster in network
#      namespaces under a random schedule of combined faults, with the set,
#      register and delete checkers, then the clock runs (one node 60 s
#      behind, one far ahead). It needs root, iproute2 and nftables; without
#      them it prints "chaos: SKIPPED: <reason>". CHAOS_SEED fixes its seed
#      (it is printed either way, so a failing run replays exactly);
#      CHAOS=0 leaves it out.
# Some fault tests mount a small tmpfs (disk full) and need root; without it
# they print SKIP and pass. Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
chaos="left out (CHAOS=0)"
if [ "${CHAOS:-1}" != 0 ]; then
    cargo build -p ringkv-chaos -p ringkv 2>&1 | tail -3
    seed=${CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
    chaos_status=0
    bin=${CARGO_TARGET_DIR:-target}/debug
    "$bin/ringkv-chaos" --short --seed "$seed" --bin "$bin/ringkv" 2>&1 | tee -a "$log" ||
        chaos_status=$?
    if grep -q '^chaos: SKIPPED' "$log"; then
        chaos="SKIPPED ($(grep '^chaos: SKIPPED' "$log" | sed 's/^chaos: SKIPPED: //'))"
    elif [ $chaos_status -eq 0 ]; then
        chaos="clean (seed $seed)"
    else
        chaos="FAILED (seed $seed; replay with CHAOS_SEED=$seed)"
        status=1
    fi
fi
echo
echo "all tests: $passed passed, $failed failed; chaos suite: $chaos"
exit "$status"
