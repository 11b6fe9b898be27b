"""Issue 18: the whole pipeline rides out a PostgreSQL restart and a Kafka restart under
steady directive traffic.

For each dependency: the simulator, directive API, executor, verifier and packager run
as real processes on their own topics and database; commanders drive incidents through
the API (the fault suite's workload, retrying on 5xx with the same Idempotency-Key as a
real client would); the dependency of the test session's OWN stack is stopped, kept
away until every service that needs it says so on /readyz (503, naming it), then
started again. Asserted, with oracles from DESIGN.md and issue 18, not from the code:

- every service process keeps its PID (none exited: no crash, no crash loop);
- readiness went false naming the dependency, and true again afterwards;
- while it was away the API answered 503 with Retry-After (never a 500);
- nothing was lost or duplicated: one decision per directive, one StepStarted and one
  outcome per step, the results of accepted work, no event twice in the log, at most
  one side effect per idempotency key at the simulator (steps and incident-record
  notes) and none without a directive, a record note for every succeeded step;
- the read model equals a rebuild from the topic (`conn replay`).

The figures (how long each service took to be ready again) are printed and written to
.local/logs/dependency-restart-<name>.json. Nothing asserts on time: every wait has a
deadline, and the outage lasts until the services have noticed it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_run import (
    SCENARIO,
    TOKENS,
    ChaosConfig,
    ChaosReport,
    Workload,
    check_log,
    check_side_effects,
    decode_all,
    read_topic,
    run_replay_tool,
    wait_quiescent,
)
from kafka_support import Identities
from stack_support import OwnStack

from conn_localstack.ephemeral import Pipeline, Proc, free_port
from conn_runtime.settings import Topics
from conn_schemas.events import IncidentRecordUpdated, StepSucceeded

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "executor-0", "verifier", "packager")
NEEDS = {
    "postgres": ("api", "executor-0", "packager"),  # the verifier uses no database
    "kafka": SERVICES,
}
PIPELINE_ENV = {
    "CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "1",
    # A little time inside each step, so that the outage lands in the middle of work.
    "CONN_EXECUTOR_FAULT": "pause_before_side_effect=0.2,pause_after_side_effect=0.2",
}


class Readiness:
    """Polls every service's /readyz in the background and keeps what it saw."""

    def __init__(self, pipeline: Pipeline, names: tuple[str, ...]) -> None:
        self.urls = {n: pipeline.procs[n].url + "/readyz" for n in names}
        self.last: dict[str, tuple[int, list[str]]] = {}
        self.saw_missing: dict[str, set[str]] = {n: set() for n in names}
        self.ready_at: dict[str, float] = {}
        self.errors: list[str] = []
        self.no_retry_after: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=3) as http:
            while True:
                for name, url in self.urls.items():
                    try:
                        resp = await http.get(url)
                        body = resp.json()
                    except (httpx.HTTPError, ValueError) as exc:
                        self.errors.append(f"{name}: {exc!r}")
                        continue
                    missing = body.get("missing")
                    if missing is None:  # the API's error shape
                        missing = (body.get("error") or {}).get("detail", {}).get("missing", [])
                    self.last[name] = (resp.status_code, list(missing))
                    self.saw_missing[name].update(missing)
                    if resp.status_code == 200:
                        self.ready_at.setdefault(name, time.monotonic())
                    else:
                        self.ready_at.pop(name, None)
                        if not resp.headers.get("Retry-After"):
                            self.no_retry_after.add(name)
                await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def missing(self, name: str, dependency: str) -> bool:
        status, missing = self.last.get(name, (0, []))
        return status == 503 and dependency in missing

    def ready(self, name: str) -> bool:
        return self.last.get(name, (0, []))[0] == 200


async def _until(what: str, check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.1)


