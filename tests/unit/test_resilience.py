"""The shared outage helper (conn_runtime.resilience): the backoff schedule, what counts
as "a dependency is away", the dependency registry behind /readyz, the watchdog behind
/healthz, and the retry loop. No I/O."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import asyncpg
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
)
from hypothesis import given
from hypothesis import strategies as st

from conn_runtime import resilience
from conn_runtime.resilience import (
    KAFKA,
    NETWORK,
    POSTGRES,
    Backoff,
    Dependencies,
    StopRequested,
    Watchdog,
    dependency_of,
    retry,
    touch,
)

FAST = Backoff(initial=0.001, maximum=0.004)


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=5),
    maximum=st.floats(min_value=0.001, max_value=60),
    seed=st.integers(),
)
def test_backoff_is_bounded_jittered_and_never_zero(
    attempt: int, initial: float, maximum: float, seed: int
) -> None:
    b = Backoff(initial=initial, maximum=maximum)
    top = b.ceiling(attempt)
    d = b.delay(attempt, random.Random(seed))
    assert top <= maximum
    assert top / 2 <= d <= top
    assert d > 0


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    b = Backoff(initial=0.2, maximum=10.0)
    ceilings = [b.ceiling(n) for n in range(10)]
    assert ceilings[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert ceilings[6:] == [10.0] * 4
    # jitter: two instances that failed together do not retry in lockstep
    delays = {b.delay(5, random.Random(s)) for s in range(20)}
    assert len(delays) > 1


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (
            asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
            POSTGRES,
        ),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), POSTGRES),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), POSTGRES),
        (asyncpg.InterfaceError("connection is closed"), POSTGRES),
        (KafkaConnectionError("unable to bootstrap"), KAFKA),
        (NotLeaderForPartitionError(), KAFKA),
        (KafkaTimeoutError(), KAFKA),
        (ConnectionRefusedError(111, "refused"), NETWORK),
        (TimeoutError(), NETWORK),
        # real failures: retrying does not fix them
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), None),
        (asyncpg.exceptions.UndefinedTableError("no such table"), None),
        (RecordTooLargeError(), None),
        (ValueError("bad"), None),
        (RuntimeError("bug"), None),
    ],
)
def test_dependency_of(exc: BaseException, dependency: str | None) -> None:
    assert dependency_of(exc) == dependency


def test_an_error_can_name_its_dependency() -> None:
    class ReadBackTimedOut(RuntimeError):
        dependency = KAFKA

    assert dependency_of(ReadBackTimedOut("slow")) == KAFKA


async def test_dependencies_away_until_a_success_and_named() -> None:
    deps = Dependencies()
    deps.add(KAFKA)
    deps.add(POSTGRES)
    assert deps.missing() == [KAFKA, POSTGRES]  # unknown counts as away
    deps.report_up(KAFKA)
    deps.report_up(POSTGRES)
    assert deps.missing() == []
    deps.report(asyncpg.exceptions.CannotConnectNowError("shutting down"))
    assert deps.missing() == [POSTGRES]
    assert "CannotConnectNowError" in str(deps.as_json()[POSTGRES]["error"])
    assert deps.state(POSTGRES).outages == 1
    deps.report(ConnectionRefusedError())  # does not say which: nothing is blamed
    assert deps.missing() == [POSTGRES]
    deps.report_up(POSTGRES)
    assert deps.available(KAFKA, POSTGRES)


async def test_probes_decide_and_a_failing_probe_is_not_a_crash() -> None:
    up = {"kafka": True}

    async def kafka_probe() -> bool:
        return up["kafka"]

    async def broken_probe() -> bool:
        raise OSError("refused")

    deps = Dependencies(probe_timeout=0.5)
    deps.add(KAFKA, kafka_probe)
    deps.add(POSTGRES, broken_probe)
    assert await deps.check() == [POSTGRES]
    up["kafka"] = False
    assert await deps.check() == [KAFKA, POSTGRES]
    assert "refused" in str(deps.as_json()[POSTGRES]["error"])


async def test_retry_waits_out_an_outage_and_reports_it() -> None:
    deps = Dependencies()
    deps.add(POSTGRES)
    deps.report_up(POSTGRES)
    calls = []
    seen_missing = []

    async def flaky() -> str:
        calls.append(1)
        seen_missing.append(deps.missing())
        if len(calls) < 4:
            raise asyncpg.exceptions.CannotConnectNowError("starting up")
        return "done"

    assert await retry(flaky, what="t", deps=deps, dependency=POSTGRES, backoff=FAST) == "done"
    assert len(calls) == 4
    assert seen_missing[1:] == [[POSTGRES]] * 3  # away while it failed ...
    assert deps.missing() == []  # ... and back once it answered


async def test_retry_raises_a_real_failure_at_once() -> None:
    calls = []

    async def bug() -> None:
        calls.append(1)
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")

    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await retry(bug, what="t", backoff=FAST)
    assert calls == [1]


async def test_retry_gives_up_when_bounded_and_stops_when_asked() -> None:
    async def away() -> None:
        raise KafkaConnectionError("down")

    with pytest.raises(KafkaConnectionError):
        await retry(away, what="t", backoff=FAST, give_up_after=0.02)
    stopping = asyncio.Event()
    stopping.set()
    with pytest.raises(StopRequested):
        await retry(away, what="t", backoff=FAST, stopping=stopping)


async def test_watchdog_tells_a_wedged_operation_from_one_waiting_for_a_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The watchdog's clock is ours: no outcome here depends on how loaded the machine is.
    clock = [0.0]
    monkeypatch.setattr(resilience, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    dog = Watchdog(stale_after=0.5)
    release = asyncio.Event()
    attempts = [0]

    async def wedged() -> None:
        with dog.working("wedged"):
            await release.wait()

    async def waiting() -> None:
        async def away() -> None:
            attempts[0] += 1
            raise KafkaConnectionError("down")

        with dog.working("waiting"), pytest.raises(StopRequested):
            await retry(away, what="t", backoff=FAST, stopping=release)

    tasks = [asyncio.create_task(wedged()), asyncio.create_task(waiting())]
    while attempts[0] == 0:
        await asyncio.sleep(0.001)
    assert dog.stalled() == []
    clock[0] = 1.0  # a second on the watchdog's clock...
    seen = attempts[0]
    while attempts[0] < seen + 2:  # ...in which the one retrying tried again
        await asyncio.sleep(0.001)
    assert dog.stalled() == ["wedged"]  # the one retrying keeps touching its clock
    release.set()
    await asyncio.gather(*tasks)
    assert dog.stalled() == []


def test_watchdog_off_and_touch_outside_an_operation() -> None:
    touch()  # no operation registered: nothing to do, no error
    dog = Watchdog(stale_after=0)
    with dog.working("x"):
        assert dog.stalled() == []


def test_client_library_log_floods_are_counted_not_written() -> None:
    import logging

    from conn_runtime.logs import RepeatFilter

    f = RepeatFilter(window=30.0)

    def rec(name: str, msg: str, at: float) -> logging.LogRecord:
        r = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)
        r.created = at
        return r

    flood = [
        rec("aiokafka", "Unable connect to node with id 1", 1000 + i * 0.01) for i in range(500)
    ]
    written = [r for r in flood if f.filter(r)]
    assert len(written) == 1
    later = rec("aiokafka", "Unable connect to node with id 1", 1031.0)
    assert f.filter(later) and later.repeated == 499  # the count is not lost
    # Conn's own lines, and other messages, always pass
    assert all(f.filter(rec("conn_runtime.kafka", "handler waits", 1000.0)) for _ in range(3))
    assert f.filter(rec("aiokafka", "another message", 1000.5))


async def test_ops_endpoints_liveness_for_wedged_readiness_for_dependencies() -> None:
    import json

    from conn_runtime.ops import OpsServer

    deps = Dependencies()
    deps.add(KAFKA)
    deps.add(POSTGRES)
    deps.report_up(KAFKA)
    deps.report(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    dog = Watchdog(stale_after=0.02)
    ops = OpsServer("127.0.0.1", 0, deps=deps, watchdog=dog)

    async def consumer_running() -> bool:
        return True

    ops.add_check("consumer", consumer_running)

    ready = await ops._readyz(None)  # type: ignore[arg-type]
    body = json.loads(ready.body)  # type: ignore[arg-type]
    assert ready.status == 503 and ready.headers["Retry-After"]
    assert body["missing"] == [POSTGRES] and body["checks"][POSTGRES] is False
    alive = await ops._healthz(None)  # type: ignore[arg-type]
    assert alive.status == 200  # a dependency away is not a reason to restart the process

    with dog.working("stuck handler"):
        await asyncio.sleep(0.05)
        wedged = await ops._healthz(None)  # type: ignore[arg-type]
    assert wedged.status == 503
    assert json.loads(wedged.body)["stalled"] == ["stuck handler"]  # type: ignore[arg-type]
    deps.report_up(POSTGRES)
    assert (await ops._readyz(None)).status == 200  # type: ignore[arg-type]
    assert (await ops._healthz(None)).status == 200  # type: ignore[arg-type]
