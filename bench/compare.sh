#!/usr/bin/env bash
# bench/compare.sh — measure ringkv next to reference systems, in one sitting,
# on this machine, and write a markdown summary.
#
#   sudo bash bench/compare.sh [--out FILE]        (default: bench/results-latest.md)
#   DURATION=2 bash bench/compare.sh               (quick smoke run)
#   bash bench/compare.sh --security [--out FILE]  (security on/off sitting,
#        ringkv only: see bench/security.sh; default out bench/security-latest.md)
#
# What runs (everything on 127.0.0.1, every run bounded in time, every server
# stopped on exit):
#   1. ringkv, one node (N=1, durability "immediate"): ringkv-bench GET-only,
#      PUT-only and the default 10:1 mix; wrk GETs with a Lua script.
#   2. redis-server in memory, then with --appendonly yes --appendfsync always:
#      redis-benchmark -t set,get -d VALUE_SIZE -c CLIENTS.
#   3. ringkv, three nodes (N=3, quorum reads and writes): default mix,
#      write-only, read-only.
#   4. etcd, three members: durable puts and linearizable reads through the
#      HTTP/JSON gateway (POST /v3/kv/put, /v3/kv/range) driven by wrk with a
#      Lua script — Debian's etcd packages ship no `benchmark` tool, and
#      etcdctl (one process per request) is far too slow to load a server.
#
# Environment (all optional):
#   DURATION=10      seconds per measured run
#   CLIENTS=64       concurrent clients / connections
#   KEYS=10000       key space (preloaded where reads need it)
#   VALUE_SIZE=1024  bytes per value
#   BASE_PORT=27400  first of the ports used (BASE_PORT+1 .. BASE_PORT+45)
#   SKIP_BUILD=1     use the existing target/release binaries
#   KEEP_TMP=1       keep the work directory (logs, JSON, data) after the run
#
# Needs: cargo (unless SKIP_BUILD=1), and wrk, redis-server, redis-benchmark,
# etcd, etcdctl, jq, curl — installed with apt-get when missing (as root).

set -euo pipefail

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-1024}
BASE_PORT=${BASE_PORT:-27400}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=""
SECURITY=0

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
    --out)
        [ $# -ge 2 ] || { echo "compare.sh: --out needs a file name" >&2; exit 2; }
        OUT=$2
        shift 2
        ;;
    --out=*)
        OUT=${1#--out=}
        shift
        ;;
    --security)
        SECURITY=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "compare.sh: unknown argument '$1' (try --help)" >&2
        exit 2
        ;;
    esac
done

for v in DURATION CLIENTS KEYS VALUE_SIZE BASE_PORT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then
        echo "compare.sh: $v must be a positive integer, not '${!v}'" >&2
        exit 2
    fi
done
if [ "$VALUE_SIZE" -lt 24 ]; then
    echo "compare.sh: VALUE_SIZE must be at least 24 (ringkv-bench's value header)" >&2
    exit 2
fi
if [ -z "$OUT" ]; then
    if [ "$SECURITY" = 1 ]; then OUT="$SCRIPT_DIR/security-latest.md"; else OUT="$SCRIPT_DIR/results-latest.md"; fi
fi
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

