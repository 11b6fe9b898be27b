"""The local stack: an ordered registry of components, started in order, stopped in reverse.

The components run under the stack's supervisor (`conn_localstack.supervisor`), a
small process `stack_up` starts when none runs: it owns them as its children and
restarts one that exits unexpectedly. `stack_up` / `stack_down` / `stack_status`
talk to it; every path is under `paths()` (CONN_LOCAL_DIR) and every port comes
from the environment, so two stacks with different directories and ports never
touch each other.

Built-in: postgres, kafka, topics, then the Conn processes (`conn_localstack.services`:
the stack knows how to start each service; the services never import the stack). They
are started after Kafka, PostgreSQL and the topics exist, with the stack env
(KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, CONN_*_PORT) plus the spec's own env. Others add
processes in either of two ways:

1. A plugin module listed in CONN_LOCALSTACK_PLUGINS="mod.a,mod.b" exposing
   `def process_specs() -> list[ProcessSpec]` (e.g. tests/integration/crashy_plugin.py).
2. `register_process(spec_or_factory)` from Python. The supervisor is a process of its
   own: a registration counts only where the supervisor imports it, i.e. in a plugin
   module (1); registering from a test process does not reach a running supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from conn_localstack import kafka, postgres, services, supervisor
from conn_localstack.config import kafka_bootstrap, port
from conn_localstack.procs import (
    ProcessSpec,
    StackError,
    check_health,
    running_pid,
    stop_process,
)

log = logging.getLogger(__name__)


@dataclass
class Component:
    """A supervised process (`spec`) or a one-shot step (`run`)."""

    name: str
    healthy: Callable[[], Awaitable[bool]]
    spec: Callable[[], ProcessSpec] | None = None
    prepare: Callable[[], None] | None = None
    """Before every (re)start: write config, initialise storage."""
    started: Callable[[], Awaitable[bool]] | None = None
    """Start-up check (default: `healthy`)."""
    run: Callable[[], Awaitable[int | None]] | None = None
    """A one-shot step instead of a process (the topics)."""
    stop_stray: Callable[[], bool] | None = None
    """Stop an instance the supervisor did not start (PID files of an older run)."""
    port: int | None = None
    tags: set[str] = field(default_factory=set)

    def pid(self) -> int | None:
        return running_pid(self.name) if self.spec is not None else None


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)  # newly started by this call
    already_running: list[str] = field(default_factory=list)


_extra: list[ProcessSpec | Callable[[], ProcessSpec]] = []


def register_process(spec: ProcessSpec | Callable[[], ProcessSpec]) -> None:
    """Add a process to the stack (a spec, or a zero-arg factory evaluated at up/status)."""
    _extra.append(spec)


def _process_component(spec: ProcessSpec) -> Component:
    async def _healthy() -> bool:
        return running_pid(spec.name) is not None and await check_health(spec)

    return Component(
        name=spec.name,
        healthy=_healthy,
        spec=lambda: spec,
        stop_stray=lambda: stop_process(spec.name),
        port=spec.port,
        tags={"process"},
    )


def _plugin_specs() -> list[ProcessSpec]:
    """The Conn processes, then those of the CONN_LOCALSTACK_PLUGINS modules."""
    extra = os.environ.get("CONN_LOCALSTACK_PLUGINS", "")
    mods = [m.strip() for m in extra.split(",") if m.strip()]
    specs: list[ProcessSpec] = services.process_specs()
    for name in mods:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # plugin not written yet
            raise
        fn = getattr(mod, "process_specs", None)
        if fn is not None:
            specs.extend(fn())
    return specs


async def _topics_start() -> int | None:
    from conn_localstack.trust import dev_acls, dev_trust
    from conn_runtime.acls import ensure_acls
    from conn_runtime.settings import KafkaSettings
    from conn_runtime.topics import ensure_topics, topic_specs

    admin = dev_trust().client_options("admin")
    settings = KafkaSettings()
    await ensure_topics(kafka_bootstrap(), topic_specs(settings.topics), **admin)
    await ensure_acls(
        kafka_bootstrap(), dev_acls(settings.topics, settings.conn_topic_prefix), **admin
    )
    return None


async def _topics_healthy() -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    from conn_localstack.trust import dev_trust
    from conn_runtime.settings import KafkaSettings

    want = set(KafkaSettings().topics.model_dump().values())
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap(),
        request_timeout_ms=3000,
        **dev_trust().client_options("admin"),
    )
    try:
        await admin.start()
        return want <= set(await admin.list_topics())
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False
    finally:
        await admin.close()


def components() -> list[Component]:
    """Ordered component list (start order)."""

    async def _kafka_started() -> bool:
        if not await kafka.healthy():
            return False
        # SCRAM users added to the dev set after the storage was formatted.
        await asyncio.to_thread(kafka.add_users)
        return True

    out = [
        Component(
            "postgres",
            postgres.healthy,
            spec=postgres.spec,
            prepare=postgres.prepare,
            started=postgres.started,
            stop_stray=lambda: postgres.stop_stray() | stop_process("postgres"),
            port=port("CONN_POSTGRES_PORT"),
            tags={"core"},
        ),
        Component(
            "kafka",
            kafka.healthy,
            spec=kafka.spec,
            prepare=kafka.prepare,
            started=_kafka_started,
            stop_stray=lambda: stop_process("kafka"),
            port=port("CONN_KAFKA_PORT"),
            tags={"core"},
        ),
        Component("topics", _topics_healthy, run=_topics_start, tags={"core"}),
    ]
    for s in [*_plugin_specs(), *(x() if callable(x) else x for x in _extra)]:
        out.append(_process_component(s))
    return out


def _select(names: Iterable[str] | None) -> list[Component]:
    comps = components()
    if names is None:
        return comps
    wanted = set(names)
    unknown = wanted - {c.name for c in comps}
    if unknown:
        raise StackError(f"unknown components: {sorted(unknown)}")
    return [c for c in comps if c.name in wanted]


async def stack_up(
    names: Iterable[str] | None = None, *, echo: Callable[[str], None] | None = None
) -> UpResult:
    """Start the selected components (default: all) in order under the supervisor
    (started first if none runs); idempotent. Raises StackError (with the log tail)."""
    selected = [c.name for c in _select(names)]
    await asyncio.to_thread(supervisor.ensure_running, echo)
    result = await asyncio.to_thread(supervisor.request, "start", selected, echo=echo)
    return UpResult(
        started=list(result.get("started", [])),
        already_running=list(result.get("already_running", [])),
    )


def stack_down(
    names: Iterable[str] | None = None, *, echo: Callable[[str], None] | None = None
) -> list[str]:
    """Stop the selected components (default: all, and the supervisor) in reverse
    order; idempotent. Without a supervisor (it died, or an older `make up` started
    the stack), what the PID files name is stopped directly."""
    selected = [c.name for c in _select(names)]
    stopped: list[str] = []
    if supervisor.supervisor_pid() is not None:
        try:
            if names is None:
                before = [
                    str(r["component"])
                    for r in (supervisor.read_state() or {}).get("components", [])
                    if r.get("pid")
                ]
                supervisor.stop_supervisor()
                stopped = before
                if echo:
                    for n in reversed(before):
                        echo(f"[down] {n}: stopped")
                    echo("[down] supervisor: stopped")
            else:
                stopped = list(supervisor.request("stop", selected, echo=echo).get("stopped", []))
        except StackError as e:
            if echo:
                echo(f"[down] supervisor: {e}; stopping by PID file")
    for c in reversed(_select(names)):  # leftovers: no supervisor, or it died
        try:
            if c.stop_stray is not None and c.stop_stray():
                stopped.append(c.name)
                if echo:
                    echo(f"[down] {c.name}: stopped")
        except Exception as e:
            if echo:
                echo(f"[down] {c.name}: error {e}")
            else:
                raise
    return stopped


async def stack_status() -> list[dict[str, object]]:
    """One row per component: component, pid, port, healthy, state, restarts,
    last_exit (e.g. "signal SIGKILL at 2026-12-03 23:40:01Z"), detail."""
    if supervisor.supervisor_pid() is not None:
        with contextlib.suppress(StackError):
            rows = await asyncio.to_thread(supervisor.request, "status", None, timeout=30.0)
            return [dict(r) for r in rows]
    known = {str(r["component"]): r for r in (supervisor.read_state() or {}).get("components", [])}
    out: list[dict[str, object]] = []
    for c in components():
        pid = c.pid()
        healthy = False
        with contextlib.suppress(Exception):
            healthy = await c.healthy()
        last = known.get(c.name, {})
        out.append(
            {
                "component": c.name,
                "pid": pid,
                "port": c.port,
                "healthy": healthy,
                "state": "unsupervised" if pid else "stopped",
                "restarts": last.get("restarts", 0),
                "last_exit": last.get("last_exit"),
                "detail": "",
            }
        )
    return out


def python() -> str:
    """The interpreter plugins should use in their argv."""
    return sys.executable
