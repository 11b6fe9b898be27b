#!/usr/bin/env bash
# A real Kubernetes control plane for the tests and `make kube-up`: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and KWOK (fake nodes, no kubelet), built from the
# Go module proxy with the wrapper modules in deploy/local/setup.d/kube/.
#
# Built ONCE per version into a cache OUTSIDE the clone, so a fresh clone (CI) reuses it:
#   ${CONN_TOOLS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/conn}/kube-<v>/bin/kube-{apiserver,...}
#                                                     /etcd-<v>/bin/etcd
#                                                     /kwok-<v>/bin/kwok  + stages.yaml
# A directory is complete when its .stamp holds the hash of its inputs (go.mod, go.sum,
# flags); anything else is rebuilt. Concurrent runs (several worktrees) serialize on a lock.
# Cold: about 7-10 min and ~2.8 GB peak memory on 2 cores (Kubernetes is most of it).
# Warm: a few hashes, well under a second. CONN_SKIP_KUBE=1 skips the whole step.
set -euo pipefail

root="${CONN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
src="$root/deploy/local/setup.d/kube"
# shellcheck source=kube/versions.env
. "$src/versions.env"
cache="${CONN_TOOLS_CACHE:-${CONN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conn}}"

say() { echo "[setup] kube: $*"; }
die() { echo "[setup] kube: ERROR: $*" >&2; exit 1; }

if [ -n "${CONN_SKIP_KUBE:-}" ]; then
  say "skipped (CONN_SKIP_KUBE set): the real-Kubernetes tests will be skipped"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
  done
fi
command -v go >/dev/null 2>&1 || die "Go toolchain not found; install Go >= 1.26 (https://go.dev/dl/)"

grep -q "^require k8s.io/kubernetes $KUBE_VERSION\$" "$src/kubernetes/go.mod" \
  || die "versions.env says KUBE_VERSION=$KUBE_VERSION but kubernetes/go.mod pins another"
grep -q "^require go.etcd.io/etcd/server/v3 $ETCD_VERSION\$" "$src/etcd/go.mod" \
  || die "versions.env says ETCD_VERSION=$ETCD_VERSION but etcd/go.mod pins another"

kube_dir="$cache/kube-$KUBE_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
kwok_dir="$cache/kwok-$KWOK_VERSION"
mkdir -p "$cache"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }

minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
kube_ld=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # Without these /version says v0.0.0-master and Helm's kubeVersion checks misfire.
  kube_ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  kube_ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
kube_hash="$(hash_of "$src/kubernetes/go.mod" "$src/kubernetes/go.sum" "$src/kubernetes/tools.go"; echo "$kube_ld")"
kube_hash="$(echo "$kube_hash $(go version)" | sha256sum | cut -d' ' -f1)"
etcd_hash="$(echo "$(hash_of "$src/etcd/go.mod" "$src/etcd/go.sum" "$src/etcd/main.go") $(go version)" | sha256sum | cut -d' ' -f1)"
kwok_hash="$(echo "kwok $KWOK_VERSION $(go version)" | sha256sum | cut -d' ' -f1)"

if fresh "$kube_dir" "$kube_hash" && fresh "$etcd_dir" "$etcd_hash" && fresh "$kwok_dir" "$kwok_hash"; then
  say "cached (kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION in $cache)"
  exit 0
fi

# One builder at a time per cache (other worktrees may run `make setup` concurrently).
exec 9>"$cache/.kube-build.lock"
if ! flock -n 9; then
  say "another build holds $cache/.kube-build.lock; waiting for it"
  flock 9
fi

# Low parallelism when memory is tight: the Kubernetes link step alone wants ~2.8 GB.
avail_kb="$(awk '/MemAvailable/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
gopar=""
if [ "${avail_kb:-0}" -lt 6000000 ]; then
  gopar="-p=1"
  say "less than 6 GB of memory available: building with go build -p=1 (slower)"
fi

# A ticker so a long cold build never looks hung.
run_with_progress() { # label, command...
  local label="$1" start pid rc
  shift
  start=$(date +%s)
  "$@" >"$cache/.build-$label.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do
      sleep 1
      kill -0 "$pid" 2>/dev/null || break
    done
    kill -0 "$pid" 2>/dev/null && say "$label: still building ($(( $(date +%s) - start ))s)"
  done
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$cache/.build-$label.log" >&2
    die "$label build failed (log: $cache/.build-$label.log)"
  fi
  say "$label: built in $(( $(date +%s) - start ))s"
}

export CGO_ENABLED=0 GOFLAGS="-mod=readonly ${gopar}"

# Build into a temporary directory beside the target and rename: a half-finished build
# never looks complete.
build_into() { # dir hash label builder
  local dir="$1" hash="$2" label="$3" builder="$4" tmp
  fresh "$dir" "$hash" && { say "$label: cached ($dir)"; return 0; }
  tmp="$(mktemp -d "$cache/.tmp-$label.XXXXXX")"
  mkdir -p "$tmp/bin"
  run_with_progress "$label" "$builder" "$tmp"
  echo "$hash" >"$tmp/.stamp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

build_etcd() {
  (cd "$src/etcd" && go build -trimpath -ldflags "-s -w" -o "$1/bin/etcd" .)
}
build_kube() {
  (cd "$src/kubernetes" && go build -trimpath -ldflags "-s -w $kube_ld" -o "$1/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
}
build_kwok() {
  local mod
  GOFLAGS="${gopar}" GOBIN="$1/bin" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The stage definitions ship inside the module; kwok needs them passed with --config:
  # node initialize + heartbeat with lease, and the "fast" pod stages (ready, complete, delete).
  mod="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$mod/$f" ] || { echo "missing stage $mod/$f" >&2; return 1; }
    echo "---"
    cat "$mod/$f"
  done >"$1/stages.yaml"
}

total_start=$(date +%s)
say "building the control plane from the Go module proxy into $cache (once per version; a cold build takes ~7-10 min and ~2.8 GB of memory on 2 cores)"
build_into "$etcd_dir" "$etcd_hash" "etcd-$ETCD_VERSION" build_etcd
build_into "$kwok_dir" "$kwok_hash" "kwok-$KWOK_VERSION" build_kwok
build_into "$kube_dir" "$kube_hash" "kubernetes-$KUBE_VERSION" build_kube
"$kube_dir/bin/kube-apiserver" --version | grep -q "$KUBE_VERSION" \
  || die "kube-apiserver --version does not report $KUBE_VERSION"
say "ready in $(( $(date +%s) - total_start ))s: $(du -sh "$kube_dir" "$etcd_dir" "$kwok_dir" | awk '{print $1}' | paste -sd+ -) of binaries"
