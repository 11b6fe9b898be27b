"""Issue 18, item 3: the tests never stop, restart or reconfigure a stack they did not
start; `make test` beside a running `make demo` leaves it exactly as it was.

A user-like "demo" stack (the whole `make up`: PostgreSQL, Kafka, topics, simulator and
the four services, under its supervisor) runs in a directory and on ports of its own.
Then a test session is started the way a user would start it beside that stack: its
environment names the demo's directory (CONN_LOCAL_DIR) and ports (CONN_*_PORT), no
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, no Docker. That session runs the fault tier:
tests/chaos/test_own_stack_restarts.py (`own_stack` restarts Kafka and PostgreSQL, the
fixture every fault test uses) and the reduced fault suite of `make test`
(tests/chaos/test_chaos.py: services SIGKILLed, a Kafka and a PostgreSQL restart, hostile
records, under concurrent incidents). Afterwards every process of the
demo stack has its PID, nothing of it was restarted, and its data is as it was.
(Before issue 18 the session reused the running stack and restarted its Kafka and
PostgreSQL; the packager died.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from stack_cli import ROOT, StackCli

from conn_localstack.trust import DevTrust

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MARKER_TOPIC = "conn.deadletter"  # exists on every stack; a stray record there is harmless


def _demo_trust(demo: StackCli) -> DevTrust:
    """The demo stack's own broker logins (its `.local/trust`, not the session's)."""
    return DevTrust(demo.directory / "trust")


async def _produce_marker(bootstrap: str, marker: str, login: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **login)
    await producer.start()
    try:
        await producer.send_and_wait(MARKER_TOPIC, marker.encode(), key=b"isolation-test")
    finally:
        await producer.stop()


async def _markers(bootstrap: str, login: dict[str, Any]) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **login)
    await consumer.start()
    try:
        await consumer._client.set_topics([MARKER_TOPIC])
        tps = [
            TopicPartition(MARKER_TOPIC, p)
            for p in consumer.partitions_for_topic(MARKER_TOPIC) or ()
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[str] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                out += [r.value.decode() for r in records if r.key == b"isolation-test"]
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def _pids(status: dict) -> dict[str, int | None]:
    return {k: v["pid"] for k, v in status.items() if k != "supervisor"}


def _all_healthy(status: dict) -> bool:
    return all(status[n]["healthy"] for n in status if n != "supervisor")


@pytest.mark.timeout(1800)
async def test_make_test_beside_a_running_demo_leaves_it_untouched() -> None:
    with StackCli.temporary("demo") as demo:
        await _check_untouched(demo)


async def _check_untouched(demo: StackCli) -> None:
    demo_bootstrap = f"127.0.0.1:{demo.port('CONN_KAFKA_PORT')}"
    demo_dsn = f"postgresql://conn:conn@127.0.0.1:{demo.port('CONN_POSTGRES_PORT')}/conn"
    marker = uuid.uuid4().hex
    await asyncio.to_thread(demo.run, "up", timeout=600)
    before = await asyncio.to_thread(demo.wait, "demo healthy", _all_healthy)
    # The demo broker authenticates: an executor may write the dead-letter topic, the
    # read-only SRE principal reads it back.
    logins = _demo_trust(demo)
    await _produce_marker(demo_bootstrap, marker, logins.client_options("executor"))
    conn = await asyncpg.connect(demo_dsn)
    try:
        await conn.execute("CREATE TABLE isolation_marker (v text)")
        await conn.execute("INSERT INTO isolation_marker VALUES ($1)", marker)
    finally:
        await conn.close()
    logs_before = {n: len(demo.log(n)) for n in ("kafka", "postgres", "packager", "supervisor")}

    # -- a test session beside it, its environment naming the demo stack ------------------
    env = dict(demo.env)
    env.pop("CONN_STACK_EXIT_WITH", None)
    env["CONN_TEST_NO_DOCKER"] = "1"
    res = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/chaos/test_own_stack_restarts.py",
            "tests/chaos/test_chaos.py::test_fault_suite_reduced",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
    )
    out = res.stdout[-4000:] + res.stderr[-2000:]
    assert res.returncode == 0, out
    # It did restart its own Kafka and PostgreSQL, and ran the fault suite on its own stack.
    assert "3 passed" in res.stdout, out

    # -- the demo stack: same processes, nothing restarted, same data -----------------------
    after = await asyncio.to_thread(demo.wait, "demo healthy", _all_healthy)
    assert after["supervisor"] == before["supervisor"]
    assert _pids(after) == _pids(before)
    for name, row in after.items():
        if name == "supervisor":
            continue
        assert row["restarts"] == 0 and row["last_exit"] is None, row
        if row["pid"] is not None:
            assert psutil.Process(int(row["pid"])).is_running()
    for name, size in logs_before.items():
        new = demo.log(name)[size:]
        assert "start [" not in new and "stopped on request" not in new, (name, new[-2000:])
    assert await _markers(demo_bootstrap, logins.client_options("sre")) == [marker]
    conn = await asyncpg.connect(demo_dsn)
    try:
        assert await conn.fetchval("SELECT v FROM isolation_marker") == marker
    finally:
        await conn.close()
    assert os.environ["CONN_LOCAL_DIR"] != str(demo.directory)
