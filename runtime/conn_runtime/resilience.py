"""Riding out dependency outages, written once for every service.

A service keeps its process when PostgreSQL or Kafka restarts or goes away for a
while: it says so on `/readyz`, waits with bounded exponential backoff and jitter,
and carries on from where it was. The pieces:

- `Backoff`: the delay schedule (exponential, capped, "equal jitter").
- `dependency_of(exc)`: does this error mean a dependency is away ("postgres",
  "kafka", or "network" when the error does not say which), or is it a real
  failure that retrying will not fix (None)?
- `Dependencies`: one process's view of its dependencies: active probes (run by
  a monitor task) plus passive reports from the operations that failed or
  succeeded. `/readyz` names whatever is missing.
- `retry(...)`: call until it succeeds, sleeping `Backoff` between attempts while
  the error says a dependency is away; anything else is raised at once.
- `describe_failure(exc)`: one bounded, control-character-free line naming an error
  (for dead-letter headers and logs; a pydantic error without its input values).
- `Watchdog`: liveness. An operation registered with `working()` that neither
  finishes nor retries for `stale_after` seconds means the process is wedged
  (`/healthz` answers 503 and an orchestrator restarts it). Waiting for a
  dependency through `retry()` counts as progress, so an outage never looks
  like a wedged process.

Hand-written rather than `tenacity`: the delay schedule is also used on its own
(the consumer loop rewinds and re-fetches, the local supervisor restarts
processes), and every attempt must feed the dependency registry and the
watchdog; the loop itself is a dozen lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pydantic import ValidationError

from conn_schemas.values import MAX_LINE, clean_text

log = logging.getLogger(__name__)

T = TypeVar("T")

POSTGRES = "postgres"
KAFKA = "kafka"
NETWORK = "network"
"""An OS-level connection error that does not say which dependency it came from."""


# --- the delay schedule -------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter: attempt n (0-based) waits between
    half and all of `min(maximum, initial * multiplier**n)` seconds ("equal jitter":
    never zero, never above the cap, and instances that failed together spread out)."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0

    def ceiling(self, attempt: int) -> float:
        exponent = min(max(attempt, 0), 62)
        return float(min(self.maximum, self.initial * self.multiplier**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        top = self.ceiling(attempt)
        return top / 2 + (rng or _RNG).uniform(0, top / 2)


_RNG = random.Random()
DEFAULT_BACKOFF = Backoff()


# --- what an error means --------------------------------------------------------------------

_PG_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08 and client-side connection failures
    asyncpg.exceptions.CannotConnectNowError,  # "the database system is starting up / shutting down"
    asyncpg.exceptions.AdminShutdownError,  # "terminating connection due to administrator command"
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
)


def dependency_of(exc: BaseException) -> str | None:
    """The dependency an error says is away, or None for a real failure.

    PostgreSQL: connection errors, a server starting up or shutting down, a
    connection the server terminated. An exception with a `dependency` attribute
    names it itself. Kafka: errors the client marks retriable
    (no leader, no coordinator, connection lost...) and request timeouts. An
    `OSError` or `TimeoutError` (refused connection, pool acquire timeout) is a
    dependency away too, but does not say which: "network"."""
    declared = getattr(exc, "dependency", None)
    if isinstance(declared, str):
        return declared  # an error of ours that knows (e.g. a read-back that timed out)
    if isinstance(exc, _PG_AWAY):
        return POSTGRES
    if isinstance(exc, KafkaError):
        return KAFKA if (exc.retriable or isinstance(exc, KafkaTimeoutError)) else None
    if isinstance(exc, OSError | TimeoutError):
        return NETWORK
    return None


def is_transient(exc: BaseException) -> bool:
    return dependency_of(exc) is not None


def describe_failure(exc: BaseException, limit: int = MAX_LINE) -> str:
    """`Type: message` on one line of at most `limit` characters, control characters
    replaced: what a dead letter's `dlq.detail` and a log line say about a failure. A
    pydantic error lists where and what (never the offending input values, which may
    come from a record's payload)."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '-'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        )
    else:
        text = str(exc)
    text = " ".join(clean_text(text, limit * 2).split())
    return clean_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, limit)


class StopRequested(Exception):
    """Raised by `retry` when the service is stopping while it waits for a dependency.
    An `Exception` (not `CancelledError`): a consumer loop treats it as a failed
    handler, so the record is not committed and is redelivered after the restart."""


# --- the process's dependencies -----------------------------------------------------------

Probe = Callable[[], Awaitable[bool]]


@dataclass
class DependencyState:
    name: str
    up: bool = False
    """Unknown counts as away until the first probe or operation succeeded."""
    since: float = field(default_factory=time.monotonic)
    """When `up` last changed (monotonic)."""
    error: str = "not checked yet"
    outages: int = 0
    checked: bool = False

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"up": self.up, "for_seconds": round(self.age, 1)}
        if not self.up:
            out["error"] = self.error
        return out

    @property
    def age(self) -> float:
        return time.monotonic() - self.since


