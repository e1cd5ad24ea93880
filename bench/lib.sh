# Shared by the bench scripts: a 3-node cluster on 127.0.0.1 in $TMP, ports
# from $BASE (HTTP $BASE+i, peers $BASE+10+i). Source it after setting TMP
# and BASE; every node started is killed on exit and $TMP removed.
PIDS=()
PID=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

cluster_config() { # $1 = cluster name, $2 = hints enabled, $3 = repair bandwidth
  cat > "$TMP/config.toml" <<EOF
[cluster]
name = "$1"
replication_factor = 3
[storage]
durability = "immediate"
min_free_bytes = 0
[gossip]
interval_ms = 200
[hints]
enabled = $2
[repair]
anti_entropy_interval_ms = 3600000
bandwidth_bytes_per_sec = $3
EOF
  for i in 1 2 3; do
    cat >> "$TMP/config.toml" <<EOF
[[nodes]]
id = "n$i"
http_addr = "127.0.0.1:$((BASE + i))"
peer_addr = "127.0.0.1:$((BASE + 10 + i))"
data_dir = "data/n$i"
EOF
  done
}

start_node() { # $1 = the ringkv binary, $2 = node index; waits for /health (10 s)
  RUST_LOG=warn "$1" serve --config "$TMP/config.toml" --node "n$2" >> "$TMP/n$2.log" 2>&1 &
  PID[$2]=$!
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$((BASE + $2))/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "node n$2 did not start" >&2; cat "$TMP/n$2.log" >&2; exit 1
}

status_of() { # $1 = observer index, $2 = member id
  curl -s "http://127.0.0.1:$((BASE + $1))/v1/cluster" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print([m['status'] for m in d['members'] if m['id']=='$2'][0])"
}
