"""1. Directive latency: from the API answering 202 to the directive's outcome in the log.

Measured with a raw aiokafka tap on the pipeline's events topic (arrival times), never by
polling the API. Per incident, a legal mix repeated `cycles` times:

  update_incident_record  -> IncidentRecordUpdated   (non-consequential, a webhook side effect)
  gather_state            -> StateGathered           (read-only, reads the simulator)
  restart_dependency_tier -> StepSucceeded           (consequential: claim, StepStarted, act)
                          -> VerificationSnapshot    (settle forced to 0, 0.3 s window, 1 sample)

The next consequential step waits for the previous one's snapshot (the one-step gate), so a
restart is verified before the next cycle starts. Incidents run `workers` at a time, each
worker restarting a tier/region of its own (bench_platform.yaml).
Baseline: raw aiokafka produce (acks=all, idempotent) -> consume round trips, one record at a
time, on a fresh topic with the same settings, measured in the same run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson

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


@dataclass
class Samples:
    answer: list[float] = field(default_factory=list)  # request sent -> 202 received
    by_action: dict[str, list[float]] = field(default_factory=dict)
    to_snapshot: list[float] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    details: list[str] = field(default_factory=list)
    retries: int = 0

    def add(self, action: str, seconds: float) -> None:
        self.by_action.setdefault(action, []).append(seconds)

    def all(self) -> list[float]:
        return [s for v in self.by_action.values() for s in v]


def _code(body: str) -> str:
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:60]


async def _wait_sequence(t: EventTap, incident: str, at_least: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while t.sequence[incident] < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{incident}: ledger did not reach {at_least}")
        await asyncio.sleep(0.005)


async def run_incident(
    cmd: Commander, t: EventTap, incident: str, target: tuple[str, str], cycles: int, s: Samples
) -> None:
    await cmd.open(incident)
    await _wait_sequence(t, incident, 2)
    tier, region = target
    for cycle in range(cycles):
        plan = [
            record_action(f"bench cycle {cycle}: status update"),
            gather_action(region),
            restart_action(tier, region),
        ]
        for action in plan:
            kind = str(action["action"])
            sent = time.perf_counter()
            try:
                answer, retries = await cmd.direct_retrying(
                    incident, action, t.changed_at[incident]
                )
                s.retries += retries
            except Refused as exc:
                key = f"api {exc.status} {_code(exc.body)}"
                s.refused[key] = s.refused.get(key, 0) + 1
                if len(s.details) < 5:
                    s.details.append(f"{kind}: {exc.body[:300]}")
                return
            answered = time.perf_counter()
            s.answer.append(answered - sent)
            cid = str(answer["correlation_id"])
            outcome = await t.wait(cid, *DONE[kind], *FAILED)
            if outcome.event_type in FAILED:
                reason = str(outcome.payload.get("reason") or outcome.payload.get("error", ""))
                key = f"{outcome.event_type} {reason}"[:80]
                s.refused[key] = s.refused.get(key, 0) + 1
                return
            s.add(kind, outcome.arrived - answered)
            if kind == "restart_dependency_tier":
                snap = await t.wait(cid, "VerificationSnapshot")
                s.to_snapshot.append(snap.arrived - answered)
                verdict = str(snap.payload.get("verdict"))
                s.verdicts[verdict] = s.verdicts.get(verdict, 0) + 1
                if verdict != "recovered":
                    if len(s.details) < 5:
                        s.details.append(f"{verdict}: {snap.payload.get('detail', '')[:300]}")
                    return  # the incident holds: no further steps (counted in verdicts)
    s.incidents += 1


async def main(quick: bool = False) -> Result:
    incidents, cycles, workers = (20, 2, 8) if quick else (100, 4, 8)
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
                    while not queue.empty():
                        i = queue.get_nowait()
                        inc = new_incident_id("lat", i)
                        await run_incident(cmd, t, inc, TARGETS[w], cycles, samples)

                load_started = time.perf_counter()
                await asyncio.gather(*(worker(w) for w in range(workers)))
                load_seconds = time.perf_counter() - load_started
            effects = await asyncio.to_thread(pipeline.side_effects)
        finally:
            await cmd.aclose()
        async with scratch_topics(bootstrap) as raw_topics:
            payload = b'{"event_type":"DirectiveIssued",' + b'"x":"' + b"y" * 600 + b'"}'
            raw = await raw_round_trips(bootstrap, raw_topics.events, raw_count, payload=payload)
    raw_p = percentiles(raw)
    everything = samples.all()
    rows = [
        ("all: 202->outcome", everything),
        ("record: 202->IncidentRecordUpdated", samples.by_action.get("update_incident_record", [])),
        ("gather: 202->StateGathered", samples.by_action.get("gather_state", [])),
        ("restart: 202->StepSucceeded", samples.by_action.get("restart_dependency_tier", [])),
        ("restart: 202->VerificationSnapshot", samples.to_snapshot),
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
    result.figures["directives measured"] = len(everything)
    result.figures["incidents completed"] = samples.incidents
    result.figures["incidents"] = incidents
    result.figures["concurrent incidents"] = workers
    result.figures["duplicate side effects"] = len(dupes)
    result.figures["load seconds"] = round(load_seconds, 1)
    result.baseline["raw round trips measured"] = raw_p.get("n")
    result.notes += [
        "Latency = arrival at a raw aiokafka tap on the events topic minus the moment the "
        "client received the API's 202 (same process clock).",
        "Per incident: (update_incident_record, gather_state, restart_dependency_tier) x "
        f"{cycles}; {workers} incidents at a time, each restarting a tier/region of its own.",
        "VerificationSnapshot: settle forced to 0 (CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS=0), "
        "window 0.3 s with 1 sample (bench/bench_authority.yaml): the 0.3 s window is "
        "inside the figure; it must exceed the simulator's 0.2 s metrics tick.",
        f"verdicts: {samples.verdicts}; refusals/failures: {samples.refused or 'none'}",
        *[f"refusal: {d}" for d in samples.details],
        "Baseline: raw aiokafka produce(acks=all, idempotent)->consume round trip, one record "
        "at a time, 6-partition topic, same broker, same run; ratio = conn / raw.",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    console.print(f"[dim]{NAME}: {len(everything)} directives in {load_seconds:.1f}s[/dim]")
    return result
