"""The `conn` CLI against a running directive API process (real Kafka + PostgreSQL)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from conn_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())


def test_cli_drives_an_incident(
    start_process: Any, kafka_bootstrap: str, conn_topics: Any, fresh_database: str, trust: Any
) -> None:
    from fixtures_services import free_port

    port = free_port()
    api = start_process(
        "directive-api",
        "conn_api",
        env={
            **trust.env("directive-api"),
            "CONN_API_PORT": str(port),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CONN_TOPIC_PREFIX": conn_topics.events.removesuffix("conn.events"),
            "DATABASE_URL": fresh_database,
        },
        port=port,
        health_path="/readyz",
        timeout=60,
    )
    runner = CliRunner()

    def conn(who: str, *args: str) -> Any:
        return runner.invoke(
            app, list(args), env={"CONN_API_URL": api.url, "CONN_TOKEN": TOKENS[who]}
        )

    r = conn(
        "alice", "incident", "open", "--title", "checkout down", "--service", "checkout", "--json"
    )
    assert r.exit_code == 0, r.output
    inc = re.search(r'"incident_id": "([^"]+)"', r.output).group(1)  # type: ignore[union-attr]
    assert (
        conn("alice", "authority", "declare", inc, "--runbook", "checkout-authority").exit_code == 0
    )
    r = conn(
        "alice",
        "direct",
        "disable-flag-rule",
        inc,
        "--flag",
        "checkout-pricing",
        "--rule",
        "canary-10pct",
        "--region",
        "eu-west",
        "--expect-enabled",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert '"status": "issued"' in r.output
    cid = re.search(r'"correlation_id": "([^"]+)"', r.output).group(1)  # type: ignore[union-attr]
    # refused: a second consequential step before the first is verified -> exit 1, no traceback
    r = conn(
        "alice",
        "direct",
        "drain-worker-pool",
        inc,
        "--pool",
        "checkout-workers",
        "--region",
        "us-east",
    )
    assert r.exit_code == 1 and "previous_step_unverified" in r.output
    assert "Traceback" not in r.output
    r = conn("olive", "hold", inc)
    assert r.exit_code == 1 and "role_may_not_direct" in r.output
    assert conn("alice", "hold", inc, "--detail", "checking").exit_code == 0
    r = conn("alice", "incident", "show", inc)
    assert r.exit_code == 0 and "manual: checking" in r.output
    r = conn("alice", "packet", inc)  # no packager running: nothing published
    assert r.exit_code == 1 and "no takeover packet" in r.output
    r = conn("alice", "ledger", inc)
    assert r.exit_code == 0 and "DirectiveIssued" in r.output and "HoldDeclared" in r.output
    r = conn("alice", "decision-packet", inc, cid)
    assert r.exit_code == 0 and "preconditions" in r.output
    r = conn("alice", "decision-packet", inc, cid, "--json")
    assert "rule canary-10pct of checkout-pricing is enabled in eu-west" in r.output
    assert conn("alice", "watch", inc, "--count", "1", "--interval", "0").exit_code == 0
    r = conn("alice", "kill-switch", "on", "--reason", "x")
    assert r.exit_code == 1 and "forbidden" in r.output
    assert conn("root", "kill-switch", "on", "--reason", "drill").exit_code == 0
    assert conn("root", "kill-switch", "off", "--reason", "drill over").exit_code == 0
    assert conn("alice", "resume", inc).exit_code == 0
    assert conn("alice", "incident", "list").exit_code == 0
    r = runner.invoke(
        app, ["incident", "list"], env={"CONN_API_URL": api.url, "CONN_TOKEN": "wrong"}
    )
    assert r.exit_code == 2 and "unauthorized" in r.output
    r = runner.invoke(
        app, ["incident", "list"], env={"CONN_API_URL": "http://127.0.0.1:1", "CONN_TOKEN": "x"}
    )
    assert r.exit_code == 3 and "cannot reach" in r.output
    assert conn("alice", "close", inc, "--resolution", "fixed").exit_code == 0
    # the fleet report: this incident closed, the drain caught at the API
    r = conn("olive", "report", "--format", "json")
    assert r.exit_code == 0, r.output
    totals = json.loads(r.output)["totals"]
    assert (totals["incidents"], totals["closed"]) == (1, 1)
    assert totals["caught_by_reason"].get("previous_step_unverified") == 1
    r = conn("olive", "report", "--format", "markdown", "--since", "2020-01-01")
    assert r.exit_code == 0 and "| Caught (refused before acting) |" in r.output, r.output
    r = conn("olive", "report")
    assert r.exit_code == 0 and "Trace completeness" in r.output, r.output
    r = conn("olive", "report", "--until", "2020-01-01", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.output)["totals"]["incidents"] == 0
    for bad in (
        ["--since", "yesterday"],
        ["--format", "xml"],
        ["--since", "2027", "--until", "2026"],
    ):
        r = conn("olive", "report", *bad)
        assert r.exit_code == 2 and "Traceback" not in r.output, (bad, r.output)


def test_cli_packet_and_takeover_with_the_packager(
    start_process: Any, kafka_bootstrap: str, conn_topics: Any, fresh_database: str, trust: Any
) -> None:
    """`conn handoff` -> the real packager publishes a packet -> `conn packet` shows it
    (from the read model) -> `conn accept` by the receiving team moves the conn."""
    import time

    from fixtures_services import free_port

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONN_TOPIC_PREFIX": conn_topics.events.removesuffix("conn.events"),
        "DATABASE_URL": fresh_database,
    }
    port, pport = free_port(), free_port()
    api = start_process(
        "directive-api",
        "conn_api",
        env={**env, **trust.env("directive-api"), "CONN_API_PORT": str(port)},
        port=port,
        health_path="/readyz",
        timeout=60,
    )
    start_process(
        "packager",
        "conn_packager",
        env={**env, **trust.env("packager"), "CONN_PACKAGER_METRICS_PORT": str(pport)},
        port=pport,
        health_path="/healthz",
        timeout=90,
    )
    runner = CliRunner()

    def conn(who: str, *args: str) -> Any:
        return runner.invoke(
            app, list(args), env={"CONN_API_URL": api.url, "CONN_TOKEN": TOKENS[who]}
        )

    r = conn("alice", "incident", "open", "--title", "t", "--service", "checkout", "--json")
    assert r.exit_code == 0, r.output
    inc = re.search(r'"incident_id": "([^"]+)"', r.output).group(1)  # type: ignore[union-attr]
    assert (
        conn("alice", "authority", "declare", inc, "--runbook", "checkout-authority").exit_code == 0
    )
    r = conn("alice", "handoff", inc, "--to", "database-platform")
    assert r.exit_code == 0, r.output
    deadline = time.monotonic() + 60
    while True:
        r = conn("dana", "packet", inc, "--json")
        if r.exit_code == 0 and '"source": "packager"' in r.output:
            break
        assert time.monotonic() < deadline, r.output
        time.sleep(0.3)
    r = conn("dana", "packet", inc)
    assert r.exit_code == 0 and "database-platform" in r.output, r.output
    assert "Traceback" not in r.output
    assert "conn accept" in r.output, "the packet says how to accept it, by its hash"
    # No default: the exact hash of the packet read is required.
    r = conn("dana", "accept", inc, "--json")
    assert r.exit_code == 2 and "--packet" in r.output, r.output
    r = conn("dana", "packet", inc, "--json")
    sha = re.search(r'"packet_sha256": "([0-9a-f]{64})"', r.output).group(1)  # type: ignore[union-attr]
    r = conn("dana", "accept", inc, "--packet", "0" * 64, "--json")
    assert r.exit_code == 1 and "stale_base_position" in r.output, r.output
    r = conn("dana", "accept", inc, "--packet", sha, "--json")
    assert r.exit_code == 0 and '"holder": "dana"' in r.output, r.output
    # the former commander's directives are refused now
    r = conn("alice", "direct", "gather-state", inc)
    assert r.exit_code == 1 and "not_conn_holder" in r.output, r.output
