"""Round trips per verification (issue 17, item 2), counted, not timed.

One verification of a finished step (disable a flag rule, two regions, three samples) runs
through the verifier's real `_run` with the real adapters (the embedded defaults: the
simulator's flags and orchestrator APIs, a scrape of its /metrics) against the simulator
process. Every outbound HTTP request is recorded at the HTTP client, every acknowledged
append by a recording producer, and any PostgreSQL use by a recorder on asyncpg (the
verifier has no database: it must stay at none). The settle window is overridden to 0 and
the window is 0 s wide, so the three samples are taken at once (nothing here waits on a
clock; the count does not depend on time).

Before: one scrape of the whole /metrics page per region per sample (2 regions x 3
samples = 6 GETs of the same page) + 1 control-plane read = 7 HTTP calls; 1 append; 0
PostgreSQL. After: one scrape per sample for every region (`ScrapeMetrics.read_regions`)
= 3 + 1 = 4 HTTP calls; 1 append; 0 PostgreSQL.

Oracles: the snapshot still has a reading per region per sample, judged region by region
as before (tests/verifier/test_verifier_plan.py proves the verdicts; here: one region
without samples still gets no reading while the other keeps its readings), the control
plane is still read after the window, and exactly one snapshot is appended.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fixtures_services import Proc
from round_trips import Timeline
from unit.builders import History

from conn_adapters.config import AdapterSettings, build_adapters
from conn_adapters.metrics import ScrapeMetrics
from conn_core.fold import fold
from conn_core.ports import PortError
from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Position
from conn_runtime.resilience import Dependencies
from conn_schemas.events import Envelope, VerificationSnapshot
from conn_schemas.observations import MetricsReading
from conn_schemas.values import DisableFlagRule, VerificationCriteria
from conn_verifier.plan import pending
from conn_verifier.service import VerifierService
from conn_verifier.settings import VerifierSettings
from conn_verifier.verify import read_round

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DISABLE = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="us-east")
NOW = VerificationCriteria(settle_seconds=0, window_seconds=0, samples=3)

ROUND_TRIPS = {
    # (HTTP calls, acknowledged appends, PostgreSQL round trips) per verification
    "disable_flag_rule, 2 regions, 3 samples": (4, 1, 0),
}


class RecordingProducer:
    principal = "verifier"

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.events: list[Envelope] = []

    async def append(self, event: Envelope) -> Position:
        self.timeline.add("append", event.event_type)
        self.events.append(event)
        return Position("t", 0, len(self.events))


class FakeLoop:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()


def record_io(monkeypatch: pytest.MonkeyPatch, timeline: Timeline) -> None:
    real_send = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        timeline.add("http", f"{request.method} {request.url.path}")
        return await real_send(self, request, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)

    def database(name: str) -> Callable[..., Any]:
        def use(*args: Any, **kwargs: Any) -> Any:
            timeline.add("pg", name)
            raise AssertionError("the verifier has no database")

        return use

    monkeypatch.setattr(asyncpg, "create_pool", database("create_pool"))
    monkeypatch.setattr(asyncpg, "connect", database("connect"))


def verifier(sim_url: str, timeline: Timeline) -> VerifierService:
    """The verifier's scheduling and append path as it runs in the service, minus Kafka."""
    svc = VerifierService.__new__(VerifierService)
    svc.settings = VerifierSettings(settle_override_seconds=0)
    svc._adapter_settings = AdapterSettings(simulator_url=sim_url)
    svc._adapters = build_adapters(svc._adapter_settings)
    svc._limit = asyncio.Semaphore(1)
    svc._tasks = {}
    svc._appended = set()
    svc._causes = {}
    svc.folds = IncidentFolds()
    svc.deps = Dependencies()
    svc.loop = FakeLoop()  # type: ignore[assignment]
    svc.producer = RecordingProducer(timeline)  # type: ignore[assignment]
    return svc


async def test_round_trips_per_verification_are_counted(
    simulator: Callable[..., Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator("seed_outage", speed=60.0)
    timeline = Timeline()
    record_io(monkeypatch, timeline)
    svc = verifier(sim.url, timeline)
    h = History("inc-rt").open().declare()
    cid = h.direct(DISABLE)
    h.accept(cid, DISABLE)
    h.start(cid, DISABLE)
    h.succeed(cid, DISABLE)
    state = fold(h.events, h.incident_id)
    svc.folds.states[h.incident_id] = state
    (job,) = pending(state)
    assert len(job.expected) == 1
    # Both regions judged (as with `scope: all_regions`); at once (a 0 s window).
    job = dataclasses.replace(job, regions=("us-east", "eu-west"), criteria=NOW, step_time=None)
    try:
        await svc._run(job)  # warm: connections open, like a running service's
        svc._appended.clear()
        mark = len(timeline.entries)
        await svc._run(job)
        measured = timeline.entries[mark:]
    finally:
        await svc.teardown()

    print("verification:", *measured, sep="\n  ")
    http = [w for k, w in measured if k == "http"]
    appends = [w for k, w in measured if k == "append"]
    pg = [w for k, w in measured if k == "pg"]
    assert (len(http), len(appends), len(pg)) == ROUND_TRIPS[
        "disable_flag_rule, 2 regions, 3 samples"
    ], measured
    assert http[:3] == ["GET /metrics"] * 3, http  # one scrape per sample, all regions
    assert "/metrics" not in http[3], http  # then the control plane, after the window
    assert appends == ["VerificationSnapshot"]
    snapshot = svc.producer.events[-1]  # type: ignore[attr-defined]
    assert isinstance(snapshot, VerificationSnapshot)
    assert snapshot.correlation_id == cid
    payload = snapshot.payload
    assert {r.region: len(r.readings) for r in payload.regions} == {"us-east": 3, "eu-west": 3}
    assert len(payload.control_plane) == 1 and "canary-10pct" in payload.control_plane[0].subject


async def test_one_scrape_still_judges_each_region_on_its_own(
    simulator: Callable[..., Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A region the page has no samples for gets no reading (its reason), the others get
    theirs, from the same single GET; a failed scrape is no reading for every region."""
    sim = simulator("seed_outage", speed=60.0)
    timeline = Timeline()
    record_io(monkeypatch, timeline)
    metrics = ScrapeMetrics(sim.url + "/metrics")
    try:
        got = await read_round(metrics, ["us-east", "ap-south", "eu-west"])
        alone = {r: await metrics.read_region(r) for r in ("us-east", "eu-west")}
        with pytest.raises(PortError) as missing:
            await metrics.read_region("ap-south")
    finally:
        await metrics.aclose()
    assert timeline.count("http") == 1 + 3, timeline.entries
    us, ap, eu = got
    assert isinstance(us, MetricsReading) and isinstance(eu, MetricsReading), got
    assert (us.region, eu.region) == ("us-east", "eu-west")
    assert ap == str(missing.value), "the same reason read_region gives"
    for reading in (us, eu):  # the same fields as one read_region of that region
        single = alone[reading.region]
        assert reading.model_dump().keys() == single.model_dump().keys()
        assert reading.observed_at.tzinfo is not None and set(reading.extra) == set(single.extra)

    broken = ScrapeMetrics("http://127.0.0.1:9/metrics", timeout=2)
    try:
        failed = await read_round(broken, ["us-east", "eu-west"])
    finally:
        await broken.aclose()
    assert all(isinstance(x, str) and "ScrapeMetrics" in x for x in failed), failed
