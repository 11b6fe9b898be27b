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
  retries      409 stale / 422 not-yet-folded answers re-sent (backoff with jitter,
               bench.harness.backoff), at most RE_READS per directive and at most
               bench.loadgen.RE_SEND_BUDGET x the directives sent; "stale given up" the
               directives the cap stopped (retry amplification stays bounded)
  generator    the load generator's own health: event-loop lag, sends late vs their
               schedule, its CPU, and whether it kept its schedule (bench.loadgen); a
               rate it did not keep is named in the notes and is not taken as capacity
  CPU cores    per pipeline service and the broker over the step, and the machine's
               busy share (the 2 cores are shared with everything else running)

The load comes from bench.loadgen's worker processes (one event loop each, aiohttp, a tap
on their own partitions): the former generator, one httpx client and one loop in this
process, fell seconds behind its schedule past ~100/s and measured itself. It is kept,
selectable, for same-run comparisons (`python -m bench.capacity --generator single`).

Past capacity a well-behaved system keeps its achieved rate near its capacity and sheds
the excess with bounded latency, instead of its achieved rate *falling* while latency
grows into seconds. No baseline: the figures are offered vs achieved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.common import Result, console, percentiles
from bench.fastpath import CpuMeter, pipeline_pids
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
    tokens,
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


GENERATORS = ("processes", "single")
"""`processes` (default): bench.loadgen's worker processes; `single`: the former
generator, one httpx client and one asyncio loop in this process (kept to compare the
two in the same conditions; its health is measured the same way)."""
WORKERS = 3
EVENTS_PARTITIONS = 6
"""The events topic's partitions (bench.harness.running_pipeline's scratch topics)."""


def split_incidents(workers: int, per_worker: int, partitions: int) -> list[list[str]]:
    """`per_worker` new incident ids for each worker, every worker's incidents on its own
    partitions (partition % workers == worker), so its tap reads only those."""
    from conn_runtime.partitioning import partition_for

    out: list[list[str]] = [[] for _ in range(workers)]
    i = 0
    while any(len(o) < per_worker for o in out):
        inc = new_incident_id("cap", i)
        i += 1
        w = partition_for(inc, partitions) % workers
        if len(out[w]) < per_worker:
            out[w].append(inc)
    return out


def record_step(result: Result, label: str, steps: list[Any], t0: float) -> None:
    """The figures of one offered rate from every worker's samples (bench.loadgen)."""
    from bench import loadgen

    latencies = [x for s in steps for x in s.latencies]
    lateness = [x for s in steps for x in s.lateness]
    last = max((s.last_arrival for s in steps), default=0.0)
    done = len(latencies)
    span = (last - t0) if done else 0.0
    achieved = done / span if span > 0 else 0.0
    p = percentiles(latencies)
    other: dict[str, int] = {}
    for s in steps:
        for k, v in s.other.items():
            other[k] = other.get(k, 0) + v
    late = loadgen.late(lateness)
    kept = loadgen.kept_schedule(lateness)
    cpu = sum(s.cpu_seconds / s.wall_seconds for s in steps if s.wall_seconds > 0)
    lag = percentiles([x for s in steps for x in s.loop_lag])
    f = result.figures
    f[f"{label}: achieved/s"] = round(achieved, 1)
    f[f"{label}: p50 ms from schedule"] = p.get("p50_ms")
    f[f"{label}: p99 ms from schedule"] = p.get("p99_ms")
    f[f"{label}: p50 ms schedule->202"] = percentiles([x for s in steps for x in s.answered]).get(
        "p50_ms"
    )
    f[f"{label}: shed (503 overloaded)"] = sum(s.shed for s in steps)
    f[f"{label}: retries (409/422 re-sent)"] = sum(s.re_sends for s in steps)
    f[f"{label}: stale given up (re-send cap)"] = sum(s.gave_up_stale for s in steps)
    f[f"{label}: refused"] = sum(s.refused for s in steps)
    f[f"{label}: lost"] = sum(s.lost for s in steps)
    f[f"{label}: other answers"] = sum(other.values())
    f[f"{label}: sent"] = sum(s.sent for s in steps)
    f[f"{label}: generator p99 ms send lateness"] = percentiles(lateness).get("p99_ms")
    f[f"{label}: generator sends late > 20 ms (%)"] = (
        round(100 * late / len(lateness), 2) if lateness else 0.0
    )
    f[f"{label}: generator p99 ms loop lag"] = lag.get("p99_ms")
    f[f"{label}: generator max ms loop lag"] = lag.get("max_ms")
    f[f"{label}: generator CPU (cores)"] = round(cpu, 2)
    f[f"{label}: generator kept schedule"] = int(kept)
    if other:
        result.notes.append(f"{label}: other answers {other}")
    if not kept:
        result.notes.append(
            f"{label}: THE GENERATOR DID NOT KEEP ITS SCHEDULE ({late} of {len(lateness)} "
            f"sends > {loadgen.LATE_SECONDS * 1000:g} ms late, p99 loop lag "
            f"{lag.get('p99_ms', 0):.1f} ms): this step measures the client, not the "
            "system's capacity (bench.table leaves it out)"
        )
    console.print(
        f"[dim]{label}: achieved {achieved:.1f}/s, p50 {p.get('p50_ms', 0):.1f} ms, "
        f"p99 {p.get('p99_ms', 0):.1f} ms, shed {f[f'{label}: shed (503 overloaded)']}, "
        f"re-sends {f[f'{label}: retries (409/422 re-sent)']}, lost {f[f'{label}: lost']}; "
        f"generator: late {late}/{len(lateness)}, loop lag p99 {lag.get('p99_ms', 0):.1f} ms, "
        f"CPU {cpu:.2f} cores[/dim]"
    )


