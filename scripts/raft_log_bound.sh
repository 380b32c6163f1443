#!/usr/bin/env bash
# Whether the Raft log stays bounded under a long put workload: a fresh 3-node cluster
# (4 regions, log GC every 2 s from 50 entries) takes `shoal bench put` for DURATION
# while the size of each node's raft/ directory is sampled every 5 s; prints the
# samples, then the largest per node. Every node it started is killed by pid.
#
# usage: scripts/raft_log_bound.sh [SHOAL_BINARY] [DURATION]
#        (defaults: target/release/shoal, 5m)
set -euo pipefail

SHOAL=${1:-target/release/shoal}
DURATION=${2:-5m}
DIR=$(mktemp -d /tmp/shoal-raft-bound.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done' EXIT

members="" endpoints=""
for i in 1 2 3; do
    members+="$i=127.0.0.1:$((21300 + i)),"
    endpoints+="127.0.0.1:$((21300 + i)),"
done
members=${members%,}
endpoints=${endpoints%,}
for i in 1 2 3; do
    cat > "$DIR/node-$i.toml" <<EOF
store-id = $i
data-dir = "$DIR/node-$i"
addr = "127.0.0.1:$((21300 + i))"
status-addr = "127.0.0.1:$((21400 + i))"
initial-cluster = "$members"
initial-regions = 4
raft-log-gc-tick-interval-ms = 2000
raft-log-gc-threshold = 50
EOF
    "$SHOAL" node --config "$DIR/node-$i.toml" > "$DIR/node-$i.log" 2>&1 &
    PIDS+=($!)
    disown $!
done
sleep 2
"$SHOAL" bench put --endpoints "$endpoints" --clients 64 --value-size 256 \
    --keys 100000 --duration "$DURATION" --quiet > "$DIR/bench.txt" 2>&1 &
BENCH=$!
declare -A MAX=([1]=0 [2]=0 [3]=0)
start=$SECONDS
while kill -0 "$BENCH" 2>/dev/null; do
    line="t=$((SECONDS - start))s"
    for i in 1 2 3; do
        size=$(du -sb "$DIR/node-$i/raft" 2>/dev/null | cut -f1)
        size=${size:-0}
        ((size > MAX[$i])) && MAX[$i]=$size
        line+=" node$i=$((size / 1000000))MB"
    done
    echo "$line"
    sleep 5
done
wait "$BENCH" || { cat "$DIR/bench.txt"; exit 1; }
grep -m1 -o '[0-9.]* ops/s' "$DIR/bench.txt" || true
for i in 1 2 3; do
    truncated=$(curl -s -m 3 "http://127.0.0.1:$((21400 + i))/metrics" |
        awk '/^shoal_log_entries_truncated_total/ {print $2}')
    echo "node $i: largest raft/ $((MAX[$i] / 1000000)) MB, entries truncated $truncated"
done
rm -rf "$DIR"
