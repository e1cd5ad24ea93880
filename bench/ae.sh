#!/usr/bin/env bash
# Anti-entropy A/B in one sitting: for each build, a 3-node cluster (N = 3)
# on 127.0.0.1 loads KEYS keys at `all`, n3 is killed, 1% of the keys are
# rewritten on n1 and n2 (hints off), n3 restarts, and two passes run on n3:
# the one that repairs the 1%, then one with nothing to repair. Prints each
# pass's summary (duration_ms, keys pulled, tree nodes compared).
# Usage: bash bench/ae.sh OLD_DIR NEW_DIR   (each holding ringkv and
# ringkv-bench; env: KEYS=100000 ROUNDS=2 BASE_PORT=27600)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1
NEW=$2
KEYS=${KEYS:-100000}
ROUNDS=${ROUNDS:-2}
BASE=${BASE_PORT:-27600}
TMP=$(mktemp -d)
source bench/lib.sh
cluster_config ae false 1073741824
start() { start_node "$1/ringkv" "$2"; } # $1 = dir, $2 = node index
wait_n3() { # $1 = status
  for _ in $(seq 1 600); do
    [ "$(status_of 1 n3 2>/dev/null)" = "$1" ] && return 0
    sleep 0.05
  done
  echo "timed out waiting for n3 $1" >&2; exit 1
}
summary() {
  python3 -c "
import json,sys
d=json.load(sys.stdin)
s=d.get('summary', d)
keys=['duration_ms','keys_pulled','keys_pushed','bytes','hashes_compared','leaves_differing','partitions_differing']
print(' '.join(f'{k}={s[k]}' for k in keys if k in s))"
}

nodes="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
n12="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    dir=$OLD; [ "$which" = new ] && dir=$NEW
    rm -rf "$TMP/data" "$TMP"/n*.log
    for i in 1 2 3; do start "$dir" $i; done
    sleep 1
    "$dir/ringkv-bench" --nodes "$nodes" --keys "$KEYS" --phases load --write-consistency all --key-prefix ae > "$TMP/load.txt" 2>&1
    kill -9 "${PID[3]}"; wait_n3 down
    "$dir/ringkv-bench" --nodes "$n12" --keys $((KEYS / 100)) --phases load --write-consistency one --key-prefix ae --seed 7 > "$TMP/diverge.txt" 2>&1
    start "$dir" 3; wait_n3 up
    first=$(curl -s -X POST "http://127.0.0.1:$((BASE + 3))/v1/admin/repair?wait_ms=600000" | summary)
    second=$(curl -s -X POST "http://127.0.0.1:$((BASE + 3))/v1/admin/repair?wait_ms=600000" | summary)
    echo "round $round $which: repair: $first"
    echo "round $round $which: nothing to repair: $second"
    for i in 1 2 3; do kill "${PID[$i]}" 2>/dev/null || true; done; wait 2>/dev/null || true
  done
done
