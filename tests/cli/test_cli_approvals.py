"""`conn approvals` / `conn approve` / `conn decline` against a running directive API
process (real Kafka + PostgreSQL): the two-person rule from the command line."""

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
RULE = """
approvals:
  - action: drain_worker_pool
    targets: [cache-invalidation]
    count: 1
    roles: [specialist, commander]
"""


def test_cli_lists_approves_and_declines(
    start_process: Any,
    kafka_bootstrap: str,
    conn_topics: Any,
    fresh_database: str,
    trust: Any,
    tmp_path: Path,
) -> None:
    from fixtures_services import free_port

    port = free_port()
    api = start_process(
        "directive-api",
        "conn_api",
        env={
            **trust.env("directive-api"),
            "CONN_API_PORT": str(port),
            "CONN_ENV": "development",
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
            app,
            list(args),
            env={"CONN_API_URL": api.url, "CONN_TOKEN": TOKENS[who], "COLUMNS": "250"},
        )

    runbook = tmp_path / "two-person.yaml"
    runbook.write_text((ROOT / "runbooks" / "checkout-authority.yaml").read_text() + RULE)
    r = conn("alice", "incident", "open", "--title", "t", "--service", "checkout", "--json")
    assert r.exit_code == 0, r.output
    inc = re.search(r'"incident_id": "([^"]+)"', r.output).group(1)  # type: ignore[union-attr]
    r = conn("alice", "authority", "declare", inc, "--file", str(runbook))
    assert r.exit_code == 0, r.output
    r = conn("alice", "direct", "drain-worker-pool", inc, "--pool", "cache-invalidation",
             "--region", "us-east", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    cid = json.loads(r.output)["correlation_id"]

    r = conn("olive", "approvals", inc)
    assert r.exit_code == 0, r.output
    assert cid in r.output and "awaiting" in r.output and "precondition" in r.output
    r = conn("olive", "approvals", inc, "--json")
    (item,) = json.loads(r.output)["items"]
    sha = item["packet_sha256"]

    # The issuer (a commander, entitled by the rule): refused with its own code and a hint.
    r = conn("alice", "approve", inc, cid, "--packet", sha)
    assert r.exit_code == 1 and "403 self_approval" in r.output, r.output
    assert "a second person entitled by its approval rule must approve it" in r.output
    r = conn("olive", "approve", inc, cid, "--packet", sha)  # an observer: not entitled
    assert r.exit_code == 1 and "403 role_may_not_direct" in r.output, r.output
    assert "self_approval" not in r.output
    r = conn("dana", "approve", inc, cid, "--packet", "0" * 64)
    assert r.exit_code == 1 and "stale_base_position" in r.output, r.output
    r = conn("rob", "decline", inc, cid, "--packet", sha, "--reason", "not during the sale")
    assert r.exit_code == 0, r.output
    r = conn("dana", "approve", inc, cid, "--packet", sha)
    assert r.exit_code == 1 and "approval_declined" in r.output, r.output
    r = conn("olive", "approvals", inc, "--all")
    assert "declined" in r.output and "rob" in r.output, r.output
