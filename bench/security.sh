# bench/security.sh — the security on/off sitting of bench/compare.sh
# (`bash bench/compare.sh --security`); sourced by compare.sh, which defines
# the helpers used here (run_bench, bench_value, ringkv_config, stop_all…).
#
# One sitting, ROUNDS rounds (default 2); each round runs, in an order that
# alternates between rounds, every configuration below on 1 node (N=1,
# default 10:1 mix) and on 3 nodes (N=3, quorum mix):
#   plain   no [security] section: plain TCP peers, plain HTTP, no tokens
#   tokens  plain HTTP with bearer tokens checked on every request
#   tls     peer mutual TLS 1.3 and HTTPS, no tokens
#   all     peer mTLS, HTTPS and tokens (what the sample config runs)
# Reported: ops/s and p99 per configuration (mean of the rounds; p99 the
# worst round) and the ratio to plain measured in the same sitting.

ROUNDS=${ROUNDS:-2}
SEC_CONFIGS=(plain tokens tls all)

sec_config() { # FILE NAME N COUNT HTTP PEER MODE
    local file=$1 mode=$7
    ringkv_config "$@"
    case $mode in
    plain) ;;
    tokens) printf '\n[security]\npeer_tls = false\nhttp_tls = false\ntokens_file = "tokens-%s.toml"\nallow_unauthenticated_peers = true\n' "$2" >>"$file" ;;
    tls) printf '\n[security]\npeer_tls = true\nhttp_tls = true\n' >>"$file" ;;
    all) printf '\n[security]\npeer_tls = true\nhttp_tls = true\ntokens_file = "tokens-%s.toml"\n' "$2" >>"$file" ;;
    esac
    if [ "$mode" = tls ] || [ "$mode" = all ]; then
        "$BIN/ringkv" certs init --config "$file" >/dev/null || die "certs init failed for $file"
    fi
}

# sec_run NAME N COUNT HTTP PEER MODE WORKLOAD_ARGS...
sec_run() {
    local name=$1 n=$2 count=$3 http=$4 peer=$5 mode=$6
    shift 6
    local cfg="$WORK/$name.toml" token="" scheme=http i
    local -a access=() curl_args=()
    rm -rf "$WORK/data-$name" "$WORK/certs" "$WORK"/tokens-"$name".toml
    sec_config "$cfg" "$name" "$n" "$count" "$http" "$peer" "$mode"
    if [ "$mode" = tokens ] || [ "$mode" = all ]; then
        token=$("$BIN/ringkv" token create --config "$cfg" --role write 2>/dev/null) ||
            die "token create failed for $cfg"
        access+=(--token "$token")
        curl_args+=(-H "Authorization: Bearer $token")
    fi
    if [ "$mode" = tls ] || [ "$mode" = all ]; then
        scheme=https
        access+=(--ca-file "$WORK/certs/ca.crt")
        curl_args+=(--cacert "$WORK/certs/ca.crt")
    fi
    for i in $(seq 1 "$count"); do
        "$BIN/ringkv" serve --config "$cfg" --node "n$i" >"$WORK/logs/$name-n$i.log" 2>&1 &
        PIDS+=($!)
    done
    local nodes=""
    for i in $(seq 1 "$count"); do
        local url="$scheme://127.0.0.1:$((http + i - 1))/ready" ok=0 t
        for t in $(seq 1 300); do
            if curl -fsS -m 1 -o /dev/null "${curl_args[@]}" "$url" 2>/dev/null; then
                ok=1
                break
            fi
            sleep 0.1
        done
        [ $ok = 1 ] || die "ringkv node n$i of $cfg did not become ready (see $WORK/logs)"
        nodes+="${nodes:+,}127.0.0.1:$((http + i - 1))"
    done
    run_bench "$name" --nodes "$nodes" --phases load,run "${access[@]}" "$@"
    stop_all
}

