"""An open-loop load generator that does not starve: several worker processes, each with
its own event loop (uvloop), its own keep-alive HTTP connections (aiohttp) and its own
tap on just the partitions of its own incidents, driving a disjoint set of incidents on
its own share of one schedule; the parent merges their samples.

Why: one asyncio loop on the same 2 cores as the pipeline (httpx, a task per directive,
a tap decoding every event) fell seconds behind its own schedule past ~100 directives/s,
so the benchmark measured the client. Each worker measures its own health, recorded with
every offered rate:

  loop lag      a ticker sleeping TICK seconds: how much later than asked it wakes
  send lateness the request actually leaving the worker minus its scheduled send time
  CPU           the worker's own CPU seconds per wall second (of one core)

A step at which more than LATE_SHARE_LIMIT of the sends left more than LATE_SECONDS after
their schedule did not get the offered load it claims: `kept_schedule` is False and the
benchmark says so (bench.table does not take such a step as the system's capacity).

Refused gathers (409 stale_base_position: another gather of the incident landed first;
422 invalid_base_position: not folded yet) are re-read and re-sent at most `re_sends`
times per directive AND at most RE_SEND_BUDGET x the directives sent so far by the
worker in the step, so refusals cannot multiply the offered load; the re-sends made and
the directives given up are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.harness import RETRY_CAP_SECONDS, STATE_CHANGING, backoff

TICK = 0.005
LATE_SECONDS = 0.020
"""A send leaving more than this after its scheduled time counts as late."""
LATE_SHARE_LIMIT = 0.01
"""More than this share of late sends: the generator did not keep its schedule."""
RE_SEND_BUDGET = 0.10
"""Re-sends of refused (stale / not yet folded) directives per directive sent, at most."""


def late(lateness: list[float]) -> int:
    """How many sends left more than LATE_SECONDS after their schedule."""
    return sum(1 for x in lateness if x > LATE_SECONDS)


def kept_schedule(lateness: list[float]) -> bool:
    """At most LATE_SHARE_LIMIT of the sends late (nothing sent: nothing missed)."""
    return not lateness or late(lateness) <= LATE_SHARE_LIMIT * len(lateness)


class ReSendBudget:
    """Re-sends allowed: at most `per_directive` for one directive, and in all at most
    `share` x the directives sent so far (plus one, so the first refusal may be retried)."""

    def __init__(self, per_directive: int, share: float = RE_SEND_BUDGET) -> None:
        self.per_directive, self.share = per_directive, share
        self.sent = 0
        self.used = 0

    def allow(self, attempt: int) -> bool:
        if attempt >= self.per_directive or self.used >= self.share * self.sent + 1:
            return False
        self.used += 1
        return True


@dataclass
class Plan:
    """What one worker does: its incidents (all on `partitions` of `topic`), its share of
    each offered rate (every `workers`-th slot of the global schedule from `index`)."""

    index: int
    workers: int
    api_url: str
    token: str
    bootstrap: str
    topic: str
    partitions: list[int]
    incidents: list[str]
    regions: list[str]
    rates: list[float]
    seconds: float
    re_sends: int
    outcome_within: float


@dataclass
class StepSamples:
    """One worker's samples for one offered rate (plain data: crosses the process pipe)."""

    worker: int
    offered: float
    t0: float = 0.0
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    last_arrival: float = 0.0
    shed: int = 0
    re_sends: int = 0
    gave_up_stale: int = 0
    refused: int = 0
    lost: int = 0
    other: dict[str, int] = field(default_factory=dict)


