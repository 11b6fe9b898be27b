#!/usr/bin/env bash
# Build the pinned Helm 3 CLI from the Go module proxy into .local/bin/helm (used by
# tests/deploy to run `helm lint` / `helm template` on deploy/helm/conn).
# Idempotent: skipped when .local/bin/helm already reports the pinned version.
# The first build takes a few minutes on 2 cores (see deploy/OPERATIONS.md); the module
# and build caches make a rebuild after a version bump much faster.
set -euo pipefail

HELM_VERSION="${CONN_HELM_VERSION:-v3.21.4}"
root="${CONN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
local_dir="${CONN_LOCAL_DIR:-$root/.local}"
bin="$local_dir/bin"
helm="$bin/helm"

say() { echo "[setup] helm: $*"; }

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  say "up to date ($HELM_VERSION)"
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

mkdir -p "$bin"
say "building $HELM_VERSION with $(go version | cut -d' ' -f3) (go install from the module proxy; a few minutes on first run)"
start=$(date +%s)
# -trimpath/-ldflags keep the binary small; the version is stamped the way helm's Makefile does.
GOBIN="$bin" GOFLAGS=-mod=mod CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
say "installed $("$helm" version --template '{{.Version}}') into $helm in $(( $(date +%s) - start ))s"
