#!/usr/bin/env bash
# Makes sure cargo-deny is installed (`make lint` and CI run it through
# scripts/deny.sh): installs the pinned version from crates.io when it is missing.
# A cold install compiles cargo-deny and its dependencies: minutes (see the
# README's "Checking the dependencies").
set -euo pipefail

# Pinned: scripts/deny.sh relies on where this version keeps its advisory
# database (the folder name is a hash of the database's URL).
DENY_VERSION=0.20.2

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo-deny needs the Rust toolchain: install it from https://rustup.rs and run make again." >&2
  exit 1
fi

have=$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)
if [ -n "$have" ]; then
  if [ "$have" != "$DENY_VERSION" ]; then
    echo "note: cargo-deny $have is installed, scripts/deny.sh expects $DENY_VERSION (cargo install --locked cargo-deny --version $DENY_VERSION)." >&2
  fi
  exit 0
fi

echo "Installing cargo-deny $DENY_VERSION from crates.io (a few minutes: it is compiled)..." >&2
cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