class Dependencies:
    """What this process needs, and whether each is there now.

    A dependency is away when its probe fails or an operation on it failed with a
    transient error since the last success (operation or probe). `/readyz` is 503
    while any is away and names them; the directive API answers 503 with
    Retry-After for requests that need one that is away."""

    def __init__(self, *, interval: float = 1.0, probe_timeout: float = 2.0) -> None:
        self.interval = interval
        self.probe_timeout = probe_timeout
        self._probes: dict[str, Probe | None] = {}
        self._state: dict[str, DependencyState] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, probe: Probe | None = None) -> None:
        self._probes[name] = probe
        self._state.setdefault(name, DependencyState(name))

    @property
    def names(self) -> list[str]:
        return list(self._state)

    def state(self, name: str) -> DependencyState:
        return self._state.setdefault(name, DependencyState(name))

    def report_up(self, name: str) -> None:
        s = self._state.get(name)
        if s is None or s.up:
            return
        if s.outages:
            log.info(
                "dependency is back",
                extra={"dependency": name, "away_seconds": round(s.age, 1), "outages": s.outages},
            )
        s.up, s.since, s.error = True, time.monotonic(), ""
        s.checked = True

    def report_down(self, name: str, error: BaseException | str) -> None:
        if name == NETWORK or name not in self._state:
            # Which one? Let the probes tell; say "away" for all that are not known-up.
            return
        s = self._state[name]
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"[:300]
        if s.up or not s.checked:
            s.outages += 1
            log.warning("dependency is away", extra={"dependency": name, "error": text})
            s.since = time.monotonic()
        s.up, s.error, s.checked = False, text, True

    def report(self, exc: BaseException) -> str | None:
        """Report a failed operation; returns the dependency it blamed (or None)."""
        dep = dependency_of(exc)
        if dep is not None:
            self.report_down(dep, exc)
        return dep

    def missing(self) -> list[str]:
        return [n for n, s in self._state.items() if not s.up]

    def available(self, *names: str) -> bool:
        return all(self.state(n).up for n in names)

    def as_json(self) -> dict[str, dict[str, object]]:
        return {n: s.as_json() for n, s in self._state.items()}

    async def check(self) -> list[str]:
        """Run every probe once (concurrently, bounded); returns what is missing."""

        async def one(name: str, probe: Probe) -> None:
            try:
                ok = bool(await asyncio.wait_for(probe(), self.probe_timeout))
                error = "not reachable (probe failed)"
            except Exception as exc:  # noqa: BLE001 - a failing probe is "away", never a crash
                ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
            if ok:
                self.report_up(name)
            else:
                self.report_down(name, error)

        await asyncio.gather(*(one(n, p) for n, p in self._probes.items() if p is not None))
        return self.missing()

    async def _monitor(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check()
            await asyncio.sleep(self.interval)

    @property
    def monitoring(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Probe in the background every `interval` seconds (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._monitor(), name="dependency-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


# --- liveness -------------------------------------------------------------------------------


@dataclass
class _Work:
    name: str
    last: float


_CURRENT: contextvars.ContextVar[_Work | None] = contextvars.ContextVar(
    "conn_watchdog_work", default=None
)


class Watchdog:
    """Tells a wedged process from a busy or waiting one (for `/healthz`)."""

    def __init__(self, stale_after: float = 300.0) -> None:
        self.stale_after = stale_after
        self._items: dict[int, _Work] = {}

    @contextlib.contextmanager
    def working(self, name: str) -> Iterator[None]:
        """Register an operation that must make progress (finish, or retry)."""
        work = _Work(name, time.monotonic())
        key = id(work)
        self._items[key] = work
        token = _CURRENT.set(work)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            self._items.pop(key, None)

    def stalled(self) -> list[str]:
        """Operations with no progress for `stale_after` seconds."""
        if self.stale_after <= 0:
            return []
        now = time.monotonic()
        return sorted({w.name for w in self._items.values() if now - w.last > self.stale_after})


def touch() -> None:
    """The operation in hand made progress (called by `retry` on every attempt)."""
    work = _CURRENT.get()
    if work is not None:
        work.last = time.monotonic()


# --- the retry loop -------------------------------------------------------------------------


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    deps: Dependencies | None = None,
    dependency: str | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    give_up_after: float | None = None,
    stopping: asyncio.Event | None = None,
) -> T:
    """`await call()` until it succeeds. A transient error (`dependency_of`) is
    reported to `deps` (as `dependency` when given, else as the error says), logged
    once per outage, and retried after `backoff`; any other error is raised at once.
    `give_up_after` (seconds) bounds the wait (then the last error is raised);
    `stopping` ends it early (raises `StopRequested`)."""
    attempt = 0
    started = time.monotonic()
    blamed_any: set[str] = set()
    while True:
        touch()
        try:
            result = await call()
        except Exception as exc:
            blamed = dependency_of(exc)
            if blamed is None:
                raise
            if dependency is not None:
                blamed = dependency
            blamed_any.add(blamed)
            if deps is not None:
                deps.report_down(blamed, exc)
            waited = time.monotonic() - started
            if give_up_after is not None and waited >= give_up_after:
                raise
            pause = backoff.delay(attempt)
            (log.warning if attempt == 0 else log.debug)(
                "dependency away; retrying",
                extra={
                    "what": what,
                    "dependency": blamed,
                    "attempt": attempt + 1,
                    "retry_in": round(pause, 2),
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                },
            )
            attempt += 1
            if stopping is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)
                if stopping.is_set():
                    raise StopRequested(f"{what}: stopping while waiting for {blamed}") from exc
            else:
                await asyncio.sleep(pause)
            continue
        if deps is not None:
            for name in blamed_any | ({dependency} if dependency else set()):
                deps.report_up(name)
        if attempt:
            log.info(
                "dependency back; carrying on",
                extra={
                    "what": what,
                    "attempts": attempt + 1,
                    "waited_s": round(time.monotonic() - started, 2),
                },
            )
        return result
