#!/usr/bin/env bash
# Development trust material into .local/trust/ (never committed): Ed25519 signing keys
# and the dev keyring for the Conn principals, and SCRAM passwords for every Kafka
# principal. Idempotent: existing keys and passwords are kept.
set -euo pipefail
cd "$CONN_ROOT"
.venv/bin/python -c "from conn_localstack.trust import main; raise SystemExit(main())"
