#!/usr/bin/env bash
# `make chaos`: every nemesis alone, then all of them together, each run with a
# fresh seed (printed: `shoal chaos --seed N` replays it). About 10 minutes.
# Usage: scripts/chaos.sh PATH/TO/shoal [extra shoal chaos options]
set -uo pipefail
shoal="$1"
shift
failed=0
run() {
    echo "=== shoal chaos $*"
    if ! "$shoal" chaos "$@"; then
        failed=$((failed + 1))
    fi
}
for nemesis in kill pause partition disk; do
    run --nemesis "$nemesis" --duration 60s "$@"
done
# Five nodes: room for the admin nemesis to move replicas (three nodes hold a
# replica of every region each).
run --nemesis admin --duration 60s --nodes 5 --regions 8 "$@"
run --nemesis kill,pause,partition,admin,disk --duration 120s "$@"
run --nemesis kill,pause,partition,admin,disk --duration 120s --nodes 5 --regions 8 "$@"
if [ "$failed" -ne 0 ]; then
    echo "chaos: $failed run(s) failed a check"
    exit 1
fi
echo "chaos: every run passed"
