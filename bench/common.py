"""What every benchmark shares: percentiles, the machine, result files, printing,
and the raw-aiokafka baseline that each figure is compared with.

Benchmarks print figures beside a baseline measured *in the same run*; tests
never assert on time.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from conn_runtime.settings import Topics
from conn_runtime.topics import ensure_topics, topic_specs

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of `samples` (seconds in, milliseconds out)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pct(p: float) -> float:
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[k] * 1000

    return {
        "n": len(ordered),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_seconds: float | None = None

    def compare(self, key: str, ours: float | None, base: float | None) -> None:
        """One row: Conn's figure, the baseline measured in the same run, and the
        ratio ours/base (for latencies: how many times slower than the baseline; for
        rates: what fraction of the baseline's rate)."""
        self.figures[key] = ours
        if base is not None:
            self.baseline[key] = base
        r = ratio(ours, base)
        if r is not None:
            self.ratios[key] = r

    def write(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        doc = {
            "name": self.name,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "figures": self.figures,
            "baseline": self.baseline,
            "ratios": self.ratios,
            "notes": self.notes,
            "elapsed_seconds": self.elapsed_seconds,
        }
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return path

    def show(self) -> None:
        table = Table(title=f"{self.name}  ({os.cpu_count()} cores)", show_lines=False)
        table.add_column("figure")
        table.add_column("conn", justify="right")
        table.add_column("baseline", justify="right")
        table.add_column("ratio", justify="right")
        keys = list(dict.fromkeys([*self.figures, *self.baseline]))
        for key in keys:
            ours, base = self.figures.get(key), self.baseline.get(key)
            ratio = self.ratios.get(key)
            table.add_row(key, _fmt(ours), _fmt(base), f"{ratio:.3g}x" if ratio else "")
        console.print(table)
        for note in self.notes:
            console.print(f"  [dim]{note}[/dim]")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(ours: float | None, base: float | None) -> float | None:
    if not ours or not base:
        return None
    return ours / base


def login(user: str) -> dict[str, Any]:
    """aiokafka kwargs that log in to the local stack's broker as SCRAM `user` (raw
    baselines use `admin`, a super user, so ACLs never stand in their way)."""
    from conn_localstack.trust import dev_trust

    return dev_trust().client_options(user)


async def fresh_topics(bootstrap: str, *, events_partitions: int = 6) -> Topics:
    """Production-shaped topics under a unique prefix, with the production ACLs (groups
    prefixed like the topics, as the ephemeral pipeline names them), for one run."""
    from conn_localstack.trust import dev_acls
    from conn_runtime.acls import ensure_acls

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = Topics.with_prefix(prefix)
    specs = topic_specs(topics, events_partitions=events_partitions)
    await ensure_topics(bootstrap, specs, **login("admin"))
    await ensure_acls(bootstrap, dev_acls(topics, prefix), **login("admin"))
    return topics


async def raw_round_trips(bootstrap: str, topic: str, count: int, *, payload: bytes) -> list[float]:
    """Baseline: raw aiokafka produce (acks=all, idempotent) -> consume round trip,
    one record at a time, on the same broker and topic settings as Conn."""
    group = f"bench-raw-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **login("admin"),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **login("admin")
    )
    await consumer.start()
    await producer.start()
    try:
        # Wait for the assignment so no record is missed.
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.seek_to_end(tp)
        samples: list[float] = []
        for i in range(count):
            key = f"inc-{i % 100}".encode()
            started = time.perf_counter()
            await producer.send_and_wait(topic, payload, key=key)
            got = False
            while not got:
                batch = await consumer.getmany(timeout_ms=1000)
                got = any(batch.values())
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        await producer.stop()
        await consumer.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def raw_closed_loop(
    bootstrap: str, topic: str, *, concurrency: int, seconds: float, payload: bytes
) -> float:
    """Baseline for throughput: `concurrency` closed-loop clients, each producing one
    record (acks=all, idempotent) and waiting until a raw consumer has read it back.
    Returns completed round trips per second."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **login("admin"),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **login("admin")
    )
    await consumer.start()
    await producer.start()
    waiting: dict[bytes, asyncio.Future[None]] = {}

    async def reader() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for rec in records:
                    fut = waiting.pop(rec.key or b"", None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.seek_to_end(tp)
        task = asyncio.create_task(reader())
        done = 0
        deadline = time.perf_counter() + seconds

        async def client(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                key = f"{w}-{i}".encode()
                fut = asyncio.get_running_loop().create_future()
                waiting[key] = fut
                await producer.send_and_wait(topic, payload, key=key)
                await asyncio.wait_for(fut, 30)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
        task.cancel()
        return done / elapsed
    finally:
        await producer.stop()
        await consumer.stop()
