#!/usr/bin/env bash
# A large region rebuilt from a Raft snapshot, on node processes (ports 21300..):
# 3 nodes, one region; node 3 is killed, ~270 MB of incompressible values land (one
# region: automatic splits are off), the log is truncated past what node 3 has.
#
#   clean   node 3 restarts; reports the time to the snapshot applied, and the
#           leader's bytes and milliseconds sent (MiB/s at the configured rate).
#   crash   node 3 restarts and is kill -9ed while receiving the snapshot, restarts
#           with a failpoint that crashes it while applying, restarts again; the
#           replicas must end equal (`shoal admin checksum`), else exit 1. Needs a
#           shoal built with failpoints (`make chaos` builds target/release/shoal so).
#
# Every node it started is killed by pid.
#
# usage: scripts/snapshot_bench.sh [clean|crash] [SHOAL_BINARY] [BYTES_PER_SEC] [KEYS]
#        (defaults: clean, target/release/shoal, 104857600, 2200 keys of 128,000 bytes)
set -euo pipefail

MODE=${1:-clean}
SHOAL=${2:-target/release/shoal}
RATE=${3:-104857600}
KEYS=${4:-2200}
WORK=$(mktemp -d /tmp/shoal-snapshot.XXXXXX)
declare -A PID
ENDPOINTS="127.0.0.1:21301,127.0.0.1:21302,127.0.0.1:21303"

cleanup() {
    for p in "${PID[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

start() { # $1 = node id, $2 = FAILPOINTS (optional)
    local i=$1
    FAILPOINTS=${2:-} "$SHOAL" node --config "$WORK/node-$i.toml" >> "$WORK/node-$i.log" 2>&1 &
    PID[$i]=$!
    disown $!
    [ -n "${2:-}" ] || unset -v 'FAILPOINTS'
}

stop() { kill -9 "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; PID[$1]=""; }

metric() { # $1 = node id, $2 = metric name
    curl -s -m 3 "http://127.0.0.1:$((21400 + $1))/metrics" | awk -v m="$2" '$1 ~ "^"m"[{]" {print $2}'
}
metric_ms() { # $1 = node id, $2 = a seconds metric: its value in whole milliseconds
    metric "$1" "$2" | awk '{printf "%d", $1 * 1000}'
}

for i in 1 2 3; do
    cat > "$WORK/node-$i.toml" <<EOF
store-id = $i
data-dir = "$WORK/node-$i"
addr = "127.0.0.1:$((21300 + i))"
status-addr = "127.0.0.1:$((21400 + i))"
initial-cluster = "1=127.0.0.1:21301,2=127.0.0.1:21302,3=127.0.0.1:21303"
region-max-size = 17179869184
region-max-keys = 100000000
raft-log-gc-tick-interval-ms = 1000
raft-log-gc-count-limit = 100
snap-max-bytes-per-sec = $RATE
EOF
    start "$i"
done
sleep 2
stop 3
echo "writing $KEYS values of 128000 bytes (base64 of random bytes) with node 3 down..."
seq -w 1 "$KEYS" | xargs -P 8 -I{} sh -c \
    "'$SHOAL' kv put --endpoints $ENDPOINTS key{} \"\$(head -c 96000 /dev/urandom | base64 -w0)\" > /dev/null"
"$SHOAL" kv put --endpoints "$ENDPOINTS" last done > /dev/null
sleep 3

if [ "$MODE" = clean ]; then
    t0=$(date +%s%N)
    start 3
    until [ "$(metric 3 shoal_snapshots_applied_total)" = 1 ] 2>/dev/null; do
        sleep 0.05
        [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 600 ] || { echo "no snapshot applied in 600 s"; exit 1; }
    done
    t1=$(date +%s%N)
    bytes=0; ms=0
    for i in 1 2; do
        b=$(metric "$i" shoal_snapshot_sent_bytes_total); m=$(metric_ms "$i" shoal_snapshot_send_seconds_total)
        bytes=$((bytes + ${b:-0})); ms=$((ms + ${m:-0}))
    done
    apply_ms=$(metric_ms 3 shoal_snapshot_apply_seconds_total)
    gen_ms=0
    for i in 1 2; do g=$(metric_ms "$i" shoal_snapshot_generate_seconds_total); gen_ms=$((gen_ms + ${g:-0})); done
    echo "snapshot: generated in $gen_ms ms; $bytes bytes sent in $ms ms ($(awk "BEGIN {printf \"%.1f\", $bytes / 1048576 / ($ms / 1000)}") MiB/s at a limit of $((RATE / 1048576)) MiB/s); applied in $apply_ms ms; node 3 restart to snapshot applied: $(( (t1 - t0) / 1000000 )) ms"
else
    start 3
    deadline=$((SECONDS + 300))
    until ls "$WORK/node-3/snap" 2>/dev/null | grep -q '\.tmp'; do
        sleep 0.02
        [ $SECONDS -lt $deadline ] || { echo "no snapshot transfer began"; exit 1; }
    done
    stop 3
    echo "killed node 3 while it received the snapshot: $(ls "$WORK/node-3/snap")"
    start 3 "snapshot_after_applying_state=panic"
    deadline=$((SECONDS + 600))
    while kill -0 "${PID[3]}" 2>/dev/null; do
        sleep 0.1
        [ $SECONDS -lt $deadline ] || { echo "node 3 never reached the failpoint"; exit 1; }
    done
    echo "node 3 crashed while applying: $(ls "$WORK/node-3/snap")"
    start 3
    sleep 5
    "$SHOAL" kv put --endpoints "$ENDPOINTS" after yes > /dev/null
    deadline=$((SECONDS + 300))
    until "$SHOAL" admin checksum 1 --endpoints "$ENDPOINTS" > "$WORK/checksum.txt" 2>&1; do
        sleep 1
        [ $SECONDS -lt $deadline ] || { cat "$WORK/checksum.txt"; echo "replicas never agreed"; exit 1; }
    done
    cat "$WORK/checksum.txt"
fi
rm -rf "$WORK"
