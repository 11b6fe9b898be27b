# syntax=docker/dockerfile:1
# One image pattern for every Conn service, built from requirements-runtime.lock (no dev tools).
#
#   docker build --build-arg SERVICE=executor -t conn-executor:0.1.0 .
#
# SERVICE selects the entry point: directive-api | executor | verifier | packager | simulator.
# The image runs as an unprivileged user (uid 10001), has no compilers, and its base image
# is pinned to an exact Python patch release and Debian release. Bump PYTHON_IMAGE
# deliberately (and re-run tests) - never float on a moving tag.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: a self-contained virtualenv in /opt/venv ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached layer): exactly the locked set, nothing resolved at build time.
COPY requirements-runtime.lock ./
RUN pip install --no-deps -r requirements-runtime.lock \
 && pip install --no-deps setuptools==80.9.0
# Then the project itself, again without resolving anything: the production packages only.
# The local dev stack (deploy/local/conn_localstack), the demo and the benchmarks are not
# copied (nor in the build context, see .dockerignore), so the image cannot ship them;
# no production package imports them (`lint-imports`, see pyproject.toml).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY core ./core
COPY runtime ./runtime
COPY readmodel ./readmodel
COPY adapters ./adapters
COPY simulator ./simulator
COPY cli ./cli
COPY services ./services
RUN pip install --no-deps --no-build-isolation . \
 && pip uninstall -y setuptools

# ---- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=directive-api
LABEL org.opencontainers.image.title="conn-${SERVICE}" \
      org.opencontainers.image.source="https://example.invalid/conn" \
      org.opencontainers.image.licenses="Apache-2.0"

# Map SERVICE to its console script and its ops port (/healthz, /readyz, /metrics);
# an unknown SERVICE fails the build here rather than at run time.
RUN case "${SERVICE}" in \
      directive-api) port=18000 ;; \
      executor)      port=18101 ;; \
      verifier)      port=18102 ;; \
      packager)      port=18103 ;; \
      simulator)     port=18080 ;; \
      *) echo "unknown SERVICE '${SERVICE}' (directive-api|executor|verifier|packager|simulator)" >&2; exit 1 ;; \
    esac \
 && echo "${port}" > /etc/conn-ops-port \
 && groupadd --system --gid 10001 conn \
 && useradd --system --uid 10001 --gid conn --home-dir /home/conn --create-home --shell /usr/sbin/nologin conn

COPY --from=build /opt/venv /opt/venv
# runbooks are data the services read (authority boundaries).
COPY runbooks /opt/conn/runbooks

# In a container every service listens on all interfaces (the local stack binds loopback).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONN_SERVICE=${SERVICE} \
    CONN_RUNBOOKS_DIR=/opt/conn/runbooks \
    CONN_API_HOST=0.0.0.0 \
    CONN_EXECUTOR_METRICS_HOST=0.0.0.0 \
    CONN_VERIFIER_METRICS_HOST=0.0.0.0 \
    CONN_PACKAGER_HOST=0.0.0.0 \
    CONN_SIM_HOST=0.0.0.0

# The entry point is the console script `conn-<SERVICE>`, linked to a fixed name so the
# exec-form ENTRYPOINT needs no shell and the process is PID 1 (SIGTERM reaches it).
RUN ln -s "/opt/venv/bin/conn-${SERVICE}" /usr/local/bin/conn-service \
 && test -x /usr/local/bin/conn-service

USER 10001:10001
WORKDIR /home/conn
EXPOSE 18000 18101 18102 18103 18080

# /healthz on the service's ops port (CONN_HEALTH_PORT overrides). No curl in a slim
# image: the standard library is enough.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; p=os.environ.get('CONN_HEALTH_PORT') or open('/etc/conn-ops-port').read().strip(); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % p, timeout=2).status == 200 else 1)"]

ENTRYPOINT ["/usr/local/bin/conn-service"]
