#!/usr/bin/env bash
# Install Debian's wrk (HTTP load generator) for `make bench` (API intake benchmark).
# Idempotent. Without it, the intake benchmark falls back to an async httpx client.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
  echo "[setup] wrk: already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if $SUDO apt-get update -qq \
  && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk; then
  echo "[setup] wrk: installed"
else
  # Optional: the intake benchmark falls back to an async httpx load generator.
  echo "[setup] wrk: could not be installed; make bench will use its httpx load generator"
fi
