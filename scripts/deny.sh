#!/usr/bin/env bash
# cargo-deny's checks of the dependency tree (deny.toml): advisories, licenses,
# bans (duplicate versions, wildcards) and sources. Called by `make lint` and CI.
#
# The advisories check needs the RustSec advisory database, a git repository. In
# order, it comes from:
# 1. a local copy of it: the git repository (bare or not) at
#    $SHOAL_ADVISORY_DB_MIRROR (default: /work/.mirror/rustsec+advisory-db/repo),
#    cloned, or fetched again, into the folder cargo-deny reads
#    ($SHOAL_ADVISORY_DBS, default target/advisory-dbs); nothing is fetched from
#    the network for it;
# 2. otherwise, GitHub, through `cargo deny fetch db`.
# Then the checks run with the database as it is (`--offline`), and the script
# says how old its newest advisory is. When no database can be had, it says so,
# plainly, and still runs the other three checks: the advisories check is then
# NOT done, and the exit status is that of the other checks.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-deny.sh

export SHOAL_ADVISORY_DBS="${SHOAL_ADVISORY_DBS:-$PWD/target/advisory-dbs}"
# cargo-deny 0.20's folder for https://github.com/rustsec/advisory-db (deny.toml
# names no other database).
db="$SHOAL_ADVISORY_DBS/advisory-db-3157b0e258782691"
mirror="${SHOAL_ADVISORY_DB_MIRROR:-/work/.mirror/rustsec+advisory-db/repo}"

# The crate graph, resolved once with network access allowed (cargo may need
# the manifests of crates other platforms use); the checks then run offline.
mkdir -p target
metadata=target/deny-metadata.json
cargo metadata --format-version 1 --locked >"$metadata"
deny=(cargo deny --offline --metadata-path "$metadata" check)

have_db=no
if [ -d "$mirror" ] && git -C "$mirror" rev-parse --git-dir >/dev/null 2>&1; then
  if [ -d "$db/.git" ]; then
    git -C "$db" fetch --quiet "$mirror" main && git -C "$db" reset --quiet --hard FETCH_HEAD
  else
    rm -rf "$db"
    mkdir -p "$SHOAL_ADVISORY_DBS"
    git clone --quiet "$mirror" "$db"
    # The fetch records when the copy was last synced (cargo-deny reads it).
    git -C "$db" fetch --quiet "$mirror" main
  fi
  echo "advisory database: the local copy at $mirror" >&2
  have_db=yes
elif cargo deny fetch db; then
  echo "advisory database: fetched from GitHub" >&2
  have_db=yes
fi

if [ "$have_db" = yes ]; then
  newest=$(git -C "$db" log -1 --format=%cs)
  age_days=$(( ($(date +%s) - $(git -C "$db" log -1 --format=%ct)) / 86400 ))
  echo "advisory database: newest advisory commit $newest ($age_days days old)" >&2
  if [ "$age_days" -gt 90 ]; then
    echo "WARNING: the advisory database is $age_days days old: advisories published since $newest are not checked." >&2
  fi
  exec "${deny[@]}"
fi

cat >&2 <<MSG
NO ADVISORY DATABASE: there is no local copy at $mirror (set
SHOAL_ADVISORY_DB_MIRROR to a clone of https://github.com/rustsec/advisory-db) and
fetching it from GitHub failed. The advisories check is NOT run; the licenses,
bans and sources checks still are.
MSG
exec "${deny[@]}" bans licenses sources
