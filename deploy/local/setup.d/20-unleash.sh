#!/usr/bin/env bash
# Install the pinned unleash-server (deploy/local/unleash/package-lock.json) with `npm ci`,
# once per lock file, into the cache OUTSIDE the clone
# ($CONN_CACHE_DIR/unleash-<sha of the lock>/node_modules, default ~/.cache/conn);
# .local/unleash/ holds server.js and a node_modules link to it. A fresh clone (CI)
# reuses the cached install.
set -euo pipefail

root="${CONN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
local_dir="${CONN_LOCAL_DIR:-$root/.local}"
src="$root/deploy/local/unleash"
dest="$local_dir/unleash"
lock_sha="$(sha256sum "$src/package-lock.json" | cut -c1-16)"
cache="${CONN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conn}/unleash-$lock_sha"

if ! command -v npm >/dev/null 2>&1; then
  echo "unleash: npm not found (need Node.js >= 20)" >&2
  exit 1
fi

installed() { [ -f "$cache/.complete" ] && [ -d "$cache/node_modules/unleash-server" ]; }

if ! installed; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if ! installed; then
    tmp="$(mktemp -d "$cache/install.XXXXXX")"
    cp "$src/package.json" "$src/package-lock.json" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    rm -rf "$cache/node_modules"
    mv "$tmp/node_modules" "$cache/node_modules"
    cp "$src/package.json" "$src/package-lock.json" "$cache/"
    rm -rf "$tmp"
    touch "$cache/.complete"
    echo "unleash: installed into $cache"
  fi
  exec 9>&-
fi

mkdir -p "$dest"
if [ -d "$dest/node_modules" ] && [ ! -L "$dest/node_modules" ]; then rm -rf "$dest/node_modules"; fi
ln -sfn "$cache/node_modules" "$dest/node_modules"
cp "$src/package.json" "$src/package-lock.json" "$src/server.js" "$dest/"
echo "unleash: $(node -p "require('$cache/node_modules/unleash-server/package.json').version") (cached in $cache)"
