"""1. Directive latency: from the API answering 202 to the directive's outcome in the log.

Measured with a raw aiokafka tap on the pipeline's events topic (arrival times), never by
polling the API. Per incident, `restarts` consequential steps, each timed twice:

  restart_dependency_tier -> StepSucceeded           (consequential: claim, StepStarted, act)
                          -> VerificationSnapshot    (settle forced to 0, 0.3 s window, 1 sample)

and, every `noncons_every`-th step, two non-consequential directives before it (their own row):

  update_incident_record  -> IncidentRecordUpdated   (a webhook side effect)
  gather_state            -> StateGathered           (read-only, reads the simulator)

The next consequential step waits for the previous one's snapshot (the one-step gate), so a
restart is verified before the next one starts. Incidents run `workers` at a time; each
worker rotates over tier/region pairs of its own (bench_platform.yaml), and a tier/region
is restarted again only >= 1 s after its previous restart's StepSucceeded: a rollout
restart is stamped `kubectl.kubernetes.io/restartedAt` with second resolution (as kubectl
does), so a second restart in the same wall-clock second leaves the pod template
unchanged, i.e. restarts nothing, and its verification is rightly `conflict`.
Baseline: raw aiokafka produce (acks=all, idempotent) -> consume round trips, one record at a
time, on a fresh topic with the same settings, measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import loadgen
from bench.common import Result, console, percentiles, raw_round_trips
from bench.harness import (
    TARGETS,
    Commander,
    EventTap,
    Refused,
    ensure_stack,
    gather_action,
    new_incident_id,
    record_action,
    restart_action,
    running_pipeline,
    scratch_topics,
    tap,
)

NAME = "directive_latency"
DONE = {
    "update_incident_record": ("IncidentRecordUpdated",),
    "gather_state": ("StateGathered",),
    "restart_dependency_tier": ("StepSucceeded",),
}
FAILED = ("DirectiveRefused", "StepFailed", "StepOutcomeUnknown")
RESTART_SPACING = 1.0
"""Seconds between a restart's StepSucceeded and the next restart of the same tier/region
(restartedAt has second resolution; see the module docstring)."""

Target = tuple[str, str]


@dataclass
class Samples:
    answer: list[float] = field(default_factory=list)  # request sent -> 202 received
    by_action: dict[str, list[float]] = field(default_factory=dict)
    to_snapshot: list[float] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    stopped_early: int = 0
    details: list[str] = field(default_factory=list)
    retries: int = 0
    spacing_waits: int = 0
    noop_restarts: int = 0
    last_restart: dict[Target, float] = field(default_factory=dict)
    """perf_counter() at which the tap saw each tier/region's last StepSucceeded."""

    def add(self, action: str, seconds: float) -> None:
        self.by_action.setdefault(action, []).append(seconds)

    def all(self) -> list[float]:
        return [s for v in self.by_action.values() for s in v]

    def nonconsequential(self) -> list[float]:
        return [
            *self.by_action.get("update_incident_record", []),
            *self.by_action.get("gather_state", []),
        ]


def _code(body: str) -> str:
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:60]


def is_noop_restart(payload: dict[str, Any]) -> bool:
    """A StepSucceeded for a restart whose tier neither started restarting nor moved to a
    new generation (the write changed nothing on the control plane)."""
    result = payload.get("result") or {}
    before, after = result.get("before") or {}, result.get("after") or {}
    if "generation" not in before or "generation" not in after:
        return False
    return not after.get("restarting") and after["generation"] == before["generation"]


