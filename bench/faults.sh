#!/usr/bin/env bash
# Measures ringkv's fault-tolerance mechanisms on a local 3-node cluster
# (release build, 127.0.0.1 only, every step bounded in time):
#   1. time for a restarted node to be marked up again;
#   2. hint replay rate (hints written while a node was down, drained after);
#   3. anti-entropy time and bytes for KEYS keys with 1% divergence;
#   4. quorum-read p99 while a large anti-entropy pass runs, against at rest.
# Usage: bash bench/faults.sh [--out FILE]   (env: KEYS=100000 DURATION=10)
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
DURATION=${DURATION:-10}
OUT=bench/faults-latest.md
if [ "${1:-}" = "--out" ]; then OUT=$2; fi
BASE=${BASE_PORT:-27500}

cargo build --release -q -p ringkv -p ringkv-bench
RINGKV=$PWD/target/release/ringkv
BENCH=$PWD/target/release/ringkv-bench
TMP=$(mktemp -d)
source bench/lib.sh

now_ms() { date +%s%3N; }
config() { cluster_config faults "$1" "$2"; } # $1 = hints enabled, $2 = repair bandwidth
start() { start_node "$RINGKV" "$1"; } # $1 = node index

pending_hints() { # $1 = observer index
  curl -s "http://127.0.0.1:$((BASE + $1))/v1/cluster" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['hints']['pending'])"
}

wait_for() { # $1 = description, $2.. = command that must succeed (30 s at most)
  local what=$1; shift
  for _ in $(seq 1 600); do
    "$@" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timed out waiting for $what" >&2; exit 1
}
n3_is() { [ "$(status_of 1 n3)" = "$1" ]; }
hints_drained() { [ $(( $(pending_hints 1) + $(pending_hints 2) )) -eq 0 ]; }

nodes="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))"
n12="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"

echo "== 1-2: restart to up, hint replay"
config true 16777216
rm -rf "$TMP/data"; for i in 1 2 3; do start $i; done
sleep 1
kill -9 "${PID[3]}"
wait_for "n3 down" n3_is down
HINT_KEYS=$((KEYS / 5))
"$BENCH" --nodes "$n12" --keys "$HINT_KEYS" --phases load --write-consistency quorum --key-prefix hints > "$TMP/hints-load.txt" 2>&1
hints=$(( $(pending_hints 1) + $(pending_hints 2) ))
t0=$(now_ms); start 3
wait_for "n3 up" n3_is up
t_up=$(( $(now_ms) - t0 ))
wait_for "hints drained" hints_drained
t_drain=$(( $(now_ms) - t0 - t_up ))
rate=$(( hints * 1000 / (t_drain > 0 ? t_drain : 1) ))
for p in "${PID[@]:1}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true

echo "== 3: anti-entropy, $KEYS keys, 1% divergence"
config false 1073741824
rm -rf "$TMP/data"; for i in 1 2 3; do start $i; done
sleep 1
"$BENCH" --nodes "$nodes" --keys "$KEYS" --phases load --write-consistency all --key-prefix ae > "$TMP/ae-load.txt" 2>&1
kill -9 "${PID[3]}"
wait_for "n3 down" n3_is down
DIVERGE=$((KEYS / 100))
"$BENCH" --nodes "$n12" --keys "$DIVERGE" --phases load --write-consistency one --key-prefix ae --seed 7 > "$TMP/ae-diverge.txt" 2>&1
start 3
wait_for "n3 up" n3_is up
ae=$(curl -s -X POST "http://127.0.0.1:$((BASE + 3))/v1/admin/repair")
ae2=$(curl -s -X POST "http://127.0.0.1:$((BASE + 3))/v1/admin/repair")

echo "== 4: quorum-read p99 at rest vs during anti-entropy"
# Reads go to a key set every replica agrees on; the repair moves another
# key set (KEYS keys) that n3 missed, throttled to 4 MiB/s.
for p in "${PID[@]:1}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
config false 4194304
rm -rf "$TMP/data"; for i in 1 2 3; do start $i; done
sleep 1
READ_KEYS=$((KEYS / 5))
"$BENCH" --nodes "$nodes" --keys "$READ_KEYS" --phases load --write-consistency all --key-prefix rd > "$TMP/rd-load.txt" 2>&1
kill -9 "${PID[3]}"
wait_for "n3 down" n3_is down
"$BENCH" --nodes "$n12" --keys "$KEYS" --phases load --write-consistency quorum --key-prefix big > "$TMP/big-load.txt" 2>&1
start 3
wait_for "n3 up" n3_is up
read_args=(--nodes "$nodes" --keys "$READ_KEYS" --workload c --read-consistency quorum --duration "${DURATION}s" --phases run --key-prefix rd)
"$BENCH" "${read_args[@]}" --json "$TMP/rest.json" > "$TMP/rest.txt" 2>&1 || true
curl -s -X POST "http://127.0.0.1:$((BASE + 1))/v1/admin/repair" > "$TMP/big-repair.json" &
REPAIR=$!
sleep 1
"$BENCH" "${read_args[@]}" --json "$TMP/during.json" > "$TMP/during.txt" 2>&1 || true
running=$(curl -s "http://127.0.0.1:$((BASE + 1))/v1/cluster" | python3 -c "import json,sys; print(json.load(sys.stdin)['repair']['running'])")
wait $REPAIR || true

p99() { python3 -c "import json; r=json.load(open('$1'))['run']['read']; print(r['latency_us']['p99'], int(r['ops_per_sec']))"; }
read -r rest_p99 rest_ops < <(p99 "$TMP/rest.json")
read -r during_p99 during_ops < <(p99 "$TMP/during.json")

{
  echo "# ringkv fault measurements — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Produced by \`bash bench/faults.sh\` (KEYS=$KEYS, DURATION=$DURATION s), release build,"
  echo "3 nodes on 127.0.0.1 of one machine ($(nproc) cores), gossip every 200 ms."
  echo
  echo "| what | result |"
  echo "|---|---|"
  echo "| restarted node marked up (kill -9, restart, seen up by a peer) | ${t_up} ms |"
  echo "| hints written while it was down | $hints |"
  echo "| hints drained after it was up | ${t_drain} ms ($rate hints/s) |"
  echo "| anti-entropy, $KEYS keys, $DIVERGE diverged (1%) | $ae |"
  echo "| second pass right after | $ae2 |"
  echo "| quorum reads of $READ_KEYS in-sync keys, at rest | p99 ${rest_p99} µs, ${rest_ops} ops/s |"
  echo "| the same while anti-entropy moves $KEYS keys n3 missed at 4 MiB/s (still running when the reads ended: $running) | p99 ${during_p99} µs, ${during_ops} ops/s |"
  echo "| p99 during / at rest | $(python3 -c "print(round($during_p99 / $rest_p99, 2))")× |"
  echo "| that repair's summary | $(cat "$TMP/big-repair.json") |"
} | tee "$OUT"