log() { printf '\n### %s\n' "$*" >&2; }
die() {
    echo "compare.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- packages ---

ensure_packages() {
    local -a missing=()
    local pair cmd pkg
    for pair in wrk:wrk redis-server:redis-server redis-benchmark:redis-tools \
        etcd:etcd-server etcdctl:etcd-client jq:jq curl:curl; do
        cmd=${pair%%:*}
        pkg=${pair##*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root to install them"
    log "installing ${missing[*]}"
    # Keep the packages' init scripts from starting system-wide redis/etcd
    # daemons: policy-rc.d exit 101 = "action forbidden" (Debian's mechanism).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    timeout 600 apt-get update -q >&2 || rc=$?
    if [ $rc -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive timeout 900 \
            apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || rc=$?
    fi
    [ $made_policy -eq 1 ] && rm -f "$policy"
    [ $rc -eq 0 ] || die "apt-get failed (exit $rc) installing ${missing[*]}"
}

# ------------------------------------------------------- process handling ---

WORK=""
declare -a PIDS=()

stop_pid() { # pid: SIGTERM, up to 10 s, then SIGKILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "compare.sh: pid $pid ignored SIGTERM, killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    PIDS=()
}

cleanup() {
    local rc=$?
    stop_all
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP_TMP" = 1 ] || [ $rc -ne 0 ]; then
            echo "compare.sh: work directory kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_ports_free() {
    local p
    for p in "$@"; do
        port_free "$p" || die "port $p on 127.0.0.1 is in use (set BASE_PORT to move every port)"
    done
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
    local url=$1 secs=$2 i
    for i in $(seq 1 $((secs * 10))); do
        if curl -fsS -m 1 -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_redis PORT
wait_redis() {
    local i
    for i in $(seq 1 100); do
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null || true)" = PONG ] && return 0
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------- results ---

declare -A R=() # name -> value
declare -a NOTES=()
declare -a RAW=()

# to_ms "1.23ms" | "850.00us" | "2.01s" | "1.5m"
to_ms() {
    awk -v x="$1" 'BEGIN {
        n = x + 0; u = x; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

# run_bench NAME ARGS...: ringkv-bench with a time bound; JSON to $WORK/NAME.json
run_bench() {
    local name=$1
    shift
    local limit=$((DURATION + 180))
    log "ringkv-bench $name: $*"
    local rc=0
    timeout -s INT -k 15 "$limit" "$BIN/ringkv-bench" --clients "$CLIENTS" --keys "$KEYS" \
        --value-size "$VALUE_SIZE" --duration "${DURATION}s" --json "$WORK/$name.json" "$@" \
        >"$WORK/logs/$name.log" 2>&1 || rc=$?
    grep -v '^\[' "$WORK/logs/$name.log" | sed 's/^/    /' >&2 || true
    if [ $rc -ne 0 ] || [ ! -s "$WORK/$name.json" ]; then
        NOTES+=("ringkv-bench $name exited with status $rc (log: see work directory)")
        return 0
    fi
    RAW+=("ringkv-bench $name: $(jq -r '"\(.run.total.ops_per_sec|floor) ops/s, p50 \(.run.total.latency_us.p50 // "-") µs, p99 \(.run.total.latency_us.p99 // "-") µs, errors \(.run.total.errors)"' "$WORK/$name.json")")
}

# bench_value NAME JQ_PATH: a number from a ringkv-bench JSON, or empty
bench_value() {
    [ -s "$WORK/$1.json" ] || return 0
    jq -r "$2 // empty" "$WORK/$1.json"
}

# run_wrk NAME URL LUA CONNECTIONS [ENV=VAL...]: one wrk process
run_wrk() {
    local name=$1 url=$2 lua=$3 conns=$4
    shift 4
    local threads=2
    [ "$conns" -lt 2 ] && threads=1
    log "wrk $name: $url ($conns connections, $lua)"
    local rc=0
    env "$@" WRK_THREADS=$threads timeout -k 5 $((DURATION + 30)) \
        wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
        -s "$SCRIPT_DIR/scripts/$lua" "$url" >"$WORK/logs/$name.log" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/logs/$name.log" >&2
    [ $rc -eq 0 ] || NOTES+=("wrk $name exited with status $rc")
}

# wrk_parse NAME: "rps p99_ms non2xx errors" from a wrk log
wrk_parse() {
    local f="$WORK/logs/$1.log"
    local rps p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f" 2>/dev/null || true)
    p99=$(awk '$1 == "99%" {print $2}' "$f" 2>/dev/null || true)
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f" 2>/dev/null || true)
    sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$f" 2>/dev/null || true)
    [ -n "$p99" ] && p99=$(to_ms "$p99")
    echo "${rps:-} ${p99:-} ${non2xx:-0} ${sockerr:-0}"
}

# run_redis_benchmark NAME PORT TEST: calibrates the request count to about
# DURATION seconds, then runs; sets R[NAME.rps] and R[NAME.p99]
run_redis_benchmark() {
    local name=$1 port=$2 test=$3
    local cal rps n line rc=0
    cal=$(timeout -k 5 60 redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -d "$VALUE_SIZE" \
        -c "$CLIENTS" -n 5000 -r "$KEYS" --csv 2>/dev/null | awk -F'","' 'NR > 1 {print $2; exit}' || true)
    rps=${cal:-1000}
    n=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); if (n < 2000) n = 2000; print n }')
    log "redis-benchmark $name: -t $test -n $n (calibrated at ${rps%.*} req/s)"
    timeout -k 5 $((DURATION * 4 + 60)) redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" \
        -d "$VALUE_SIZE" -c "$CLIENTS" -n "$n" -r "$KEYS" --csv >"$WORK/logs/$name.csv" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/logs/$name.csv" >&2
    if [ $rc -ne 0 ]; then
        NOTES+=("redis-benchmark $name exited with status $rc")
        return 0
    fi
    line=$(grep -i "^\"$test\"" "$WORK/logs/$name.csv" | head -1 | tr -d '"' || true)
    R[$name.rps]=$(echo "$line" | cut -d, -f2)
    R[$name.p99]=$(echo "$line" | cut -d, -f7)
    RAW+=("redis-benchmark $name: ${R[$name.rps]} req/s, p99 ${R[$name.p99]} ms ($n requests)")
}

# ----------------------------------------------------------------- servers ---

ringkv_config() { # FILE NAME N NODE_COUNT FIRST_HTTP FIRST_PEER
    local file=$1 name=$2 n=$3 count=$4 http=$5 peer=$6 i
    local quorum=$((n / 2 + 1))
    {
        printf '[cluster]\nname = "%s"\nreplication_factor = %d\nr = %d\nw = %d\n' \
            "$name" "$n" "$quorum" "$quorum"
        printf 'vnodes = 256\nrequest_timeout_ms = 2000\nmax_clock_drift_ms = 5000\n'
        printf 'max_frame_bytes = 16777216\n\n'
        printf '[storage]\ndurability = "immediate"\nmax_value_bytes = 1048576\n'
        for i in $(seq 1 "$count"); do
            printf '\n[[nodes]]\nid = "n%d"\nhttp_addr = "127.0.0.1:%d"\n' "$i" $((http + i - 1))
            printf 'peer_addr = "127.0.0.1:%d"\ndata_dir = "data-%s/n%d"\n' $((peer + i - 1)) "$name" "$i"
        done
    } >"$file"
}

start_ringkv() { # CONFIG NODE_COUNT FIRST_HTTP
    local cfg=$1 count=$2 http=$3 i
    for i in $(seq 1 "$count"); do
        "$BIN/ringkv" serve --config "$cfg" --node "n$i" >"$WORK/logs/ringkv-$(basename "$cfg" .toml)-n$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in $(seq 1 "$count"); do
        wait_http "http://127.0.0.1:$((http + i - 1))/ready" 30 ||
            die "ringkv node n$i of $cfg did not become ready (see $WORK/logs)"
    done
}

raw_and_notes() { # the report's raw results and the problems seen
    echo "## Raw results"
    echo
    for line in "${RAW[@]}"; do echo "- $line"; done
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo
        echo "## Problems during the run"
        echo
        for line in "${NOTES[@]}"; do echo "- $line"; done
    fi
}

# ------------------------------------------------------------------- main ---

if [ "$SECURITY" = 1 ]; then
    # shellcheck source=bench/security.sh
    source "$SCRIPT_DIR/security.sh"
    exit 0
fi

ensure_packages

WORK=$(mktemp -d /tmp/ringkv-compare.XXXXXX)
mkdir -p "$WORK/logs" "$WORK/bin"
BIN=$WORK/bin

P_SINGLE=$((BASE_PORT + 1))       # http; peer +1
P_CLUSTER=$((BASE_PORT + 11))     # http 11..13; peer 21..23
P_REDIS=$((BASE_PORT + 30))
P_ETCD_CLIENT=$((BASE_PORT + 31)) # 31..33
P_ETCD_PEER=$((BASE_PORT + 41))   # 41..43
require_ports_free $P_SINGLE $((P_SINGLE + 1)) $P_CLUSTER $((P_CLUSTER + 1)) $((P_CLUSTER + 2)) \
    $((P_CLUSTER + 10)) $((P_CLUSTER + 11)) $((P_CLUSTER + 12)) $P_REDIS \
    $P_ETCD_CLIENT $((P_ETCD_CLIENT + 1)) $((P_ETCD_CLIENT + 2)) \
    $P_ETCD_PEER $((P_ETCD_PEER + 1)) $((P_ETCD_PEER + 2))

if [ "$SKIP_BUILD" != 1 ]; then
    log "building ringkv and ringkv-bench (release)"
    (cd "$ROOT" && timeout 3600 cargo build --release -p ringkv -p ringkv-bench >&2) ||
        die "cargo build failed"
fi
# Private copies: a concurrent rebuild cannot swap a binary mid-run.
cp "$ROOT/target/release/ringkv" "$ROOT/target/release/ringkv-bench" "$BIN/" ||
    die "no release binaries in $ROOT/target/release (build them or unset SKIP_BUILD)"

CORES=$(nproc)
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# 1. ringkv, single node ------------------------------------------------------
log "ringkv single node (N=1, durable) on 127.0.0.1:$P_SINGLE"
ringkv_config "$WORK/single.toml" single 1 1 $P_SINGLE $((P_SINGLE + 1))
start_ringkv "$WORK/single.toml" 1 $P_SINGLE
SINGLE=127.0.0.1:$P_SINGLE
run_bench single-get --nodes $SINGLE --phases load,run --workload c
run_wrk wrk-get "http://$SINGLE" ringkv_get.lua "$CLIENTS" KEYS="$KEYS" KEY_PREFIX=bench
run_bench single-put --nodes $SINGLE --phases run --workload write-only
run_bench single-mix --nodes $SINGLE --phases run --workload default
stop_all

# 2. redis ----------------------------------------------------------------------
for mode in mem aof; do
    mkdir -p "$WORK/redis-$mode"
    if [ $mode = mem ]; then
        extra=(--save "" --appendonly no)
        what="in memory"
    else
        extra=(--save "" --appendonly yes --appendfsync always)
        what="appendonly yes, appendfsync always"
    fi
    log "redis-server ($what) on 127.0.0.1:$P_REDIS"
    redis-server --bind 127.0.0.1 --port $P_REDIS --dir "$WORK/redis-$mode" --daemonize no \
        --protected-mode yes "${extra[@]}" >"$WORK/logs/redis-$mode.log" 2>&1 &
    PIDS+=($!)
    wait_redis $P_REDIS || die "redis-server did not start (see $WORK/logs/redis-$mode.log)"
    run_redis_benchmark redis-$mode-set $P_REDIS set
    run_redis_benchmark redis-$mode-get $P_REDIS get
    stop_all
done

# 3. ringkv, three nodes --------------------------------------------------------
log "ringkv cluster (3 nodes, N=3, quorum) on 127.0.0.1:$P_CLUSTER..$((P_CLUSTER + 2))"
ringkv_config "$WORK/cluster.toml" cluster 3 3 $P_CLUSTER $((P_CLUSTER + 10))
start_ringkv "$WORK/cluster.toml" 3 $P_CLUSTER
CLUSTER=127.0.0.1:$P_CLUSTER,127.0.0.1:$((P_CLUSTER + 1)),127.0.0.1:$((P_CLUSTER + 2))
Q=(--read-consistency quorum --write-consistency quorum)
run_bench cluster-mix --nodes "$CLUSTER" --phases load,run --workload default "${Q[@]}"
run_bench cluster-put --nodes "$CLUSTER" --phases run --workload write-only "${Q[@]}"
run_bench cluster-get --nodes "$CLUSTER" --phases run --workload c "${Q[@]}"
stop_all

# 4. etcd, three members --------------------------------------------------------
log "etcd cluster (3 members) on 127.0.0.1:$P_ETCD_CLIENT..$((P_ETCD_CLIENT + 2))"
initial=""
for i in 1 2 3; do
    initial+="${initial:+,}e$i=http://127.0.0.1:$((P_ETCD_PEER + i - 1))"
done
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:$((P_ETCD_CLIENT + i - 1))" \
        --advertise-client-urls "http://127.0.0.1:$((P_ETCD_CLIENT + i - 1))" \
        --listen-peer-urls "http://127.0.0.1:$((P_ETCD_PEER + i - 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((P_ETCD_PEER + i - 1))" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token "ringkv-compare-$$" \
        --logger zap --log-level error >"$WORK/logs/etcd-e$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do
    wait_http "http://127.0.0.1:$((P_ETCD_CLIENT + i - 1))/health" 60 ||
        die "etcd member e$i did not become healthy (see $WORK/logs/etcd-e$i.log)"
done
# One wrk process per member (as ringkv-bench spreads clients over nodes);
# ops/s are summed, p99 is the worst of the three.
etcd_wrk() { # NAME MODE
    local name=$1 mode=$2 i conns pids=()
    for i in 1 2 3; do
        conns=$((CLIENTS / 3 + (i <= CLIENTS % 3 ? 1 : 0)))
        [ "$conns" -ge 1 ] || continue
        run_wrk "$name-e$i" "http://127.0.0.1:$((P_ETCD_CLIENT + i - 1))" etcd_kv.lua "$conns" \
            MODE="$mode" KEYS="$KEYS" VALUE_SIZE="$VALUE_SIZE" KEY_PREFIX=bench \
            THREAD_OFFSET=$((i - 1)) THREAD_STRIDE=3 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    local sum=0 worst=0 bad=0 r p n s
    for i in 1 2 3; do
        [ -f "$WORK/logs/$name-e$i.log" ] || continue
        read -r r p n s <<<"$(wrk_parse "$name-e$i")"
        sum=$(awk -v a="$sum" -v b="${r:-0}" 'BEGIN {print a + b}')
        worst=$(awk -v a="$worst" -v b="${p:-0}" 'BEGIN {print (b > a ? b : a)}')
        bad=$((bad + ${n:-0} + ${s:-0}))
    done
    R[$name.rps]=$sum
    R[$name.p99]=$worst
    R[$name.errors]=$bad
    RAW+=("wrk $name (3 processes): $sum req/s, worst p99 $worst ms, $bad non-2xx/socket errors")
}
etcd_wrk etcd-put put
etcd_wrk etcd-range range
# Sanity: the gateway really stored values (one key, decoded size).
etcd_check=$(curl -fsS -m 5 -X POST -d "{\"key\":\"$(printf 'bench-0' | base64)\"}" \
    "http://127.0.0.1:$P_ETCD_CLIENT/v3/kv/range" 2>/dev/null |
    jq -r '.kvs[0].value // empty' | base64 -d 2>/dev/null | wc -c || true)
[ "${etcd_check:-0}" -eq "$VALUE_SIZE" ] ||
    NOTES+=("etcd sanity check: key bench-0 holds ${etcd_check:-0} bytes, expected $VALUE_SIZE")
stop_all

# ------------------------------------------------------------------ summary ---

r=$(wrk_parse wrk-get)
read -r WRK_RPS WRK_P99 WRK_NON2XX WRK_SOCK <<<"$r"
RAW+=("wrk ringkv GET: ${WRK_RPS:-?} req/s, p99 ${WRK_P99:-?} ms, non-2xx ${WRK_NON2XX:-0}, socket errors ${WRK_SOCK:-0}")
[ "${WRK_NON2XX:-0}" = 0 ] || NOTES+=("wrk against ringkv saw $WRK_NON2XX non-2xx answers (missing keys?)")

ms() { # µs -> ms with 2 decimals, or "-"
    if [ -n "${1:-}" ]; then awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; else echo "-"; fi
}
num() { if [ -n "${1:-}" ]; then awk -v x="$1" 'BEGIN {printf "%.0f", x}'; else echo "-"; fi; }
ratio() {
    if [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v b="$2" 'BEGIN {exit !(b > 0)}'; then
        awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'
    else
        echo "-"
    fi
}
# Mix throughput derived from separate read and write rates: time per
# operation weighted by the mix (10 reads : 1 write).
mix_rate() {
    if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then
        awk -v r="$1" -v w="$2" 'BEGIN { if (r > 0 && w > 0) printf "%.0f", 1 / ((10/11) / r + (1/11) / w) }'
    fi
}
fsync() {
    local v
    v=$(bench_value "$1" '.fsyncs.commits_per_acked_write')
    if [ -n "$v" ]; then awk -v x="$v" 'BEGIN {printf "%.2f fsyncs/ack write", x}'; else echo "fsyncs/write n/a"; fi
}
errs() {
    local e
    e=$(bench_value "$1" '.run.total.errors')
    [ -n "$e" ] && [ "$e" != 0 ] && echo ", $e errors"
    true
}

declare -a ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 |"); }

g_rps=$(bench_value single-get .run.read.ops_per_sec)
g_p99=$(bench_value single-get .run.read.latency_us.p99)
p_rps=$(bench_value single-put .run.write.ops_per_sec)
p_p99=$(bench_value single-put .run.write.latency_us.p99)
m_rps=$(bench_value single-mix .run.total.ops_per_sec)
m_p99=$(bench_value single-mix .run.total.latency_us.p99)
redis_mem_mix=$(mix_rate "${R[redis-mem-get.rps]:-}" "${R[redis-mem-set.rps]:-}")
redis_aof_mix=$(mix_rate "${R[redis-aof-get.rps]:-}" "${R[redis-aof-set.rps]:-}")

row "1 node GET (ringkv-bench)" "$(num "$g_rps")" "$(ms "$g_p99")" "redis GET, in memory" \
    "$(num "${R[redis-mem-get.rps]:-}")" "${R[redis-mem-get.p99]:--}" "$(ratio "$g_rps" "${R[redis-mem-get.rps]:-}")" "$(errs single-get | sed 's/^, //')"
row "1 node GET (wrk)" "$(num "$WRK_RPS")" "${WRK_P99:--}" "redis GET, in memory" \
    "$(num "${R[redis-mem-get.rps]:-}")" "${R[redis-mem-get.p99]:--}" "$(ratio "$WRK_RPS" "${R[redis-mem-get.rps]:-}")" \
    "ringkv-bench/wrk on the same server: $(ratio "$g_rps" "$WRK_RPS")"
row "1 node PUT (ringkv-bench, durable)" "$(num "$p_rps")" "$(ms "$p_p99")" "redis SET, appendfsync always" \
    "$(num "${R[redis-aof-set.rps]:-}")" "${R[redis-aof-set.p99]:--}" "$(ratio "$p_rps" "${R[redis-aof-set.rps]:-}")" "$(fsync single-put)$(errs single-put)"
row "1 node PUT (ringkv-bench, durable)" "$(num "$p_rps")" "$(ms "$p_p99")" "redis SET, in memory" \
    "$(num "${R[redis-mem-set.rps]:-}")" "${R[redis-mem-set.p99]:--}" "$(ratio "$p_rps" "${R[redis-mem-set.rps]:-}")" "durable vs. not durable"
row "1 node mix 10:1 (ringkv-bench)" "$(num "$m_rps")" "$(ms "$m_p99")" "redis 10:1, appendfsync always (derived)" \
    "$(num "$redis_aof_mix")" "-" "$(ratio "$m_rps" "$redis_aof_mix")" "$(fsync single-mix)$(errs single-mix)"
row "1 node mix 10:1 (ringkv-bench)" "$(num "$m_rps")" "$(ms "$m_p99")" "redis 10:1, in memory (derived)" \
    "$(num "$redis_mem_mix")" "-" "$(ratio "$m_rps" "$redis_mem_mix")" ""

cm_rps=$(bench_value cluster-mix .run.total.ops_per_sec)
cm_p99=$(bench_value cluster-mix .run.total.latency_us.p99)
cp_rps=$(bench_value cluster-put .run.write.ops_per_sec)
cp_p99=$(bench_value cluster-put .run.write.latency_us.p99)
cg_rps=$(bench_value cluster-get .run.read.ops_per_sec)
cg_p99=$(bench_value cluster-get .run.read.latency_us.p99)
etcd_mix=$(mix_rate "${R[etcd-range.rps]:-}" "${R[etcd-put.rps]:-}")

row "3 nodes quorum PUT (ringkv-bench)" "$(num "$cp_rps")" "$(ms "$cp_p99")" "etcd put, 3 members" \
    "$(num "${R[etcd-put.rps]:-}")" "${R[etcd-put.p99]:--}" "$(ratio "$cp_rps" "${R[etcd-put.rps]:-}")" "$(fsync cluster-put)$(errs cluster-put)"
row "3 nodes quorum GET (ringkv-bench)" "$(num "$cg_rps")" "$(ms "$cg_p99")" "etcd linearizable range" \
    "$(num "${R[etcd-range.rps]:-}")" "${R[etcd-range.p99]:--}" "$(ratio "$cg_rps" "${R[etcd-range.rps]:-}")" "$(errs cluster-get | sed 's/^, //')"
row "3 nodes quorum mix 10:1 (ringkv-bench)" "$(num "$cm_rps")" "$(ms "$cm_p99")" "etcd 10:1 (derived)" \
    "$(num "$etcd_mix")" "-" "$(ratio "$cm_rps" "$etcd_mix")" "$(fsync cluster-mix)$(errs cluster-mix)"

per_core() { if [ -n "${1:-}" ]; then awk -v x="$1" -v c="$CORES" 'BEGIN {printf "%.0f", x / c}'; else echo "-"; fi; }

mkdir -p "$(dirname "$OUT")"
{
    echo "# ringkv comparison — $STARTED"
    echo
    echo "Produced by \`bench/compare.sh\`: $DURATION s per run, $CLIENTS clients/connections,"
    echo "$KEYS keys, $VALUE_SIZE-byte values; everything on 127.0.0.1 of one machine"
    echo "($CORES cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || echo unknown CPU))."
    echo "Load generators share the cores with the servers they measure. Load average before"
    echo "the first run: $LOAD_AT_START (1/5/15 min); at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)."
    [ "$DURATION" -lt 10 ] && echo && echo "**Smoke run (DURATION=$DURATION): not a measurement to quote.**"
    echo
    echo "| ringkv scenario | ringkv ops/s | ringkv p99 ms | reference | ref ops/s | ref p99 ms | ringkv / ref | notes |"
    echo "|---|---:|---:|---|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "ringkv ops/s per core (÷ $CORES): 1-node GET $(per_core "$g_rps"), PUT $(per_core "$p_rps"), mix $(per_core "$m_rps");"
    echo "3-node quorum GET $(per_core "$cg_rps"), PUT $(per_core "$cp_rps"), mix $(per_core "$cm_rps")."
    echo
    echo "## How each figure was measured"
    echo
    echo "- ringkv: \`ringkv-bench\` (closed loop, $CLIENTS keep-alive HTTP/1.1 connections spread over the"
    echo "  nodes, uniform keys), durability \"immediate\" (fsync before acknowledging). 1 node: N=1."
    echo "  3 nodes: N=3, \`?consistency=quorum\` on reads and writes. GET-only runs read preloaded keys."
    echo "- wrk: \`wrk -t2 -c$CLIENTS --latency\` with \`bench/scripts/ringkv_get.lua\` (random preloaded key)."
    echo "- redis $(redis-server --version 2>/dev/null | awk '{print $3}' | sed 's/v=//'): \`redis-benchmark -t set|get -d $VALUE_SIZE -c $CLIENTS -r $KEYS\`,"
    echo "  request count calibrated to about $DURATION s; in memory (\`--save '' --appendonly no\`) and"
    echo "  durable (\`--appendonly yes --appendfsync always\`). SET runs before GET, so GETs find values."
    echo "- etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'): 3 members, wrk with \`bench/scripts/etcd_kv.lua\` on the HTTP/JSON"
    echo "  gateway (\`POST /v3/kv/put\`, \`POST /v3/kv/range\` — linearizable by default), one wrk"
    echo "  process per member with $CLIENTS connections in total; ops/s summed, p99 = worst member."
    echo "- \"derived\" mix figures: 1 / (10/11 / read rate + 1/11 / write rate) from the separate runs."
    echo "- fsyncs/ack write: growth of \`ringkv_commits_total\` (all nodes) per write the bench saw"
    echo "  acknowledged, when the nodes serve \`GET /metrics\`."
    echo
    raw_and_notes
} >"$OUT"

log "summary (also in $OUT)"
cat "$OUT" >&2
