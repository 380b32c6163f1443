#!/usr/bin/env bash
# What idle regions cost: for each region count, a fresh 3-node cluster on
# 127.0.0.1 (ports 21500..) bootstrapped with that many regions (every store has
# a replica of each), left to settle, then measured over a window with no client
# load: CPU per node (% of one core, from /proc/PID/stat), resident memory per
# region (RSS / regions, from /proc/PID/status), Raft messages and store
# heartbeats sent per second, dormant regions. Then, with `--failover`, the store
# leading most regions is killed (-9) and the time until every region has a
# leader again is measured through the other stores' status endpoints.
# Every node it started is killed by pid.
#
# usage: scripts/idle_regions.sh [--failover] [--dormant true|false]
#            [--settle SECS] [--window SECS] [SHOAL_BINARY] [REGION COUNTS...]
#        (defaults: dormant true, settle 60, window 30, target/release/shoal,
#        1000 10000)
set -euo pipefail
source "$(dirname "$0")/common.sh"

FAILOVER=0
DORMANT=true
SETTLE=60
WINDOW=30
while [ $# -gt 0 ]; do
    case "$1" in
    --failover) FAILOVER=1; shift ;;
    --dormant) DORMANT=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) break ;;
    esac
done
SHOAL=${1:-target/release/shoal}
shift $(( $# > 0 ? 1 : 0 ))
COUNTS=("$@")
[ ${#COUNTS[@]} -eq 0 ] && COUNTS=(1000 10000)
TICKS=$(getconf CLK_TCK)

trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "| regions per store | dormant | settle | CPU per node (% of a core) | RSS per region (KiB) | raft msgs/s per node | store heartbeats/s per node | dormant peers per node |"
echo "|---:|---|---:|---|---|---:|---:|---:|"
for k in "${COUNTS[@]}"; do
    WORK=$(mktemp -d /tmp/shoal-idle.XXXXXX)
    PIDS=()
    members=""
    for i in 1 2 3; do members+="$i=127.0.0.1:$((21500 + i)),"; done
    members=${members%,}
    for i in 1 2 3; do
        "$SHOAL" node --store-id "$i" --addr "127.0.0.1:$((21500 + i))" \
            --status-addr "127.0.0.1:$((21600 + i))" --data-dir "$WORK/node-$i" \
            --initial-cluster "$members" --initial-regions "$k" \
            --dormant-regions "$DORMANT" --log-level warn 2>"$WORK/node-$i.log" &
        PIDS+=($!)
    done
    sleep "$SETTLE"
    declare -A c0 m0 h0
    for i in 1 2 3; do
        c0[$i]=$(cpu_ticks "${PIDS[$((i - 1))]}")
        m0[$i]=$(metric $((21600 + i)) shoal_raft_messages_sent_total)
        h0[$i]=$(metric $((21600 + i)) shoal_store_heartbeats_sent_total)
    done
    sleep "$WINDOW"
    cpus="" rss="" msgs=0 beats=0 dormant=0
    for i in 1 2 3; do
        pid=${PIDS[$((i - 1))]}
        c1=$(cpu_ticks "$pid")
        cpus+="$(awk -v a="${c0[$i]}" -v b="$c1" -v t="$TICKS" -v w="$WINDOW" \
            'BEGIN {printf "%.1f", 100 * (b - a) / t / w}') "
        rss+="$(awk -v r="$(rss_kib "$pid")" -v k="$k" 'BEGIN {printf "%.1f", r / k}') "
        m1=$(metric $((21600 + i)) shoal_raft_messages_sent_total)
        h1=$(metric $((21600 + i)) shoal_store_heartbeats_sent_total)
        msgs=$((msgs + m1 - m0[$i]))
        beats=$((beats + h1 - h0[$i]))
        dormant=$((dormant + $(metric $((21600 + i)) shoal_dormant_regions)))
    done
    echo "| $k | $DORMANT | ${SETTLE}s | ${cpus% } | ${rss% } | $((msgs / 3 / WINDOW)) | $((beats / 3 / WINDOW)) | $((dormant / 3)) |"
    if [ "$FAILOVER" = 1 ]; then
        # The store leading most regions goes; the others must elect leaders for
        # all of its regions.
        best=1 most=-1
        for i in 1 2 3; do
            l=$(metric $((21600 + i)) shoal_leaders)
            if [ "$l" -gt "$most" ]; then best=$i most=$l; fi
        done
        start=$(date +%s.%N)
        kill -9 "${PIDS[$((best - 1))]}"
        while :; do
            total=0
            for i in 1 2 3; do
                [ "$i" = "$best" ] && continue
                total=$((total + $(metric $((21600 + i)) shoal_leaders)))
            done
            [ "$total" -ge "$k" ] && break
            sleep 0.05
        done
        took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
        echo "failover: store $best led $most of $k regions; every region led again after ${took}s"
    fi
    cleanup
    wait 2>/dev/null || true
    rm -rf "$WORK"
done