security_main() {
    for v in ROUNDS; do
        if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -eq 0 ]; then
            die "$v must be a positive integer, not '${!v}'"
        fi
    done
    command -v jq >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 ||
        die "needs jq and curl (apt-get install jq curl)"
    WORK=$(mktemp -d /tmp/ringkv-security.XXXXXX)
    mkdir -p "$WORK/logs" "$WORK/bin"
    BIN=$WORK/bin
    local p1=$((BASE_PORT + 1)) p3=$((BASE_PORT + 11))
    require_ports_free $p1 $((p1 + 1)) $p3 $((p3 + 1)) $((p3 + 2)) $((p3 + 10)) $((p3 + 11)) $((p3 + 12))
    if [ "$SKIP_BUILD" != 1 ]; then
        log "building ringkv and ringkv-bench (release)"
        (cd "$ROOT" && timeout 3600 cargo build --release -p ringkv -p ringkv-bench >&2) ||
            die "cargo build failed"
    fi
    cp "$ROOT/target/release/ringkv" "$ROOT/target/release/ringkv-bench" "$BIN/" ||
        die "no release binaries in $ROOT/target/release"
    local started load_start round mode order
    started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then order=("${SEC_CONFIGS[@]}"); else order=(all tls tokens plain); fi
        for mode in "${order[@]}"; do
            log "round $round: $mode"
            sec_run "one-$mode-$round" 1 1 $p1 $((p1 + 1)) "$mode" --workload default
            sec_run "three-$mode-$round" 3 3 $p3 $((p3 + 10)) "$mode" --workload default \
                --read-consistency quorum --write-consistency quorum
        done
    done
    # mean ops/s and worst p99 over the rounds
    agg() { # TOPOLOGY MODE -> "ops p99_ms errors"
        local ops=0 p99=0 errs=0 r v
        for r in $(seq 1 "$ROUNDS"); do
            v=$(bench_value "$1-$2-$r" .run.total.ops_per_sec)
            ops=$(awk -v a="$ops" -v b="${v:-0}" 'BEGIN {print a + b}')
            v=$(bench_value "$1-$2-$r" .run.total.latency_us.p99)
            p99=$(awk -v a="$p99" -v b="${v:-0}" 'BEGIN {print (b > a ? b : a)}')
            v=$(bench_value "$1-$2-$r" .run.total.errors)
            errs=$((errs + ${v:-0}))
        done
        awk -v o="$ops" -v n="$ROUNDS" -v p="$p99" -v e="$errs" \
            'BEGIN {printf "%.0f %.2f %d", o / n, p / 1000, e}'
    }
    mkdir -p "$(dirname "$OUT")"
    {
        echo "# ringkv security on/off — $started"
        echo
        echo "Produced by \`bash bench/compare.sh --security\`: $ROUNDS rounds (order alternating),"
        echo "$DURATION s per run, $CLIENTS clients, $KEYS keys, $VALUE_SIZE-byte values, the default"
        echo "10:1 read/write mix; durability \"immediate\"; everything on 127.0.0.1 of one machine"
        echo "($(nproc) cores). Load average before: $load_start; after: $(cut -d' ' -f1-3 /proc/loadavg)."
        [ "$DURATION" -lt 10 ] && echo && echo "**Smoke run (DURATION=$DURATION): not a measurement to quote.**"
        echo
        echo "| topology | configuration | ops/s (mean) | p99 ms (worst) | errors | vs plain |"
        echo "|---|---|---:|---:|---:|---:|"
        local topo base ops p99 errs
        for topo in one three; do
            read -r base _ _ <<<"$(agg $topo plain)"
            for mode in "${SEC_CONFIGS[@]}"; do
                read -r ops p99 errs <<<"$(agg $topo "$mode")"
                local label="1 node"
                [ $topo = three ] && label="3 nodes, quorum"
                echo "| $label | $mode | $ops | $p99 | $errs | $(awk -v a="$ops" -v b="$base" 'BEGIN {if (b > 0) printf "%.2f×", a / b; else print "-"}') |"
            done
        done
        echo
        echo "Configurations: plain = no \`[security]\`; tokens = bearer tokens over plain HTTP;"
        echo "tls = peer mutual TLS 1.3 + HTTPS (TLS 1.3, ECDSA P-256 certificates from \`ringkv certs init\`);"
        echo "all = tls + tokens. ringkv-bench keeps one connection per client, so TLS handshakes are"
        echo "a start-up cost; the figures measure encryption and token checks per request."
        echo
        raw_and_notes
    } >"$OUT"
    log "summary (also in $OUT)"
    cat "$OUT" >&2
}

security_main
