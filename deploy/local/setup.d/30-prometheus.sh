#!/usr/bin/env bash
# Install Debian's prometheus and prometheus-alertmanager binaries (idempotent).
# The packaged services are NOT enabled or started: Conn's fixtures and `make up`
# run their own instances with a generated config on loopback ports.
set -euo pipefail

pkgs=(prometheus prometheus-alertmanager)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "prometheus: already installed ($(prometheus --version 2>&1 | head -1))"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# policy-rc.d exit 101 = "action forbidden": invoke-rc.d in the postinst scripts
# then neither starts nor restarts the daemons. Removed again on exit.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" -eq 1 ] && $SUDO rm -f "$policy"; return 0; }
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Belt and braces: stop any packaged daemon that was started anyway
# (by pid file of the Debian service user only, never by a broad name).
for svc in prometheus prometheus-alertmanager; do
  for pidfile in "/run/$svc.pid" "/run/$svc/$svc.pid"; do
    if [ -f "$pidfile" ]; then
      $SUDO kill "$(cat "$pidfile")" 2>/dev/null || true
      $SUDO rm -f "$pidfile"
    fi
  done
done
echo "prometheus: installed ($(prometheus --version 2>&1 | head -1))"
