#!/usr/bin/env bash
# Load on 1% of the regions: does a store's crowd of dormant regions cost the busy
# ones anything? Two 3-node clusters on 127.0.0.1 (ports 21700..), run in the
# order A B B A: A has BIG regions, B only HOT; the same put load goes to H
# regions of each (`shoal bench --hot-regions H`: keys confined to the first keys
# of an even split into H), so A has H busy regions and BIG - H idle ones, B has
# only the H busy ones. Reported per run: puts/s, p99, and the dormant peers per
# node sampled in the middle of the run. Every node it started is killed by pid.
#
# usage: scripts/dormant_load.sh [SHOAL_BINARY] [BIG] [HOT] [DURATION]
#        (defaults: target/release/shoal, 10000, 100, 20s)
set -euo pipefail
source "$(dirname "$0")/common.sh"

SHOAL=${1:-target/release/shoal}
BIG=${2:-10000}
HOT=${3:-100}
DURATION=${4:-20s}

trap cleanup EXIT

# run REGIONS: one cluster of REGIONS regions, settled, then the load.
run() {
    local k=$1 work members="" endpoints=""
    work=$(mktemp -d /tmp/shoal-dload.XXXXXX)
    PIDS=()
    for i in 1 2 3; do
        members+="$i=127.0.0.1:$((21700 + i)),"
        endpoints+="127.0.0.1:$((21700 + i)),"
    done
    members=${members%,}
    endpoints=${endpoints%,}
    for i in 1 2 3; do
        "$SHOAL" node --store-id "$i" --addr "127.0.0.1:$((21700 + i))" \
            --status-addr "127.0.0.1:$((21800 + i))" --data-dir "$work/node-$i" \
            --initial-cluster "$members" --initial-regions "$k" --log-level warn \
            2>"$work/node-$i.log" &
        PIDS+=($!)
    done
    # Settled: every region led and (but the directory's) dormant.
    for _ in $(seq 1 600); do
        sleep 1
        leaders=0 dormant=0
        for i in 1 2 3; do
            leaders=$((leaders + $(metric $((21800 + i)) shoal_leaders)))
            dormant=$((dormant + $(metric $((21800 + i)) shoal_dormant_regions)))
        done
        [ "$leaders" -ge "$k" ] && [ "$dormant" -ge $((3 * (k - 1))) ] && break
    done
    json="$work/bench.json"
    "$SHOAL" bench put --endpoints "$endpoints" --clients 64 --duration "$DURATION" \
        --warmup 5s --hot-regions "$HOT" --json "$json" >"$work/bench.txt" 2>&1 &
    local bench=$!
    # Mid-run sample of the dormant peers (warmup + half the run).
    sleep $((5 + ${DURATION%s} / 2))
    dormant=0
    for i in 1 2 3; do
        dormant=$((dormant + $(metric $((21800 + i)) shoal_dormant_regions)))
    done
    wait "$bench"
    python3 - "$json" "$k" "$((dormant / 3))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p99 = round(r["latency"]["p99_ms"], 1)
print(f"| {sys.argv[2]} | {r['ops_per_sec']:.0f} | {p99} | {sys.argv[3]} |")
PY
    cleanup
    wait 2>/dev/null || true
    rm -rf "$work"
}

echo "| regions (busy: $HOT) | puts/s | p99 (ms) | dormant peers per node, mid-run |"
echo "|---:|---:|---:|---:|"
for k in "$BIG" "$HOT" "$HOT" "$BIG"; do
    run "$k"
done
