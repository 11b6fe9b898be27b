"""The fast path, one commander: each directive type against its hop floor, and the CPU
each service spends per directive. Everything measured in the same run.

One incident, one commander, one directive at a time:

  gather_state             202 -> StateGathered at the tap        (`gathers` directives)
  restart_dependency_tier  202 -> StepSucceeded at the tap        (`restarts`; each waits for
                                  its VerificationSnapshot, the one-step gate, before the next)

Hop floor: the sum of the hops a directive cannot avoid after its 202, each hop measured
in this run on the same broker, database and simulator (p50 of `hop_samples` each):

  kafka_rtt   produce (acks=all, idempotent) -> consume by a raw aiokafka client
  kafka_ack   produce (acks=all, idempotent) until acknowledged
  http        a keep-alive HTTP GET to the simulator (the adapters' target)
  pg          one autocommitted INSERT ... ON CONFLICT through asyncpg

  gather_state = 1 http (the reads run concurrently) + 1 kafka_rtt (StateGathered to the tap)
  restart      = 1 pg (the fenced claim) + 1 kafka_ack (StepStarted before acting)
                 + 1 http (the restart call) + 1 kafka_rtt (StepSucceeded to the tap)

(The DirectiveIssued reaches the executor while the API waits for its own fold before
answering 202, so it is not counted.)

CPU per directive: user+system CPU time of each pipeline process (psutil), and of the
local broker, over each phase, minus what the same process spends idle over an equal
time (measured just before), divided by the directives of the phase. Baseline: the CPU
(this client process + the broker) of one raw Kafka round trip, measured the same way.
PostgreSQL's own CPU is not included (its backends are shared with the rest of the
machine).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import Result, console, login, percentiles
from bench.harness import (
    TARGETS,
    Commander,
    EventTap,
    Refused,
    ensure_stack,
    gather_action,
    new_incident_id,
    restart_action,
    running_pipeline,
    scratch_topics,
    tap,
)
from conn_localstack.ephemeral import Pipeline

NAME = "fast_path"
FLOOR_HOPS: dict[str, dict[str, int]] = {
    "gather_state": {"http": 1, "kafka_rtt": 1},
    "restart_dependency_tier": {"pg": 1, "kafka_ack": 1, "http": 1, "kafka_rtt": 1},
}
IDLE_SECONDS = 2.0
FAILED = ("DirectiveRefused", "StepFailed", "StepOutcomeUnknown")


def hop_floor(action: str, hops_p50_ms: dict[str, float]) -> float:
    """The floor of `action` in ms: its unavoidable hops, each at its measured p50."""
    return sum(n * hops_p50_ms[hop] for hop, n in FLOOR_HOPS[action].items())


# --- CPU accounting --------------------------------------------------------------------


def broker_pid(bootstrap: str) -> int | None:
    """The local broker: the kafka.Kafka process listening on the bootstrap port."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "kafka.Kafka" not in " ".join(proc.info["cmdline"] or []):
                continue
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return int(proc.pid)
        except (psutil.Error, OSError):
            continue
    return None


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


@dataclass
class CpuMeter:
    """CPU seconds of named processes between two snapshots."""

    pids: dict[str, int]

    def snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def pipeline_pids(pipeline: Pipeline, bootstrap: str) -> dict[str, int]:
    pids = {
        name: proc.popen.pid
        for name, proc in pipeline.procs.items()
        if proc.popen is not None and proc.alive
    }
    broker = broker_pid(bootstrap)
    if broker is not None:
        pids["kafka broker"] = broker
    return pids


async def idle_rates(meter: CpuMeter) -> dict[str, float]:
    """CPU seconds per second each process spends with nothing to do."""
    before, started = meter.snapshot(), time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    elapsed = time.perf_counter() - started
    return {k: v / elapsed for k, v in CpuMeter.spent(before, meter.snapshot()).items()}


def per_directive_ms(
    spent: dict[str, float], idle: dict[str, float], seconds: float, count: int
) -> dict[str, float]:
    if count == 0:
        return {}
    return {
        name: max(0.0, used - idle.get(name, 0.0) * seconds) * 1000 / count
        for name, used in spent.items()
    }


# --- hops -------------------------------------------------------------------------------


