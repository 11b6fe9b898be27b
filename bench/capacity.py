"""Open-loop capacity: gather_state offered at fixed rates, whatever the answers.

For each offered rate, for `seconds`: the i-th directive is *scheduled* at t0 + i/rate and
sent then by its own task (an open loop: nobody waits for the previous answer, as
commanders of many incidents would not). Spread over `incidents` incidents (256: few enough per incident that a gather is rarely
stale because another gather of its incident landed first; the API refuses those, 409
stale_base_position, listed under other answers). Per rate:

  achieved/s   StateGathered seen at the tap per second, from t0 to the last one
  latency      arrival of the StateGathered at the tap minus the *scheduled* send time
               (so time spent queueing anywhere, the client included, counts)
  shed         answered 503 overloaded (with Retry-After): the API's back-pressure;
               an open-loop client does not retry them, they count as not achieved
  refused      DirectiveRefused by the executor; refusals by the API (e.g. 409 stale:
               another gather of the same incident landed first) are listed by code
  lost         neither an outcome nor an answer within 30 s
  retries      409 stale / 422 not-yet-folded answers re-sent by the client (with
               exponential backoff and jitter, bench.harness.backoff): how much of the
               API's load the refusals themselves make (retry amplification)
  client lag   scheduled send -> the request actually leaving this process (the load
               generator shares the 2 cores: a large figure means the client, not the
               API, is where the wait is)

Past capacity a well-behaved system keeps its achieved rate near its capacity and sheds
the excess with bounded latency, instead of its achieved rate *falling* while latency
grows into seconds. No baseline: the figures are offered vs achieved.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import orjson

from bench.common import Result, console, percentiles
from bench.harness import (
    TARGETS,
    Commander,
    EventTap,
    Refused,
    ensure_stack,
    gather_action,
    new_incident_id,
    running_pipeline,
    tap,
)

NAME = "open_loop_capacity"
OUTCOME_WITHIN = 30.0
RE_READS = 3
"""A directive refused stale (409) or not yet folded (422) is re-read and re-sent at most
this often, then counted under other answers. Measured: with 50 re-sends per directive
the API answered 2-3 stale refusals per directive issued (each a full request and a
DirectiveRefused append), gathers of one incident invalidating each other faster the
slower everything got - the collapse fed itself."""


@dataclass
class Step:
    offered: float
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    """Scheduled send -> the API's 202 (where the wait is: the API or after it)."""
    shed: int = 0
    retries: int = 0
    client_lag: list[float] = field(default_factory=list)
    refused: int = 0
    lost: int = 0
    other: dict[str, int] = field(default_factory=dict)
    last_arrival: float = 0.0


def _code(body: str) -> str:
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:40]


async def one(
    cmd: Commander, t: EventTap, incident: str, scheduled: float, step: Step, region: str
) -> None:
    step.client_lag.append(time.perf_counter() - scheduled)
    try:
        answer, retries = await cmd.direct_retrying(
            incident,
            gather_action(region),
            lambda: t.changed_at[incident],
            attempts=RE_READS,
            retry_shed=False,
        )
    except httpx.TransportError as exc:  # e.g. a keep-alive connection the server closed
        key = f"transport {type(exc).__name__}"
        step.other[key] = step.other.get(key, 0) + 1
        return
    except Refused as exc:
        if exc.status == 503 and "overloaded" in exc.body:
            step.shed += 1
        else:
            key = f"api {exc.status} {_code(exc.body)}"
            step.other[key] = step.other.get(key, 0) + 1
        return
    step.retries += retries
    step.answered.append(time.perf_counter() - scheduled)
    try:
        seen = await t.wait(
            str(answer["correlation_id"]),
            "StateGathered",
            "DirectiveRefused",
            within=OUTCOME_WITHIN,
        )
    except TimeoutError:
        step.lost += 1
        return
    if seen.event_type != "StateGathered":
        step.refused += 1
        return
    step.latencies.append(seen.arrived - scheduled)
    step.last_arrival = max(step.last_arrival, seen.arrived)


async def offer(
    cmd: Commander, t: EventTap, incidents: list[str], rate: float, seconds: float
) -> tuple[Step, float]:
    step = Step(offered=rate)
    tasks: list[asyncio.Task[None]] = []
    total = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        incident = incidents[i % len(incidents)]
        region = TARGETS[i % len(TARGETS)][1]
        tasks.append(asyncio.create_task(one(cmd, t, incident, scheduled, step, region)))
        step.sent += 1
    await asyncio.gather(*tasks)
    return step, t0


async def main(quick: bool = False) -> Result:
    rates, seconds, n_incidents = (
        ([20.0, 60.0, 120.0], 3.0, 64) if quick else ([25.0, 50, 100, 150, 200, 300], 10.0, 256)
    )
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    async with running_pipeline(bootstrap, dsn, NAME) as (pipeline, topics):
        # Enough connections that the client never queues a scheduled send itself.
        cmd = Commander(pipeline.api.url, limits=1024)
        try:
            async with tap(bootstrap, topics.events) as t:
                incidents = [new_incident_id("cap", i) for i in range(n_incidents)]
                for inc in incidents:
                    await cmd.open(inc)
                for rate in rates:
                    step, t0 = await offer(cmd, t, incidents, rate, seconds)
                    done = len(step.latencies)
                    span = (step.last_arrival - t0) if done else 0.0
                    achieved = done / span if span > 0 else 0.0
                    p = percentiles(step.latencies)
                    label = f"offered {rate:g}/s"
                    result.figures[f"{label}: achieved/s"] = round(achieved, 1)
                    result.figures[f"{label}: p50 ms from schedule"] = p.get("p50_ms")
                    result.figures[f"{label}: p99 ms from schedule"] = p.get("p99_ms")
                    result.figures[f"{label}: p50 ms schedule->202"] = percentiles(
                        step.answered
                    ).get("p50_ms")
                    result.figures[f"{label}: shed (503 overloaded)"] = step.shed
                    result.figures[f"{label}: retries (409/422 re-sent)"] = step.retries
                    result.figures[f"{label}: p99 ms client lag"] = percentiles(
                        step.client_lag
                    ).get("p99_ms")
                    result.figures[f"{label}: refused"] = step.refused
                    result.figures[f"{label}: lost"] = step.lost
                    result.figures[f"{label}: other answers"] = sum(step.other.values())
                    if step.other:
                        result.notes.append(f"{label}: other answers {step.other}")
                    console.print(
                        f"[dim]{label}: achieved {achieved:.1f}/s, p50 {p.get('p50_ms', 0):.1f} "
                        f"ms, p99 {p.get('p99_ms', 0):.1f} ms, shed {step.shed}, retries {step.retries}, "
                        f"refused {step.refused}, lost {step.lost}[/dim]"
                    )
        finally:
            await cmd.aclose()
    result.notes += [
        f"gather_state offered open-loop at {rates}/s for {seconds:g} s each over "
        f"{n_incidents} incidents; latency from the scheduled send time to the "
        "StateGathered at a raw tap; shed requests are not retried (open loop).",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    return result
