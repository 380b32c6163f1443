# Shared by the cluster scripts (`source scripts/common.sh`): they start node
# processes, remember their pids in PIDS, read their status endpoints, and kill
# only what they started.

PIDS=()

# Kills (-9) every node this script started, by pid.
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
}

# metric PORT NAME: the sum of a metric's samples on the node whose status
# endpoint is 127.0.0.1:PORT.
metric() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk -v m="$2" '$1 ~ "^"m"([{]|$)" {s += $2} END {printf "%d\n", s}'
}
