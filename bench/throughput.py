"""5. Throughput: sustained directives per second through the whole pipeline
(API -> executor -> simulator -> verifier -> packager) with 1, 2 and 4 executor processes
on a fresh 6-partition events topic, and zero duplicate side effects at the simulator.

Load: `incidents` closed-loop commanders at once, each cycling update_incident_record ->
gather_state -> restart_dependency_tier (on a tier/region of its own) and waiting for each
directive's outcome in the log (for a restart: its VerificationSnapshot) before the next.
A directive counts when its outcome arrived during the measured window. After the window,
the packager must have projected every event of the topic into its read model (its lag is
reported). Baseline: the same number of closed-loop raw aiokafka produce->consume clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import asyncpg

from bench.common import Result, console, raw_closed_loop
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

NAME = "throughput"
FAILED = ("DirectiveRefused", "StepFailed", "StepOutcomeUnknown")


@dataclass
class Counts:
    completed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)


async def commander(cmd: Commander, t: EventTap, w: int, deadline: float, counts: Counts) -> None:
    incident = new_incident_id("tput", w)
    await cmd.open(incident)
    tier, region = TARGETS[w]
    n = 0
    while time.perf_counter() < deadline:
        n += 1
        for action, done in (
            (record_action(f"note {n}"), ("IncidentRecordUpdated",)),
            (gather_action(region), ("StateGathered",)),
            (restart_action(tier, region), ("VerificationSnapshot",)),
        ):
            try:
                answer, _ = await cmd.direct_retrying(
                    incident, action, lambda: t.changed_at[incident]
                )
            except Refused as exc:
                key = f"api {exc.status}"
                counts.refused[key] = counts.refused.get(key, 0) + 1
                await asyncio.sleep(0.05)
                break
            cid = str(answer["correlation_id"])
            outcome = await t.wait(cid, *done, *FAILED, within=60)
            if time.perf_counter() > deadline:
                return
            if outcome.event_type in FAILED:
                key = outcome.event_type
                counts.refused[key] = counts.refused.get(key, 0) + 1
                break
            counts.completed += 1
            if outcome.event_type == "VerificationSnapshot":
                verdict = str(outcome.payload.get("verdict"))
                counts.verdicts[verdict] = counts.verdicts.get(verdict, 0) + 1
                if verdict != "recovered":
                    break
        else:
            continue
        with contextlib.suppress(Refused):  # a hold: the commander resumes
            await cmd.resume(incident)


async def _packager_lag(dsn: str, schema: str, expected: int, within: float = 120) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        while time.perf_counter() - started < within:
            try:
                n = await conn.fetchval(f"SELECT count(*) FROM {schema}.ledger_entries")
            except asyncpg.UndefinedTableError:
                n = 0
            if n >= expected:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return float("nan")


async def one(bootstrap: str, dsn: str, executors: int, seconds: float, incidents: int) -> dict:
    env = {"CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "0"}
    counts = Counts()
    async with running_pipeline(
        bootstrap, dsn, f"{NAME}-{executors}", executors=executors, extra_env=env
    ) as (pipeline, topics):
        cmd = Commander(pipeline.api.url)
        try:
            async with tap(bootstrap, topics.events) as t:
                started = time.perf_counter()
                deadline = started + seconds
                await asyncio.gather(
                    *(commander(cmd, t, w, deadline, counts) for w in range(incidents))
                )
                elapsed = time.perf_counter() - started
                await asyncio.sleep(1.0)
                total_events = len(t.seen)
            schema = pipeline.base_env()["CONN_READ_SCHEMA"]
            lag = await _packager_lag(pipeline.database_url, schema, total_events)
            effects = await asyncio.to_thread(pipeline.side_effects)
        finally:
            await cmd.aclose()
    dupes = sum(1 for v in effects.values() if v > 1)
    return {
        "rate": counts.completed / elapsed,
        "completed": counts.completed,
        "duplicates": dupes,
        "side_effects": len(effects),
        "events": total_events,
        "packager_catch_up_s": lag,
        "refused": counts.refused,
        "verdicts": counts.verdicts,
    }


async def main(quick: bool = False) -> Result:
    seconds, incidents = (8.0, 8) if quick else (30.0, 24)
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    runs: dict[int, dict] = {}
    for executors in (1, 2, 4):
        runs[executors] = await one(bootstrap, dsn, executors, seconds, incidents)
        r = runs[executors]
        console.print(
            f"[dim]  {executors} executor(s): {r['rate']:.1f} directives/s, "
            f"{r['duplicates']} duplicate side effects[/dim]"
        )
    async with scratch_topics(bootstrap) as raw_topics:
        base = await raw_closed_loop(
            bootstrap,
            raw_topics.events,
            concurrency=incidents,
            seconds=min(seconds, 10.0),
            payload=b'{"event_type":"DirectiveIssued","x":"' + b"y" * 600 + b'"}',
        )
    for executors, r in runs.items():
        result.compare(f"{executors} executor(s): directives/s", r["rate"], base)
        result.figures[f"{executors} executor(s): duplicate side effects"] = r["duplicates"]
        result.figures[f"{executors} executor(s): directives completed"] = r["completed"]
        result.figures[f"{executors} executor(s): packager caught up after (s)"] = round(
            r["packager_catch_up_s"], 2
        )
    result.notes += [
        f"{incidents} concurrent incidents, {seconds:.0f}s per configuration; each cycles "
        "update_incident_record -> gather_state -> restart_dependency_tier and waits for the "
        "outcome in the log (a restart counts when its VerificationSnapshot arrives; settle "
        "forced to 0, 0.3 s window).",
        "Duplicate side effects = simulator keys (correlation ids) counted more than once.",
        "packager caught up = seconds after the window until its read model held every "
        "event the tap saw.",
        *(
            f"{e} executor(s): verdicts {r['verdicts']}, refused/failed {r['refused'] or 'none'}"
            for e, r in runs.items()
        ),
        f"Baseline: {incidents} closed-loop raw aiokafka produce->consume clients "
        "(acks=all, idempotent), same broker, same run; ratio = conn / raw.",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    return result