async def _api_during_outage(api_url: str, dependency: str) -> httpx.Response:
    """A request that needs `dependency` (and changes nothing if it went through)."""
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        if dependency == "kafka":  # appending to the log
            body = {"title": "during the outage", "service": "checkout", "severity": "sev2"}
            return await http.post("/v1/incidents", json=body, headers=headers)
        # an Idempotency-Key is claimed in PostgreSQL first
        body = {"action": {"action": "gather_state", "regions": []}, "based_on_sequence": 0}
        return await http.post(
            "/v1/incidents/no-such-incident/directives",
            json=body,
            headers={**headers, "Idempotency-Key": "outage-probe"},
        )


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("dependency", ["postgres", "kafka"])
async def test_pipeline_rides_out_a_restart_under_traffic(
    pipeline: Callable[..., Pipeline],
    own_stack: OwnStack,
    conn_topics: Topics,
    trust: Identities,
    dependency: str,
) -> None:
    own_stack.require(dependency)
    p = pipeline(str(SCENARIO), executors=1, env=PIPELINE_ENV)
    pids = {name: proc.popen.pid for name, proc in p.procs.items() if proc.popen is not None}
    seed = random.SystemRandom().randrange(1, 2**31)
    config = ChaosConfig(
        seed=seed,
        kills=0,
        workers=2,
        duplicate_share=0.25,
        kafka_restart=False,
        postgres_restart=False,
        step_timeout=90.0,
        quiesce_timeout=150.0,
        min_incidents=2,
    )
    report = ChaosReport(seed=seed)
    workload = Workload(p, config, report, random.Random(seed))
    work = asyncio.create_task(workload.run())
    readiness = Readiness(p, SERVICES)
    readiness.start()
    figures: dict[str, Any] = {"dependency": dependency, "seed": seed}
    try:
        await _until("traffic flows", lambda: report.directives_issued >= 3, 180)
        await _until("all ready", lambda: all(readiness.ready(s) for s in SERVICES), 60)
        issued_before = report.directives_issued

        # -- the outage: held until every service that needs it has noticed ------------
        stopped_at = time.monotonic()
        await own_stack.stop(dependency)
        needs = NEEDS[dependency]
        await _until(
            f"every service reports {dependency} missing",
            lambda: all(readiness.missing(s, dependency) for s in needs),
            60,
        )
        figures["noticed_within_s"] = round(time.monotonic() - stopped_at, 2)
        resp = await _api_during_outage(p.api.url, dependency)
        assert resp.status_code == 503, resp.text
        assert resp.headers.get("Retry-After"), resp.headers
        assert resp.json()["error"]["code"] == "unavailable"
        assert dependency in resp.json()["error"]["detail"]["missing"], resp.text
        for name in p.procs:
            assert p.procs[name].alive, f"{name} exited while {dependency} was away"

        # -- back: everyone ready again, traffic carries on ----------------------------
        await own_stack.start(dependency)
        back_at = time.monotonic()
        figures["outage_s"] = round(back_at - stopped_at, 2)
        await _until(
            "every service ready again", lambda: all(readiness.ready(s) for s in SERVICES), 180
        )
        figures["ready_again_after_s"] = {
            s: round(max(0.0, readiness.ready_at[s] - back_at), 2) for s in SERVICES
        }
        await _until(
            "directives after the restart",
            lambda: report.directives_issued >= issued_before + 6,
            300,
        )
    finally:
        workload.stop.set()
        await asyncio.wait_for(work, config.step_timeout * 3 + 60)
        await readiness.stop()

    # -- nobody died ----------------------------------------------------------------------
    for name, proc in p.procs.items():
        assert proc.alive, f"{name} exited:\n{proc.log_tail()}"
        assert proc.popen is not None and proc.popen.pid == pids[name], f"{name} was replaced"
    for name in NEEDS[dependency]:
        assert dependency in readiness.saw_missing[name], f"{name} never reported {dependency}"
    assert readiness.no_retry_after == set(), "503 without Retry-After"
    assert readiness.errors == [], readiness.errors[:5]  # /readyz always answered

    # -- nothing lost, nothing twice -----------------------------------------------------------
    await wait_quiescent(p, config, report, conn_topics.events)
    raws = await read_topic(p.kafka_bootstrap, conn_topics.events, at_least=report.records_seen)
    events, unreadable = decode_all(raws, trust.reader(p.kafka_bootstrap, conn_topics))
    assert unreadable == []
    problems = check_log(events, report, strict=True)
    ids = Counter(str(e.event_id) for e in events)
    twice = [i for i, n in ids.items() if n > 1]
    check_side_effects(await asyncio.to_thread(p.side_effects), events, report)
    succeeded = {e.correlation_id for e in events if isinstance(e, StepSucceeded)}
    noted = {e.payload.idempotency_key for e in events if isinstance(e, IncidentRecordUpdated)}
    unnoted = sorted(c for c in succeeded if f"{c}/record" not in noted)
    await run_replay_tool(p, report, untrusted=0)

    figures.update(
        directives=report.directives_issued,
        side_effects=report.side_effects,
        events=len(events),
        outcome_unknown=report.outcome_unknown,
    )
    out = ROOT / ".local" / "logs" / f"dependency-restart-{dependency}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{dependency} restart: {json.dumps(figures)}")

    detail = "\n".join(problems[:20] + report.problems[:20])
    assert twice == [], f"events in the log twice: {twice[:5]}"
    assert report.duplicates == 0, f"duplicate side effects:\n{detail}"
    assert report.lost == 0, f"events lost:\n{detail}\n{report.replay_output[-800:]}"
    assert report.stuck_incidents == 0, f"stuck incidents:\n{detail}"
    assert unnoted == [], f"succeeded steps without their incident-record note: {unnoted}"


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("dependency", ["postgres", "kafka"])
async def test_services_started_while_a_dependency_is_away_wait_for_it(
    start_process: Callable[..., Proc],
    simulator: Callable[..., Proc],
    own_stack: OwnStack,
    conn_topics: Topics,
    fresh_database: str,
    kafka_bootstrap: str,
    trust: Identities,
    dependency: str,
) -> None:
    """A service started before its dependency is up (a node reboot, a deploy racing the
    database) keeps its process, answers /healthz, says on /readyz what it waits for,
    and becomes ready once the dependency is there: no crash loop."""
    own_stack.require(dependency)
    sim = simulator("seed_outage")
    prefix = conn_topics.events.removesuffix("conn.events")
    base = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": fresh_database,
        "CONN_TOPIC_PREFIX": prefix,
        "CONN_SIMULATOR_URL": sim.url,
        "CONN_API_TOKENS_FILE": str(ROOT / "deploy" / "local" / "tokens.yaml"),
        "CONN_EXECUTOR_GROUP_ID": f"{prefix}conn-executor",
        "CONN_VERIFIER_GROUP_ID": f"{prefix}conn-verifier",
        "CONN_READ_SCHEMA": "read_" + prefix.strip(".").replace("-", "_"),
    }
    port_var = {
        "api": ("conn_api", "CONN_API_PORT"),
        "executor-0": ("conn_executor", "CONN_EXECUTOR_METRICS_PORT"),
        "verifier": ("conn_verifier", "CONN_VERIFIER_METRICS_PORT"),
        "packager": ("conn_packager", "CONN_PACKAGER_METRICS_PORT"),
    }
    # Each process logs in to Kafka as its own principal and signs with its own key of
    # the session's test keyring, like every other service a test starts.
    principal = {
        "api": "directive-api",
        "executor-0": "executor",
        "verifier": "verifier",
        "packager": "packager",
    }
    await own_stack.stop(dependency)
    procs: dict[str, Proc] = {}
    try:
        for name in NEEDS[dependency]:
            module, var = port_var[name]
            port = free_port()
            procs[name] = await asyncio.to_thread(
                start_process,
                f"{name}-early",
                module,
                env={**base, **trust.env(principal[name]), var: str(port)},
                port=port,
                health_path="/healthz",  # alive, not ready
                timeout=60,
            )
        pids = {n: p.popen.pid for n, p in procs.items() if p.popen is not None}
        async with httpx.AsyncClient(timeout=5) as http:
            for name, proc in procs.items():
                resp = await http.get(proc.url + "/readyz")
                assert resp.status_code == 503, (name, resp.text)
                assert resp.headers.get("Retry-After")
                assert dependency in resp.text, (name, resp.text)
    finally:
        await own_stack.start(dependency)

    async def ready(proc: Proc) -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            try:
                return (await http.get(proc.url + "/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

    deadline = time.monotonic() + 120
    for name, proc in procs.items():
        while not await ready(proc):
            assert proc.alive, f"{name} exited:\n{proc.log_tail()}"
            assert time.monotonic() < deadline, f"{name} not ready:\n{proc.log_tail()}"
            await asyncio.sleep(0.2)
    for name, proc in procs.items():
        assert proc.alive and proc.popen is not None and proc.popen.pid == pids[name], name
