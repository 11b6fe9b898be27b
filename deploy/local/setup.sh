#!/usr/bin/env bash
# `make setup`: everything the local stack needs, fetched once. Idempotent; a second run only
# checks stamps. Nothing is downloaded at run time (`make up`) after this.
#   - .venv (python3.11) with requirements.lock + `pip install --no-deps -e .`
#   - Kafka broker jars via Maven (deploy/local/pom.xml) into the cache OUTSIDE the clone,
#     keyed by version: $CONN_CACHE_DIR/kafka-<version>/libs (default ~/.cache/conn), shared
#     read-only by every clone and stack; .local/kafka/libs is a symlink to it
#   - PostgreSQL 15 server binaries (apt when root)
#   - then every executable deploy/local/setup.d/*.sh, in sorted order
# Stamps (hash of the inputs) live in .local/stamps/; a fresh clone (CI) reuses the cache.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LOCAL="${CONN_LOCAL_DIR:-$ROOT/.local}"
STAMPS="$LOCAL/stamps"
PYTHON="${PYTHON:-python3.11}"
PG_BIN="${CONN_PG_BIN:-/usr/lib/postgresql/15/bin}"
CACHE="${CONN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conn}"
mkdir -p "$STAMPS" "$LOCAL/logs" "$LOCAL/run" "$CACHE"

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

# --- 2. Kafka jars (cached outside the clone, keyed by version) ------------------------------
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/local/pom.xml | head -1)"
[ -n "$KAFKA_VERSION" ] || die "no <kafka.version> in deploy/local/pom.xml"
KAFKA_CACHE="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_CACHE/libs"
POM_HASH="$(hash_files deploy/local/pom.xml)"
kafka_cached() {
  [ -f "$KAFKA_CACHE/pom.sha256" ] && [ "$(cat "$KAFKA_CACHE/pom.sha256")" = "$POM_HASH" ] &&
    ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1
}
if kafka_cached; then
  say "kafka jars: cached ($KAFKA_LIBS)"
else
  mkdir -p "$KAFKA_CACHE"
  # One fetch at a time per version (several clones may run `make setup` together); the
  # jars land in a temporary directory first and replace libs/ in one rename.
  exec 9>"$KAFKA_CACHE/.lock"
  flock 9
  if kafka_cached; then
    say "kafka jars: cached ($KAFKA_LIBS, fetched meanwhile)"
  else
    say "kafka jars: fetching $KAFKA_VERSION with Maven (deploy/local/pom.xml) into $KAFKA_CACHE"
    tmp="$(mktemp -d "$KAFKA_CACHE/libs.tmp.XXXXXX")"
    if ! mvn -B -Dstyle.color=never -f deploy/local/pom.xml dependency:copy-dependencies \
      -DoutputDirectory="$tmp" </dev/null >"$LOCAL/logs/maven.log" 2>&1; then
      tail -n 40 "$LOCAL/logs/maven.log" >&2
      rm -rf "$tmp"
      die "Maven failed (full log: $LOCAL/logs/maven.log)"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven did not produce kafka_2.13 jar"
    chmod 755 "$tmp"
    rm -rf "$KAFKA_LIBS.old"
    [ -d "$KAFKA_LIBS" ] && mv "$KAFKA_LIBS" "$KAFKA_LIBS.old"
    mv "$tmp" "$KAFKA_LIBS"
    rm -rf "$KAFKA_LIBS.old"
    echo "$POM_HASH" >"$KAFKA_CACHE/pom.sha256"
    say "kafka jars: $(ls "$KAFKA_LIBS" | wc -l) jars in $KAFKA_LIBS"
  fi
  exec 9>&-
fi
# .local/kafka/libs (what older tooling looks at) points at the cache.
mkdir -p "$LOCAL/kafka"
if [ -d "$LOCAL/kafka/libs" ] && [ ! -L "$LOCAL/kafka/libs" ]; then rm -rf "$LOCAL/kafka/libs"; fi
ln -sfn "$KAFKA_LIBS" "$LOCAL/kafka/libs"
rm -f "$STAMPS/kafka-jars"

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
export CONN_ROOT="$ROOT" CONN_LOCAL_DIR="$LOCAL" CONN_STAMPS="$STAMPS" CONN_CACHE_DIR="$CACHE"
shopt -s nullglob
for script in $(printf '%s\n' "$ROOT"/deploy/local/setup.d/*.sh | LC_ALL=C sort); do
  if [ -x "$script" ]; then
    say "running setup.d/$(basename "$script")"
    "$script"
  fi
done

say "done"
