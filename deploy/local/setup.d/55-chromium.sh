#!/usr/bin/env bash
# Install Debian's chromium for the bridge console's browser tests (tests/console/).
# Playwright (pinned in requirements.lock) drives this system browser through its bundled
# driver; `playwright install` (which downloads a browser of its own) is never used.
# Idempotent. As root, apt installs it; otherwise a clear message and the browser tests skip
# (under CI=true they fail instead).
set -euo pipefail

CHROMIUM="${CONN_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  echo "[setup] chromium: already installed ($("$CHROMIUM" --version 2>/dev/null | head -1))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[setup] chromium: not installed and not root: skipping. The console's browser tests"
  echo "[setup]   will skip; install it with: sudo apt-get install -y --no-install-recommends chromium"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
[ -x "$CHROMIUM" ] || { echo "[setup] ERROR: chromium still missing at $CHROMIUM" >&2; exit 1; }
echo "[setup] chromium: installed ($("$CHROMIUM" --version 2>/dev/null | head -1))"
