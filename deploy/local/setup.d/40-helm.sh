#!/usr/bin/env bash
# Build the pinned Helm 3 CLI from the Go module proxy, once per version, into the cache
# OUTSIDE the clone ($CONN_CACHE_DIR/helm-<version>/helm, default ~/.cache/conn), and link
# .local/bin/helm to it (used by tests/deploy to run `helm lint` / `helm template` on
# deploy/helm/conn). A fresh clone (CI) reuses the cached binary.
# The first build takes a few minutes on 2 cores (see deploy/OPERATIONS.md); the module
# and build caches make a rebuild after a version bump much faster.
set -euo pipefail

HELM_VERSION="${CONN_HELM_VERSION:-v3.21.4}"
root="${CONN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
local_dir="${CONN_LOCAL_DIR:-$root/.local}"
cache="${CONN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conn}/helm-$HELM_VERSION"
helm="$cache/helm"
link="$local_dir/bin/helm"

say() { echo "[setup] helm: $*"; }
has_version() { [ -x "$1" ] && "$1" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; }
link_it() { mkdir -p "$(dirname "$link")"; ln -sfn "$helm" "$link"; }

if has_version "$helm"; then
  link_it
  say "cached ($HELM_VERSION, $helm)"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
  done
fi
if ! command -v go >/dev/null 2>&1; then
  echo "[setup] helm: ERROR: Go toolchain not found; install Go >= 1.24 (https://go.dev/dl/) or put a helm $HELM_VERSION binary at $helm" >&2
  exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if has_version "$helm"; then
  link_it
  say "cached ($HELM_VERSION, built meanwhile)"
  exit 0
fi
say "building $HELM_VERSION with $(go version | cut -d' ' -f3) (go install from the module proxy; a few minutes on first run)"
start=$(date +%s)
tmp="$(mktemp -d "$cache/build.XXXXXX")"
# -trimpath/-ldflags keep the binary small; the version is stamped the way helm's Makefile does.
GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$tmp/helm" "$helm"
rm -rf "$tmp"
link_it
say "installed $("$helm" version --template '{{.Version}}') into $helm in $(( $(date +%s) - start ))s"