async def _wait_sequence(t: EventTap, incident: str, at_least: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while t.sequence[incident] < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{incident}: ledger did not reach {at_least}")
        await asyncio.sleep(0.005)


async def _spaced(s: Samples, target: Target) -> None:
    last = s.last_restart.get(target)
    if last is None:
        return
    wait = last + RESTART_SPACING - time.perf_counter()
    if wait > 0:
        s.spacing_waits += 1
        await asyncio.sleep(wait)


async def run_incident(
    cmd: Commander,
    t: EventTap,
    incident: str,
    targets: list[Target],
    restarts: int,
    noncons_every: int,
    s: Samples,
) -> None:
    await cmd.open(incident)
    await _wait_sequence(t, incident, 2)
    for step in range(restarts):
        target = targets[step % len(targets)]
        tier, region = target
        plan: list[dict[str, Any]] = []
        if noncons_every and step % noncons_every == 0:
            plan += [record_action(f"bench step {step}: status update"), gather_action(region)]
        plan.append(restart_action(tier, region))
        for action in plan:
            kind = str(action["action"])
            if kind == "restart_dependency_tier":
                await _spaced(s, target)
            sent = time.perf_counter()
            try:
                answer, retries = await cmd.direct_retrying(
                    incident, action, lambda: t.changed_at[incident]
                )
                s.retries += retries
            except Refused as exc:
                key = f"api {exc.status} {_code(exc.body)}"
                s.refused[key] = s.refused.get(key, 0) + 1
                if len(s.details) < 5:
                    s.details.append(f"{kind}: {exc.body[:300]}")
                s.stopped_early += 1
                return
            answered = time.perf_counter()
            s.answer.append(answered - sent)
            cid = str(answer["correlation_id"])
            outcome = await t.wait(cid, *DONE[kind], *FAILED)
            if outcome.event_type in FAILED:
                reason = str(outcome.payload.get("reason") or outcome.payload.get("error", ""))
                key = f"{outcome.event_type} {reason}"[:80]
                s.refused[key] = s.refused.get(key, 0) + 1
                s.stopped_early += 1
                return
            s.add(kind, outcome.arrived - answered)
            if kind != "restart_dependency_tier":
                continue
            s.last_restart[target] = outcome.arrived
            noop = is_noop_restart(outcome.payload)
            s.noop_restarts += noop
            snap = await t.wait(cid, "VerificationSnapshot")
            s.to_snapshot.append(snap.arrived - answered)
            verdict = str(snap.payload.get("verdict"))
            s.verdicts[verdict] = s.verdicts.get(verdict, 0) + 1
            if verdict != "recovered":
                if len(s.details) < 5:
                    s.details.append(
                        f"{verdict} (no-op restart: {noop}): "
                        f"{str(snap.payload.get('detail', ''))[:300]}"
                    )
                s.stopped_early += 1
                return  # the incident holds: no further steps (counted in verdicts)
    s.incidents += 1


async def main(quick: bool = False) -> Result:
    incidents, restarts, workers = (20, 3, 8) if quick else (100, 11, 8)
    noncons_every = 3
    raw_count = 200 if quick else 1000
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    samples = Samples()
    env = {"CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "0"}
    async with running_pipeline(bootstrap, dsn, NAME, extra_env=env) as (pipeline, topics):
        cmd = Commander(pipeline.api.url)
        try:
            async with tap(bootstrap, topics.events) as t:
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(incidents):
                    queue.put_nowait(i)

                async def worker(w: int) -> None:
                    own = TARGETS[w::workers]  # disjoint tier/region pairs per worker
                    while not queue.empty():
                        i = queue.get_nowait()
                        inc = new_incident_id("lat", i)
                        await run_incident(cmd, t, inc, own, restarts, noncons_every, samples)

                lags: list[float] = []
                ticker = asyncio.create_task(loadgen.ticker(lags))
                cpu_started, load_started = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker(w) for w in range(workers)))
                load_seconds = time.perf_counter() - load_started
                client_cpu = (time.process_time() - cpu_started) / load_seconds
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            effects = await asyncio.to_thread(pipeline.side_effects)
        finally:
            await cmd.aclose()
        async with scratch_topics(bootstrap) as raw_topics:
            payload = b'{"event_type":"DirectiveIssued",' + b'"x":"' + b"y" * 600 + b'"}'
            raw = await raw_round_trips(bootstrap, raw_topics.events, raw_count, payload=payload)
    raw_p = percentiles(raw)
    everything = samples.all()
    rows = [
        ("restart: 202->StepSucceeded", samples.by_action.get("restart_dependency_tier", [])),
        ("restart: 202->VerificationSnapshot", samples.to_snapshot),
        ("non-consequential: 202->outcome", samples.nonconsequential()),
        ("record: 202->IncidentRecordUpdated", samples.by_action.get("update_incident_record", [])),
        ("gather: 202->StateGathered", samples.by_action.get("gather_state", [])),
        ("all: 202->outcome", everything),
    ]
    for label, values in rows:
        p = percentiles(values)
        n = p.get("n", 0)
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            result.compare(f"{label} {q.removesuffix('_ms')} ms (n={n})", p.get(q), raw_p.get(q))
    answer = percentiles(samples.answer)
    result.figures["request->202 p50 ms"] = answer.get("p50_ms")
    result.figures["request->202 p99 ms"] = answer.get("p99_ms")
    result.figures["invalid_base retries"] = samples.retries
    dupes = {k: v for k, v in effects.items() if v > 1}
    consequential = len(samples.by_action.get("restart_dependency_tier", []))
    result.figures["directives measured"] = len(everything)
    result.figures["consequential directives measured"] = consequential
    result.figures["snapshots measured"] = len(samples.to_snapshot)
    result.figures["incidents completed"] = samples.incidents
    result.figures["incidents stopped early"] = samples.stopped_early
    result.figures["incidents"] = incidents
    result.figures["concurrent incidents"] = workers
    result.figures["no-op restarts"] = samples.noop_restarts
    result.figures["restart spacing waits"] = samples.spacing_waits
    result.figures["duplicate side effects"] = len(dupes)
    result.figures["load seconds"] = round(load_seconds, 1)
    result.baseline["raw round trips measured"] = raw_p.get("n")
    lag = percentiles(lags)
    result.figures["client p99 ms loop lag"] = lag.get("p99_ms")
    result.figures["client max ms loop lag"] = lag.get("max_ms")
    result.figures["client CPU (cores)"] = round(client_cpu, 2)
    if lag.get("p99_ms", 0.0) > loadgen.LATE_SECONDS * 1000:
        result.notes.append(
            f"THE CLIENT'S EVENT LOOP LAGGED (p99 {lag['p99_ms']:.1f} ms, max "
            f"{lag['max_ms']:.1f} ms): the 202 and the tap's arrival are stamped late by up "
            "to that much; these latencies include the client's own waits."
        )
    result.notes += [
        "Latency = arrival at a raw aiokafka tap on the events topic minus the moment the "
        "client received the API's 202 (same process clock).",
        f"Per incident: {restarts} restart_dependency_tier steps, each preceded every "
        f"{noncons_every}rd step by update_incident_record + gather_state (the "
        f"non-consequential row); {workers} incidents at a time, each worker rotating over "
        f"{len(TARGETS) // workers} tier/region pairs of its own.",
        "VerificationSnapshot: settle forced to 0 (CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS=0), "
        "window 0.3 s with 1 sample (bench/bench_authority.yaml): the 0.3 s window is "
        "inside the figure; it must exceed the simulator's 0.2 s tick, which completes a "
        "restart (restart_seconds 1 simulated s at speed 60).",
        f"A tier/region is restarted again only >= {RESTART_SPACING:g} s after its previous "
        "StepSucceeded (restartedAt has second resolution, as with kubectl: two restarts "
        "in one second leave the pod template unchanged and the second restarts nothing); "
        f"waits: {samples.spacing_waits}, no-op restarts seen: {samples.noop_restarts}.",
        f"verdicts: {samples.verdicts}; refusals/failures: {samples.refused or 'none'}",
        *[f"stop: {d}" for d in samples.details],
        "Baseline: raw aiokafka produce(acks=all, idempotent)->consume round trip, one record "
        "at a time, 6-partition topic, same broker, same run; ratio = conn / raw.",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    console.print(
        f"[dim]{NAME}: {len(everything)} directives ({consequential} consequential) "
        f"in {load_seconds:.1f}s[/dim]"
    )
    return result
