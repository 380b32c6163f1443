#!/usr/bin/env bash
# Makes sure an etcd server is installed for `make bench-compare`, installing
# Debian's etcd-server package when `etcd` is missing (as root, or through
# passwordless sudo). The package's own service is stopped and disabled again:
# bench-compare starts its own members on free ports and must leave nothing running.
set -euo pipefail

command -v etcd >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "bench-compare needs etcd: install it with 'sudo apt-get install etcd-server' (or pass ETCD=/path/to/etcd) and run make again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-compare needs etcd and this system has no apt-get: install etcd 3.4 or newer and run make again." >&2
  exit 1
fi

echo "Installing etcd-server (the comparison target of make bench-compare)..."
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq etcd-server >/dev/null
if command -v systemctl >/dev/null 2>&1; then
  "${as_root[@]}" systemctl disable --now etcd >/dev/null 2>&1 || true
fi
command -v etcd >/dev/null 2>&1 || {
  echo "Installed etcd-server but 'etcd' is not on PATH." >&2
  exit 1
}
