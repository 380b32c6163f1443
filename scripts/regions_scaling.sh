#!/usr/bin/env bash
# Coalescing as regions grow: one 3-node cluster on 127.0.0.1 (ports 21300..), a
# put workload at each region count (the cluster is split up to it between runs:
# 1, 16, 256, 1024 by default), and per 1,000 puts the fsyncs and Raft messages of
# all nodes, the Raft bytes per put, the transport RPCs, entries per fsync and CPU
# per put. The claim under
# test: one fsync and one network batch per round, whatever the number of regions,
# so these stay flat. Every node it started is killed by pid.
#
# usage: scripts/regions_scaling.sh [SHOAL_BINARY] [DURATION] [REGION COUNTS...]
#        (defaults: target/release/shoal, 15s, 1 16 256 1024)
set -euo pipefail

SHOAL=${1:-target/release/shoal}
DURATION=${2:-15s}
shift $(( $# > 2 ? 2 : $# ))
COUNTS=("$@")
[ ${#COUNTS[@]} -eq 0 ] && COUNTS=(1 16 256 1024)
WORK=$(mktemp -d /tmp/shoal-regions.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

members=""
endpoints=""
for i in 1 2 3; do
    members+="$i=127.0.0.1:$((21300 + i)),"
    endpoints+="127.0.0.1:$((21300 + i)),"
done
members=${members%,}
endpoints=${endpoints%,}
for i in 1 2 3; do
    "$SHOAL" node --store-id "$i" --addr "127.0.0.1:$((21300 + i))" \
        --status-addr "127.0.0.1:$((21400 + i))" --data-dir "$WORK/node-$i" \
        --initial-cluster "$members" --initial-regions 1 2>"$WORK/node-$i.log" &
    PIDS+=($!)
done
sleep 3

echo "| regions | ops/s | fsyncs / 1k ops | raft messages / 1k ops | raft bytes / op | transport RPCs / 1k ops | entries / fsync | CPU us/op (servers + client) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for k in "${COUNTS[@]}"; do
    json="$WORK/bench-$k.json"
    "$SHOAL" bench put --endpoints "$endpoints" --clients 64 --duration "$DURATION" \
        --warmup 3s --regions "$k" --json "$json" >"$WORK/bench-$k.txt" 2>&1
    python3 - "$json" "$k" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
w = r["cluster_work"]
c = r.get("cost_per_op") or {}
print(f"| {sys.argv[2]} | {r['ops_per_sec']:.0f} | {w['fsyncs_per_op']*1000:.0f} | "
      f"{w['raft_messages_per_op']*1000:.0f} | {w['raft_bytes_per_op']:.0f} | "
      f"{w['transport_rpcs_per_op']*1000:.0f} | "
      f"{w['entries_per_fsync']:.1f} | {c.get('total_cpu_us', 0):.0f} "
      f"({c.get('server_cpu_us', 0):.0f} + {c.get('client_cpu_us', 0):.0f}) |")
PY
done
echo "work dir: $WORK"