def api_shedding(api_url: str) -> dict[str, float]:
    """The API's own shedding counters (its /metrics): shed in all, by the middleware's
    reason (in_flight, loop_lag; the rest is the backlog rule), and its loop lag now."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{api_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "conn_api_shed_total":
                out["all"] = sample.value
            elif sample.name == "conn_api_shed_by_reason_total":
                out[sample.labels.get("reason", "?")] = sample.value
            elif sample.name == "conn_api_loop_lag_seconds":
                out["loop lag ms"] = sample.value * 1000
    return out


def record_shedding(
    result: Result, label: str, before: dict[str, float], after: dict[str, float]
) -> None:
    """Why the API shed during the step (deltas of its counters): the middleware's reasons
    (in-flight limit, its loop lag) or, the remainder, the pipeline's backlog."""
    if "all" not in after:
        return
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if k != "loop lag ms"}
    by_middleware = sum(v for k, v in delta.items() if k != "all")
    for reason in ("in_flight", "loop_lag"):
        result.figures[f"{label}: API shed by {reason}"] = int(delta.get(reason, 0.0))
    result.figures[f"{label}: API shed by backlog"] = int(delta["all"] - by_middleware)
    result.figures[f"{label}: API loop lag ms at step end"] = round(after.get("loop lag ms", 0), 1)


def record_cpu(result: Result, label: str, before: Any, after: Any) -> None:
    """Per service (and the broker): CPU cores used over the step (between two marks);
    the whole machine's busy share (every process, other helpers' included)."""
    (t0, cpu0, m0), (t1, cpu1, m1) = before, after
    wall = t1 - t0
    if wall <= 0:
        return
    for name, spent in CpuMeter.spent(cpu0, cpu1).items():
        result.figures[f"{label}: CPU cores {name}"] = round(spent / wall, 2)
    busy0 = sum(m0) - m0.idle - getattr(m0, "iowait", 0.0)
    busy1 = sum(m1) - m1.idle - getattr(m1, "iowait", 0.0)
    total = sum(m1) - sum(m0)
    if total > 0:
        result.figures[f"{label}: machine CPU busy (%)"] = round(100 * (busy1 - busy0) / total, 1)


async def _single(
    cmd: Commander, t: EventTap, incidents: list[str], rate: float, seconds: float
) -> tuple[Any, float]:
    """The former generator (one loop, httpx), its samples in bench.loadgen's shape."""
    from bench import loadgen

    lags: list[float] = []
    ticker = asyncio.create_task(loadgen.ticker(lags))
    cpu0 = time.process_time()
    step, t0 = await offer(cmd, t, incidents, rate, seconds)
    samples = loadgen.StepSamples(
        worker=0,
        offered=rate,
        t0=t0,
        sent=step.sent,
        latencies=step.latencies,
        answered=step.answered,
        lateness=step.client_lag,
        loop_lag=lags,
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=time.perf_counter() - t0,
        last_arrival=step.last_arrival,
        shed=step.shed,
        re_sends=step.retries,
        refused=step.refused,
        lost=step.lost,
        other=step.other,
    )
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    return samples, t0