async def kafka_hops(
    bootstrap: str, topic: str, count: int, broker: int | None
) -> tuple[list[float], list[float], float]:
    """(round trips, acks, CPU ms per round trip: this process + the broker)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-hop-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **login("admin"),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **login("admin")
    )
    await consumer.start()
    await producer.start()
    payload = b'{"event_type":"StateGathered","x":"' + b"y" * 600 + b'"}'
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.seek_to_end(tp)
        rtts: list[float] = []
        acks: list[float] = []
        cpu0 = time.process_time() + (cpu_seconds(broker) if broker else 0.0)
        for i in range(count):
            started = time.perf_counter()
            await producer.send_and_wait(topic, payload, key=f"inc-{i % 50}".encode())
            acks.append(time.perf_counter() - started)
            got = False
            while not got:
                got = any((await consumer.getmany(timeout_ms=1000)).values())
            rtts.append(time.perf_counter() - started)
        cpu1 = time.process_time() + (cpu_seconds(broker) if broker else 0.0)
        return rtts, acks, (cpu1 - cpu0) * 1000 / max(count, 1)
    finally:
        await producer.stop()
        await consumer.stop()


async def http_hops(url: str, count: int) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await client.get("/healthz")
        for _ in range(count):
            started = time.perf_counter()
            (await client.get("/healthz")).raise_for_status()
            samples.append(time.perf_counter() - started)
    return samples


async def pg_hops(dsn: str, count: int) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_hop (k text PRIMARY KEY, at timestamptz)"
        )
        samples: list[float] = []
        for i in range(count):
            started = time.perf_counter()
            await conn.execute(
                "INSERT INTO bench_hop VALUES ($1, now()) ON CONFLICT DO NOTHING", f"k{i}"
            )
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        await conn.close()


# --- the commander ------------------------------------------------------------------------


async def directed(cmd: Commander, t: EventTap, incident: str, action: dict[str, Any]) -> str:
    answer, _ = await cmd.direct_retrying(incident, action, lambda: t.changed_at[incident])
    return str(answer["correlation_id"])


async def phase(
    cmd: Commander,
    t: EventTap,
    incident: str,
    actions: list[dict[str, Any]],
    outcome: str,
    gate: str | None,
) -> list[float]:
    """Each action in turn: 202 -> `outcome` at the tap (then wait for `gate`, untimed)."""
    samples: list[float] = []
    for action in actions:
        cid = await directed(cmd, t, incident, action)
        answered = time.perf_counter()
        seen = await t.wait(cid, outcome, *FAILED)
        if seen.event_type != outcome:
            raise RuntimeError(f"{action['action']}: {seen.event_type} {seen.payload}")
        samples.append(seen.arrived - answered)
        if gate is not None:
            snap = await t.wait(cid, gate)
            if snap.payload.get("verdict") != "recovered":
                raise RuntimeError(f"verification {snap.payload.get('verdict')}: {snap.payload}")
    return samples


async def main(quick: bool = False) -> Result:
    gathers, restarts, hop_samples = (20, 6, 100) if quick else (200, 40, 500)
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    env = {"CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "0"}
    async with running_pipeline(bootstrap, dsn, NAME, extra_env=env) as (pipeline, topics):
        cmd = Commander(pipeline.api.url)
        meter = CpuMeter(pipeline_pids(pipeline, bootstrap))
        cpu: dict[str, dict[str, float]] = {}
        latency: dict[str, list[float]] = {}
        try:
            async with tap(bootstrap, topics.events) as t:
                incident = new_incident_id("fast", 0)
                await cmd.open(incident)
                # Warm-up (connections, first reads), not measured.
                region = TARGETS[0][1]
                await phase(cmd, t, incident, [gather_action(region)] * 3, "StateGathered", None)
                plans = {
                    "gather_state": ([gather_action(region)] * gathers, "StateGathered", None),
                    "restart_dependency_tier": (
                        # Distinct tier/regions, reused at most every len(TARGETS) restarts
                        # (>= 1 s apart: restartedAt has second resolution).
                        [restart_action(*TARGETS[i % len(TARGETS)]) for i in range(restarts)],
                        "StepSucceeded",
                        "VerificationSnapshot",
                    ),
                }
                for kind, (actions, outcome, gate) in plans.items():
                    idle = await idle_rates(meter)
                    before, t0 = meter.snapshot(), time.perf_counter()
                    latency[kind] = await phase(cmd, t, incident, actions, outcome, gate)
                    seconds = time.perf_counter() - t0
                    spent = CpuMeter.spent(before, meter.snapshot())
                    cpu[kind] = per_directive_ms(spent, idle, seconds, len(actions))
        except Refused as exc:
            raise RuntimeError(f"the API refused a directive: {exc}") from exc
        finally:
            await cmd.aclose()
        # The hops, on the same broker, database and simulator, in the same run.
        async with scratch_topics(bootstrap) as raw_topics:
            rtts, acks, raw_cpu_ms = await kafka_hops(
                bootstrap, raw_topics.events, hop_samples, meter.pids.get("kafka broker")
            )
        http = await http_hops(pipeline.simulator.url, hop_samples)
        pg = await pg_hops(pipeline.database_url, hop_samples)
    hops = {
        "kafka_rtt": percentiles(rtts)["p50_ms"],
        "kafka_ack": percentiles(acks)["p50_ms"],
        "http": percentiles(http)["p50_ms"],
        "pg": percentiles(pg)["p50_ms"],
    }
    labels = {
        "gather_state": "gather_state: 202->StateGathered",
        "restart_dependency_tier": "restart: 202->StepSucceeded",
    }
    for kind, label in labels.items():
        p = percentiles(latency.get(kind, []))
        floor = hop_floor(kind, hops)
        n = p.get("n", 0)
        result.compare(f"{label} p50 ms, one commander (n={n})", p.get("p50_ms"), floor)
        result.figures[f"{label} p99 ms, one commander (n={n})"] = p.get("p99_ms")
    for kind, per_service in cpu.items():
        total = sum(ms for name, ms in per_service.items() if name != "simulator")
        short = "gather_state" if kind == "gather_state" else "restart"
        result.compare(f"CPU per {short}, whole pipeline ms", total, raw_cpu_ms)
        for name, ms in sorted(per_service.items()):
            result.figures[f"CPU per {short}: {name} ms"] = ms
    for hop, value in hops.items():
        result.figures[f"hop {hop} p50 ms (n={hop_samples})"] = value
    result.notes += [
        "Latency = arrival at a raw aiokafka tap minus the moment the client received the "
        "202 (same clock); one commander, one directive at a time, one incident.",
        "Baseline of each latency row: its hop floor, the sum of its unavoidable hops "
        f"{FLOOR_HOPS} at their p50 measured in this run: {hops}.",
        "CPU rows: user+system CPU of each pipeline process and the broker over the phase "
        f"minus its idle rate (measured over {IDLE_SECONDS:g} s just before) x the phase's "
        "duration, per directive; whole pipeline = the Conn services + the broker (the "
        "simulator, standing in for the target systems, is listed apart); PostgreSQL's CPU "
        "not included. Baseline: CPU of one raw Kafka round trip (this client + the broker).",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    console.print(f"[dim]{NAME}: {gathers} gathers, {restarts} restarts[/dim]")
    return result