class _Tap:
    """The worker's raw consumer on its own partitions: arrival times (perf_counter, one
    clock for every process of the machine) of its incidents' outcomes, and each
    incident's last state-changing sequence (what a directive is based on)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.mine = {i.encode() for i in plan.incidents}
        self.sequence: defaultdict[str, int] = defaultdict(int)
        self.changed_at: defaultdict[str, int] = defaultdict(int)
        self.first: dict[tuple[str, str], float] = {}
        self._waiters: defaultdict[tuple[str, str], list[asyncio.Future[tuple[str, float]]]] = (
            defaultdict(list)
        )

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from bench.common import login

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.plan.bootstrap, enable_auto_commit=False, **login("sre")
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.plan.topic, p) for p in self.plan.partitions]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, begins[tp])
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.perf_counter()
                for records in batch.values():
                    for rec in records:
                        if rec.key in self.mine:
                            self._add(now, rec.value)
        finally:
            await consumer.stop()

    def _add(self, now: float, value: bytes | None) -> None:
        try:
            doc = orjson.loads(value or b"")
            kind, incident = str(doc["event_type"]), str(doc["incident_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self.sequence[incident] += 1
        if kind in STATE_CHANGING:
            self.changed_at[incident] = self.sequence[incident]
        cid = doc.get("correlation_id")
        if cid is None:
            return
        key = (str(cid), kind)
        self.first.setdefault(key, now)
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result((kind, now))

    async def wait(self, cid: str, *kinds: str, within: float) -> tuple[str, float]:
        for k in kinds:
            if (cid, k) in self.first:
                return k, self.first[(cid, k)]
        fut: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        for k in kinds:
            self._waiters[(cid, k)].append(fut)
        try:
            return await asyncio.wait_for(fut, within)
        finally:
            for k in kinds:
                waiters = self._waiters.get((cid, k))
                if waiters and fut in waiters:
                    waiters.remove(fut)


async def ticker(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(max(0.0, time.perf_counter() - before - TICK))


def _code(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:40].decode(errors="replace")


async def _one(
    session: Any,
    tap: _Tap,
    plan: Plan,
    incident: str,
    region: str,
    scheduled: float,
    step: StepSamples,
    budget: ReSendBudget,
) -> None:
    import aiohttp

    step.lateness.append(time.perf_counter() - scheduled)
    url = f"/v1/incidents/{incident}/directives"
    action = {"action": "gather_state", "regions": [region]}
    attempt = 0
    while True:
        body = orjson.dumps({"action": action, "based_on_sequence": tap.changed_at[incident]})
        try:
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                status, text = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = f"transport {type(exc).__name__}"
            step.other[key] = step.other.get(key, 0) + 1
            return
        if status < 300:
            break
        code = _code(text)
        if status == 503 and code == "overloaded":
            step.shed += 1
            return
        stale = (status == 409 and code == "stale_base_position") or (
            status == 422 and code == "invalid_base_position"
        )
        if stale and budget.allow(attempt):
            step.re_sends += 1
            await asyncio.sleep(min(backoff(attempt), RETRY_CAP_SECONDS))
            attempt += 1
            continue
        if stale:
            step.gave_up_stale += 1
        key = f"api {status} {code}"
        step.other[key] = step.other.get(key, 0) + 1
        return
    step.answered.append(time.perf_counter() - scheduled)
    cid = str(orjson.loads(text)["correlation_id"])
    try:
        kind, arrived = await tap.wait(
            cid, "StateGathered", "DirectiveRefused", within=plan.outcome_within
        )
    except TimeoutError:
        step.lost += 1
        return
    if kind != "StateGathered":
        step.refused += 1
        return
    step.latencies.append(arrived - scheduled)
    step.last_arrival = max(step.last_arrival, arrived)


async def _offer(
    session: Any, tap: _Tap, plan: Plan, rate: float, t0: float, step: StepSamples
) -> None:
    """Every `workers`-th slot of the schedule t0 + i/rate, from slot `index`: each sent
    by its own task at its time, whatever happened to the others (open loop)."""
    budget = ReSendBudget(plan.re_sends)
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * plan.seconds)
    for n, i in enumerate(range(plan.index, total, plan.workers)):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        incident = plan.incidents[n % len(plan.incidents)]
        region = plan.regions[n % len(plan.regions)]
        budget.sent += 1
        step.sent += 1
        tasks.append(
            asyncio.create_task(_one(session, tap, plan, incident, region, scheduled, step, budget))
        )
    await asyncio.gather(*tasks)


async def _work(plan: Plan, barrier: Any, out: Any) -> None:
    import aiohttp

    tap = _Tap(plan)
    tap_task = asyncio.create_task(tap.run())
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    session = aiohttp.ClientSession(
        base_url=plan.api_url,
        connector=connector,
        headers={"Authorization": f"Bearer {plan.token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    )
    try:
        # Ready when the tap has seen every incident opened and its authority declared.
        deadline = time.monotonic() + 60
        while any(tap.changed_at[i] < 2 for i in plan.incidents):
            if tap_task.done():
                tap_task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("the worker's tap did not see its incidents opened")
            await asyncio.sleep(0.05)
        for rate in plan.rates:
            await asyncio.to_thread(barrier.wait)
            step = StepSamples(worker=plan.index, offered=rate)
            lags: list[float] = []
            ticker_task = asyncio.create_task(ticker(lags))
            cpu0, step.t0 = time.process_time(), time.perf_counter()
            await _offer(session, tap, plan, rate, step.t0, step)
            step.wall_seconds = time.perf_counter() - step.t0
            step.cpu_seconds = time.process_time() - cpu0
            ticker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker_task
            step.loop_lag = lags
            out.put(step)
    finally:
        await session.close()
        tap_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tap_task


def worker_main(plan: Plan, barrier: Any, out: Any) -> None:
    """A worker process's entry point (spawned)."""
    os.environ.setdefault("CONN_ENV", "development")
    try:
        import uvloop

        uvloop.run(_work(plan, barrier, out))
    except BaseException as exc:
        out.put(f"worker {plan.index} failed: {type(exc).__name__}: {exc}")
        barrier.abort()
        raise


async def run_workers(
    plans: list[Plan], after_step: Callable[[], None] | None = None
) -> list[list[StepSamples]]:
    """Spawn one process per plan (all with the same rates); per offered rate, every
    worker's samples (the workers start each rate together, at a barrier). `after_step`
    is called as each rate's last samples arrive (the next rate starts then)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    out = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(p, barrier, out)) for p in plans]
    for p in procs:
        p.start()
    steps: list[list[StepSamples]] = []
    try:
        for _ in plans[0].rates:
            got: list[StepSamples] = []
            while len(got) < len(plans):
                try:
                    item = await asyncio.to_thread(out.get, True, 1.0)
                except queue.Empty:
                    dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a worker process died (exit codes {dead})") from None
                    continue
                if isinstance(item, str):
                    raise RuntimeError(item)
                got.append(item)
            if after_step is not None:
                after_step()
            steps.append(got)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    return steps
