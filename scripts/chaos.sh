#!/usr/bin/env bash
# `make chaos`: every nemesis alone, then all of them together, each run with a
# fresh seed (printed: `shoal chaos --seed N` replays it). About 14 minutes.
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
# Sparse load over many regions: most are dormant at any moment, so pauses,
# partitions and kills hit dormant regions' leader stores, which their followers
# notice through store liveness only (docs/dormancy.md).
run --nemesis kill,pause,partition --duration 90s --regions 256 --keys-per-region 1 --clients 2 "$@"
run --nemesis kill,pause,partition,admin,disk --duration 120s "$@"
# Mutual TLS on every connection (certificates from `shoal cert`): the faults cut
# and restore TLS links and streams as they do plaintext ones.
run --tls --nemesis kill,pause,partition,admin,disk --duration 90s "$@"
run --nemesis kill,pause,partition,admin,disk --duration 120s --nodes 5 --regions 8 "$@"
if [ "$failed" -ne 0 ]; then
    echo "chaos: $failed run(s) failed a check"
    exit 1
fi
echo "chaos: every run passed"
