#!/usr/bin/env bash
# bench/ab.sh — the quorum figures (3 nodes, or 1) of two ringkv builds, in one sitting,
# alternating A B A B so machine noise hits both alike.
#
#   bash bench/ab.sh OLD_DIR NEW_DIR [--out FILE]
#
# OLD_DIR and NEW_DIR hold a `ringkv` binary each (e.g. a release build of the
# previous commit, made in a `git worktree` with its own CARGO_TARGET_DIR, and
# target/release). The load tool is NEW_DIR/ringkv-bench for both (HTTP only).
# Each round starts a fresh cluster (3 nodes with N=3, or 1; quorum reads and writes,
# durability "immediate") and runs the 10:1 mix, write-only and read-only
# workloads; every run is bounded in time and every server stopped on exit.
#
# Environment: DURATION=10 CLIENTS=64 KEYS=10000 VALUE_SIZE=1024 ROUNDS=2
# BASE_PORT=27600 NODES=3 (NODES=1: one node, N=1).

set -euo pipefail

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-1024}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-27600}
NODES=${NODES:-3}
case "$NODES" in 1) N=1 Q=1 ;; 3) N=3 Q=2 ;; *) echo "ab.sh: NODES is 1 or 3" >&2; exit 2 ;; esac

[ $# -ge 2 ] || { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OLD=$(cd "$1" && pwd)
NEW=$(cd "$2" && pwd)
shift 2
OUT=/dev/stdout
if [ "${1:-}" = "--out" ]; then OUT=$2; fi
for d in "$OLD" "$NEW"; do
    [ -x "$d/ringkv" ] || { echo "ab.sh: no ringkv binary in $d" >&2; exit 2; }
done
[ -x "$NEW/ringkv-bench" ] || { echo "ab.sh: no ringkv-bench in $NEW" >&2; exit 2; }
command -v jq >/dev/null || { echo "ab.sh: needs jq" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ringkv-ab.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

config() { # FILE DATA_DIR
    {
        printf '[cluster]\nname = "ab"\nreplication_factor = %d\nr = %d\nw = %d\n\n' $N $Q $Q
        printf '[storage]\ndurability = "immediate"\n'
        for i in $(seq 1 "$NODES"); do
            printf '\n[[nodes]]\nid = "n%d"\nhttp_addr = "127.0.0.1:%d"\n' "$i" $((BASE_PORT + i))
            printf 'peer_addr = "127.0.0.1:%d"\ndata_dir = "%s/n%d"\n' $((BASE_PORT + 10 + i)) "$2" "$i"
        done
    } >"$1"
}

start() { # BIN_DIR CONFIG
    PIDS=()
    for i in $(seq 1 "$NODES"); do
        "$1/ringkv" serve --config "$2" --node "n$i" >"$WORK/n$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in $(seq 1 "$NODES"); do
        for _ in $(seq 1 300); do
            curl -fsS "http://127.0.0.1:$((BASE_PORT + i))/ready" >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
}

stop() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

TARGETS=$(for i in $(seq 1 "$NODES"); do printf '127.0.0.1:%d,' $((BASE_PORT + i)); done)
TARGETS=${TARGETS%,}
declare -A OPS=() P99=()

bench() { # LABEL ROUND NAME PHASES WORKLOAD
    local json="$WORK/$1-$2-$3.json"
    timeout -s INT -k 15 $((DURATION + 180)) "$NEW/ringkv-bench" --nodes "$TARGETS" \
        --clients "$CLIENTS" --keys "$KEYS" --value-size "$VALUE_SIZE" --duration "${DURATION}s" \
        --phases "$4" --workload "$5" --read-consistency quorum --write-consistency quorum \
        --json "$json" >"$WORK/bench.log" 2>&1 || true
    OPS[$1.$2.$3]=$(jq -r '.run.total.ops_per_sec | floor' "$json" 2>/dev/null || echo 0)
    P99[$1.$2.$3]=$(jq -r '(.run.total.latency_us.p99 // 0) / 1000' "$json" 2>/dev/null || echo 0)
    echo "  $1 round $2 $3: ${OPS[$1.$2.$3]} ops/s, p99 ${P99[$1.$2.$3]} ms" >&2
}

STARTED=$(date -u +%H:%M)
for r in $(seq 1 "$ROUNDS"); do
    for label in old new; do
        dir=$OLD
        [ "$label" = new ] && dir=$NEW
        data="$WORK/data-$label-$r"
        config "$WORK/$label.toml" "$data"
        start "$dir" "$WORK/$label.toml"
        bench "$label" "$r" mix load,run default
        bench "$label" "$r" put run write-only
        bench "$label" "$r" get run c
        stop
    done
done
ENDED=$(date -u +%H:%M)

mean() { # LABEL NAME FIELD(OPS|P99)
    local sum=0 v
    for r in $(seq 1 "$ROUNDS"); do
        if [ "$3" = OPS ]; then v=${OPS[$1.$r.$2]}; else v=${P99[$1.$r.$2]}; fi
        sum=$(awk -v a="$sum" -v b="$v" 'BEGIN { print a + b }')
    done
    awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s / n }'
}

{
    echo "$NODES node(s), N=$N, quorum reads and writes; $CLIENTS clients, $KEYS keys, $VALUE_SIZE-byte values, ${DURATION}s per run, $ROUNDS rounds alternating old/new, $(date -u +%F) $STARTED–$ENDED UTC"
    echo
    echo "| workload | old ops/s | new ops/s | new/old | old p99 ms | new p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in mix put get; do
        o=$(mean old $name OPS)
        n=$(mean new $name OPS)
        ratio=$(awk -v a="$n" -v b="$o" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        echo "| $name | $o | $n | $ratio× | $(mean old $name P99) | $(mean new $name P99) |"
    done
} >"$OUT"