async def main(
    quick: bool = False,
    *,
    rates: list[float] | None = None,
    seconds: float | None = None,
    generator: str = "processes",
    workers: int = WORKERS,
) -> Result:
    from bench import loadgen

    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {GENERATORS}")
    q_rates, q_seconds, n_incidents = (
        ([25.0, 150.0, 300.0], 3.0, 64) if quick else ([25.0, 50, 100, 150, 200, 300], 10.0, 256)
    )
    rates, seconds = rates or q_rates, seconds or q_seconds
    n_workers = workers if generator == "processes" else 1
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    async with running_pipeline(bootstrap, dsn, NAME) as (pipeline, topics):
        cmd = Commander(pipeline.api.url, limits=1024)
        try:
            shares = split_incidents(n_workers, n_incidents // n_workers, EVENTS_PARTITIONS)
            for inc in (i for share in shares for i in share):
                await cmd.open(inc)
            if generator == "processes":
                plans = [
                    loadgen.Plan(
                        index=w,
                        workers=n_workers,
                        api_url=pipeline.api.url,
                        token=tokens()["alice"],
                        bootstrap=bootstrap,
                        topic=topics.events,
                        partitions=[p for p in range(EVENTS_PARTITIONS) if p % n_workers == w],
                        incidents=shares[w],
                        regions=[r for _, r in TARGETS],
                        rates=list(rates),
                        seconds=seconds,
                        re_sends=RE_READS,
                        outcome_within=OUTCOME_WITHIN,
                    )
                    for w in range(n_workers)
                ]
                meter = CpuMeter(pipeline_pids(pipeline, bootstrap))
                api_url = pipeline.api.url
                marks = [(time.perf_counter(), meter.snapshot(), psutil.cpu_times())]
                sheds = [api_shedding(api_url)]

                def mark() -> None:
                    marks.append((time.perf_counter(), meter.snapshot(), psutil.cpu_times()))
                    sheds.append(api_shedding(api_url))

                all_steps = await loadgen.run_workers(plans, after_step=mark)
                for k, (rate, steps) in enumerate(zip(rates, all_steps, strict=True)):
                    label = f"offered {rate:g}/s"
                    record_step(result, label, steps, min(s.t0 for s in steps))
                    record_cpu(result, label, marks[k], marks[k + 1])
                    record_shedding(result, label, sheds[k], sheds[k + 1])
            else:
                async with tap(bootstrap, topics.events) as t:
                    meter = CpuMeter(pipeline_pids(pipeline, bootstrap))
                    for rate in rates:
                        before = (time.perf_counter(), meter.snapshot(), psutil.cpu_times())
                        shed_before = api_shedding(pipeline.api.url)
                        samples, t0 = await _single(cmd, t, shares[0], rate, seconds)
                        after = (time.perf_counter(), meter.snapshot(), psutil.cpu_times())
                        label = f"offered {rate:g}/s"
                        record_step(result, label, [samples], t0)
                        record_cpu(result, label, before, after)
                        record_shedding(result, label, shed_before, api_shedding(pipeline.api.url))
        finally:
            await cmd.aclose()
    result.figures["generator worker processes"] = n_workers if generator == "processes" else 0
    result.notes += [
        f"gather_state offered open-loop at {rates}/s for {seconds:g} s each over "
        f"{n_incidents} incidents; latency from the scheduled send time to the "
        "StateGathered at a raw tap; shed requests are not retried (open loop).",
        (
            f"generator: {n_workers} worker processes (bench.loadgen: uvloop, aiohttp "
            "keep-alive connections, a tap on each worker's own partitions), each driving "
            "its own incidents on every "
            f"{n_workers}th slot of the schedule"
            if generator == "processes"
            else "generator: one asyncio loop with httpx in the benchmark process (former)"
        ),
        f"stale (409) / not-folded (422) gathers re-sent at most {RE_READS} times each and "
        f"at most {loadgen.RE_SEND_BUDGET:g} x the directives sent (processes generator); "
        f"a step is 'kept schedule' when <= {loadgen.LATE_SHARE_LIMIT:.0%} of the sends "
        f"left > {loadgen.LATE_SECONDS * 1000:g} ms after their scheduled time.",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    return result


def compare(argv: list[str] | None = None) -> int:
    """`python -m bench.capacity [--rates 100,150,300] [--seconds 5] [--generator ...]`:
    one repetition per generator named, back to back, with the load average before and
    after each; printed, and with `--out DIR` written to DIR/open_loop_capacity.<generator>.json
    (a comparison of the generators, never a published result)."""
    import argparse
    import json
    import os

    from bench.common import load_snapshot

    parser = argparse.ArgumentParser(prog="python -m bench.capacity")
    parser.add_argument("--rates", default="100,150,200,300")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--generator", action="append", choices=GENERATORS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("CONN_ENV", "development")
    rates = [float(r) for r in args.rates.split(",")]
    for generator in args.generator or list(GENERATORS):
        before = load_snapshot()
        result = asyncio.run(
            main(rates=rates, seconds=args.seconds, generator=generator, workers=args.workers)
        )
        result.load_before, result.load_after = before, load_snapshot()
        result.quick = True
        result.show()
        if args.out is None:
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{NAME}.{generator}.json"
        doc = {
            "generator": generator,
            "load_before": result.load_before,
            "load_after": result.load_after,
            "figures": result.figures,
            "notes": result.notes,
        }
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        console.print(f"[dim]written {path}[/dim]")
    return 0


if __name__ == "__main__":
    raise SystemExit(compare())
