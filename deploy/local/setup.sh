#!/usr/bin/env bash
# `make setup`: everything the local stack needs, fetched once. Idempotent; a second run only
# checks stamps. Nothing is downloaded at run time (`make up`) after this.
#   - .venv (python3.11) with requirements.lock + `pip install --no-deps -e .`
#   - Kafka broker jars via Maven (deploy/local/pom.xml) into .local/kafka/libs
#   - PostgreSQL 15 server binaries (apt when root)
#   - then every executable deploy/local/setup.d/*.sh, in sorted order
# Stamps (hash of the inputs) live in .local/stamps/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LOCAL="${CONN_LOCAL_DIR:-$ROOT/.local}"
STAMPS="$LOCAL/stamps"
PYTHON="${PYTHON:-python3.11}"
PG_BIN="${CONN_PG_BIN:-/usr/lib/postgresql/15/bin}"
mkdir -p "$STAMPS" "$LOCAL/logs" "$LOCAL/run"

say() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { echo "$2" >"$STAMPS/$1"; }
is_root() { [ "$(id -u)" = "0" ]; }
apt_install() {
  is_root || die "missing $* and not root: install them (apt-get install -y $*) and re-run"
  say "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f "$STAMPS/apt-updated" ]; then apt-get update -qq && touch "$STAMPS/apt-updated"; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. Python ------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Conn needs Python 3.11)"
  say "venv: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
  rm -f "$STAMPS/python-deps"
fi
PY_HASH="$(hash_files requirements.lock pyproject.toml)"
if stamp_ok python-deps "$PY_HASH"; then
  say "python deps: cached"
else
  say "python deps: installing requirements.lock"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  stamp_set python-deps "$PY_HASH"
  say "python deps: done"
fi

# --- 2. Kafka jars --------------------------------------------------------------------------
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
KAFKA_LIBS="$LOCAL/kafka/libs"
POM_HASH="$(hash_files deploy/local/pom.xml)"
if stamp_ok kafka-jars "$POM_HASH" && ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
  say "kafka jars: cached"
else
  say "kafka jars: fetching with Maven (deploy/local/pom.xml)"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  if ! mvn -B -Dstyle.color=never -f deploy/local/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" </dev/null >"$LOCAL/logs/maven.log" 2>&1; then
    tail -n 40 "$LOCAL/logs/maven.log" >&2
    die "Maven failed (full log: $LOCAL/logs/maven.log)"
  fi
  ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven did not produce kafka_2.13 jar"
  stamp_set kafka-jars "$POM_HASH"
  say "kafka jars: $(ls "$KAFKA_LIBS" | wc -l) jars in $KAFKA_LIBS"
fi

# --- 3. PostgreSQL 15 -----------------------------------------------------------------------
if [ -x "$PG_BIN/postgres" ]; then
  say "postgresql 15: present ($PG_BIN)"
else
  if is_root; then
    # Do not let the Debian package create/start its own cluster on 5432.
    mkdir -p /etc/postgresql-common
    if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
      echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    apt_install postgresql-15 || apt_install postgresql
  else
    die "PostgreSQL 15 server not found at $PG_BIN/postgres. Install it: sudo apt-get install -y postgresql-15 (or set CONN_PG_BIN)"
  fi
  [ -x "$PG_BIN/postgres" ] || die "PostgreSQL 15 still missing at $PG_BIN after apt-get"
  say "postgresql 15: installed"
fi
if is_root; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# --- 4. Extension scripts (unleash-server, prometheus, ...) ---------------------------------
export CONN_ROOT="$ROOT" CONN_LOCAL_DIR="$LOCAL" CONN_STAMPS="$STAMPS"
shopt -s nullglob
for script in $(printf '%s\n' "$ROOT"/deploy/local/setup.d/*.sh | LC_ALL=C sort); do
  if [ -x "$script" ]; then
    say "running setup.d/$(basename "$script")"
    "$script"
  fi
done

say "done"
