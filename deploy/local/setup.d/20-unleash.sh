#!/usr/bin/env bash
# Install the pinned unleash-server (deploy/local/unleash/package-lock.json) into
# .local/unleash/ with `npm ci`. Idempotent: skipped when the installed lock matches.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
src="$root/deploy/local/unleash"
dest="$root/.local/unleash"

if ! command -v npm >/dev/null 2>&1; then
  echo "unleash: npm not found (need Node.js >= 20)" >&2
  exit 1
fi

mkdir -p "$dest"
if [ -d "$dest/node_modules/unleash-server" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
  cp "$src/server.js" "$dest/server.js"
  echo "unleash: up to date ($(node -p "require('$dest/node_modules/unleash-server/package.json').version"))"
  exit 0
fi

cp "$src/package.json" "$src/package-lock.json" "$src/server.js" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
echo "unleash: installed $(node -p "require('$dest/node_modules/unleash-server/package.json').version") into $dest"
