"""`python -m conn_runtime.topics` (the Helm topics Job): specs, argument errors, and a real run
against Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from conn_runtime.topics import main


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONN_"))}
    return subprocess.run(
        [sys.executable, "-m", "conn_runtime.topics", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        check=False,
    )


def test_dry_run_production_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--replication-factor", "3", "--events-partitions", "12"]) == 0
    specs = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert specs["conn.events"]["partitions"] == 12
    assert specs["conn.control"]["partitions"] == 1
    for s in specs.values():
        assert s["replication_factor"] == 3
        assert s["configs"]["min.insync.replicas"] == "2"


def test_dry_run_single_broker_has_no_min_insync(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--partitions", "2"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert all(s["replication_factor"] == 1 for s in specs)
    assert all("min.insync.replicas" not in s["configs"] for s in specs)
    assert next(s for s in specs if s["name"] == "conn.events")["partitions"] == 2


@pytest.mark.parametrize(
    "args",
    [["--replication-factor", "0"], ["--events-partitions", "x"], ["--nope"]],
    ids=["zero-rf", "not-int", "unknown-flag"],
)
def test_bad_arguments_exit_2_without_traceback(args: list[str]) -> None:
    res = _run(*args, "--dry-run")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "error:" in res.stderr


def test_bad_partitions_env_is_a_clear_error() -> None:
    res = _run("--dry-run", env={"CONN_EVENTS_PARTITIONS": "many"})
    assert res.returncode == 2
    assert "invalid configuration" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.integration
async def test_creates_topics_then_reports_them_existing(kafka_bootstrap: str, trust: Any) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from conn_runtime.topics import delete_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = {
        **trust.kafka_env("admin"),  # the Helm job runs as the cluster's admin principal
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONN_TOPIC_PREFIX": prefix,
    }
    names = [f"{prefix}conn.{t}" for t in ("events", "takeover", "control", "deadletter")]
    try:
        first = _run("--events-partitions", "2", "--other-partitions", "1", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.count(": created (") == 4, first.stdout
        second = _run("--events-partitions", "2", "--other-partitions", "1", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count(": exists (") == 4, second.stdout

        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka_bootstrap, **trust.kafka_options("admin")
        )
        await admin.start()
        try:
            described: list[dict[str, Any]] = await admin.describe_topics(names)
            parts = {t["topic"]: len(t["partitions"]) for t in described}
            assert parts[f"{prefix}conn.events"] == 2
            assert parts[f"{prefix}conn.control"] == 1
            cfgs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}conn.events")]
            )
            entries = {e[0]: e[1] for e in cfgs[0].resources[0][4]}
            assert entries["retention.ms"] == "-1"
            assert entries["cleanup.policy"] == "delete"
        finally:
            await admin.close()

        # A changed partition count is refused (exit 1, one clear line, no traceback).
        third = _run("--events-partitions", "3", "--other-partitions", "1", env=env)
        assert third.returncode == 1
        assert "TopicMismatchError" in third.stderr and "partition count" in third.stderr
        assert "Traceback" not in third.stderr
    finally:
        await delete_topics(kafka_bootstrap, names, **trust.kafka_options("admin"))


@pytest.mark.integration
async def test_replication_factor_above_broker_count_fails_cleanly(
    kafka_bootstrap: str, trust: Any
) -> None:
    """The local broker is a single node: RF 3 must fail loudly (exit 1), never silently
    create under-replicated topics."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    res = _run(
        "--replication-factor",
        "3",
        "--events-partitions",
        "1",
        "--other-partitions",
        "1",
        "--ready-timeout",
        "10",
        env={
            **trust.kafka_env("admin"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CONN_TOPIC_PREFIX": prefix,
        },
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "topics: failed against" in res.stderr
    assert "Traceback" not in res.stderr


def test_dry_run_with_acls_lists_who_may_do_what(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--acls", "--integration", "status-page", "--reader", "sre"]) == 0
    acls = json.loads(capsys.readouterr().out)["acls"]
    assert "User:directive-api WRITE topic conn.control" in acls
    assert "User:status-page WRITE topic conn.events" in acls
    assert "User:sre READ topic conn.events" in acls
    assert not [a for a in acls if a.startswith(("User:status-page WRITE topic conn.control",))]
    assert not [a for a in acls if a.startswith("User:sre WRITE")]


@pytest.mark.integration
async def test_the_job_creates_the_acls_the_broker_then_enforces(
    kafka_bootstrap: str, trust: Any
) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError

    from conn_runtime.topics import delete_topics

    if not trust.sasl:
        pytest.skip("no authorizer on a PLAINTEXT testcontainer")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = {
        **trust.kafka_env("admin"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONN_TOPIC_PREFIX": prefix,
    }
    names = [f"{prefix}conn.{t}" for t in ("events", "takeover", "control", "deadletter")]

    async def write(user: str, topic: str) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", **trust.kafka_options(user)
        )
        try:
            await producer.start()
            await producer.send_and_wait(topic, b"{}", key=b"k")
        finally:
            await producer.stop()

    try:
        res = _run("--events-partitions", "1", "--other-partitions", "1", "--acls",
                   "--integration", "example-integration", env=env)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "acls: allow User:example-integration WRITE topic" in res.stdout
        await write("example-integration", f"{prefix}conn.events")
        with pytest.raises(TopicAuthorizationFailedError):
            await write("example-integration", f"{prefix}conn.control")
    finally:
        await delete_topics(kafka_bootstrap, names, **trust.kafka_options("admin"))
