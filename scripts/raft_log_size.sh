#!/usr/bin/env bash
# The Raft log's size on disk after a put workload, with log GC at its defaults and
# with log GC off, alternated (on off off on) so that drift in the machine's speed
# favours neither. Each run starts a fresh 3-node cluster on 127.0.0.1 (ports 21100..),
# runs `shoal bench put` against it, then reports the bytes under each node's raft/
# (du) and what the nodes report (shoal_log_engine_disk_bytes,
# shoal_log_entries_truncated_total). Every node it started is killed by pid.
#
# usage: scripts/raft_log_size.sh [SHOAL_BINARY] [DURATION]
#        (defaults: target/release/shoal, 60s)
set -euo pipefail

SHOAL=${1:-target/release/shoal}
DURATION=${2:-60s}
WORK=$(mktemp -d /tmp/shoal-raft-size.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

run() { # $1 = label, $2 = extra TOML lines
    local label=$1 extra=$2 dir="$WORK/$1-$RANDOM" members="" endpoints=""
    mkdir -p "$dir"
    for i in 1 2 3; do
        members+="$i=127.0.0.1:$((21100 + i)),"
        endpoints+="127.0.0.1:$((21100 + i)),"
    done
    members=${members%,}
    endpoints=${endpoints%,}
    PIDS=()
    for i in 1 2 3; do
        cat > "$dir/node-$i.toml" <<EOF
store-id = $i
data-dir = "$dir/node-$i"
addr = "127.0.0.1:$((21100 + i))"
status-addr = "127.0.0.1:$((21200 + i))"
initial-cluster = "$members"
initial-regions = 4
$extra
EOF
        "$SHOAL" node --config "$dir/node-$i.toml" > "$dir/node-$i.log" 2>&1 &
        PIDS+=($!)
        disown $!
    done
    sleep 2
    "$SHOAL" bench put --endpoints "$endpoints" --clients 64 --value-size 256 \
        --keys 100000 --duration "$DURATION" --quiet > "$dir/bench.txt" 2>&1 || {
        cat "$dir/bench.txt"
        exit 1
    }
    local ops
    ops=$(grep -m1 -o '[0-9.]* ops/s' "$dir/bench.txt" || echo "? ops/s")
    for i in 1 2 3; do
        local du metrics disk truncated
        du=$(du -sb "$dir/node-$i/raft" | cut -f1)
        metrics=$(curl -s -m 3 "http://127.0.0.1:$((21200 + i))/metrics")
        disk=$(echo "$metrics" | awk '/^shoal_log_engine_disk_bytes/ {print $2}')
        truncated=$(echo "$metrics" | awk '/^shoal_log_entries_truncated_total/ {print $2}')
        echo "$label node $i: raft/ $du bytes (engine reports $disk), entries truncated $truncated, $ops"
    done
    cleanup
    sleep 1
}

GC_OFF='raft-log-gc-threshold = 1000000000000'
run gc-on ""
run gc-off "$GC_OFF"
run gc-off "$GC_OFF"
run gc-on ""
rm -rf "$WORK"
