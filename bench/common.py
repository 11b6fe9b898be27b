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
import subprocess
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


def code_version() -> str:
    """The commit measured (short hash), "+changes" when tracked files outside
    bench/results/ and the READMEs differ from it, "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench/results",
                ":!README.md",
                ":!bench/README.md",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if changed else head


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": code_version(),
    }


BUSY_LOAD_PER_CORE = 0.5
"""A run started while the 1-minute load average exceeds this times the core count ran
on a busy machine: its result is marked so and never published (bench.table)."""
MIN_REPETITIONS = 3
"""Published figures are the median of at least this many repetitions."""


def load_snapshot() -> dict[str, Any]:
    """The machine's load average now, and whether it counts as busy."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "cores": cores,
        "busy": one > BUSY_LOAD_PER_CORE * cores,
    }


SETTLE_MAX_SECONDS = 240.0
"""How long a repetition waits for the machine to calm down (the previous repetition's own
load decays with the 1-minute average's ~60 s time constant) before it starts anyway."""


def settle(max_seconds: float = SETTLE_MAX_SECONDS, poll: float = 5.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below the busy threshold (or `max_seconds`
    passed), printing progress; returns the last snapshot. A repetition that still starts
    on a busy machine is recorded as such, never published."""
    deadline = time.monotonic() + max_seconds
    snap = load_snapshot()
    while snap["busy"] and time.monotonic() < deadline:
        left = deadline - time.monotonic()
        console.print(
            f"[dim]  settling: load average {snap['loadavg_1m']} > "
            f"{BUSY_LOAD_PER_CORE * snap['cores']:.1f}; waiting (at most {left:.0f}s more)[/dim]"
        )
        time.sleep(min(poll, max(left, 0.0)))
        snap = load_snapshot()
    return snap


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def merge_median(name: str, runs: list[Result]) -> Result:
    """One Result whose every numeric figure and baseline is the median over `runs` (the
    repetitions of one benchmark); ratios are recomputed from the medians. A key missing
    from some repetition (e.g. a row keyed by its sample count) is matched by its label
    without the `(n=...)` suffix. Non-numeric values are taken from the last run."""
    merged = Result(name)

    def section(get: Any) -> dict[str, Any]:
        by_label: dict[str, list[Any]] = {}
        shown: dict[str, str] = {}
        for run in runs:
            for key, value in get(run).items():
                label = key.split(" (n=")[0]
                by_label.setdefault(label, []).append(value)
                shown[label] = key
        out: dict[str, Any] = {}
        for label, values in by_label.items():
            numbers = [v for v in values if _numeric(v)]
            if numbers and len(numbers) == len(values):
                out[shown[label]] = statistics.median(numbers)  # ints stay ints (odd n)
            else:
                out[shown[label]] = values[-1]
        return out

    merged.figures = section(lambda r: r.figures)
    merged.baseline = section(lambda r: r.baseline)
    for key, ours in merged.figures.items():
        r = ratio(ours, merged.baseline.get(key)) if _numeric(ours) else None
        if r is not None:
            merged.ratios[key] = r
    merged.notes = [f"median of {len(runs)} repetition(s)", *(runs[-1].notes if runs else [])]
    merged.elapsed_seconds = sum(r.elapsed_seconds or 0 for r in runs) or None
    merged.runs = [
        {
            "figures": r.figures,
            "baseline": r.baseline,
            "load_before": r.load_before,
            "load_after": r.load_after,
            "elapsed_seconds": r.elapsed_seconds,
        }
        for r in runs
    ]
    merged.quick = any(r.quick for r in runs)
    return merged


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_seconds: float | None = None
    load_before: dict[str, Any] | None = None
    load_after: dict[str, Any] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    """The repetitions this result is the median of (figures, baselines, load)."""
    quick: bool = False

    @property
    def loaded(self) -> bool:
        """A repetition started on a busy machine (or its load was not recorded)."""
        befores = [r.get("load_before") for r in self.runs] or [self.load_before]
        return any(b is None or b.get("busy", True) for b in befores)

    @property
    def publishable(self) -> bool:
        return len(self.runs) >= MIN_REPETITIONS and not self.loaded and not self.quick

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
            "repetitions": len(self.runs),
            "runs": self.runs,
            "quick": self.quick,
            "loaded_machine": self.loaded,
            "publishable": self.publishable,
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
        if self.loaded:
            console.print(
                "  [yellow]started on a busy machine (1-min load average > "
                f"{BUSY_LOAD_PER_CORE} x cores): recorded, not published[/yellow]"
            )


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

    options: dict[str, Any] = dev_trust().client_options(user)
    return options


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
