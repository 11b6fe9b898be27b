"""The local stack: an ordered registry of components, started in order, stopped in reverse.

Built-in: postgres, kafka, topics. Others add processes in either of two ways:

1. A module `conn_<pkg>.localstack` (see PLUGIN_MODULES, or list extra modules in
   CONN_LOCALSTACK_PLUGINS="mod.a,mod.b") exposing `def process_specs() -> list[ProcessSpec]`.
   They are started after Kafka, PostgreSQL and the topics exist, with the stack env
   (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, CONN_*_PORT) plus the spec's own env.
2. `register_process(spec_or_factory)` from Python (e.g. a test fixture).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from conn_localstack import kafka, postgres
from conn_localstack.config import kafka_bootstrap, port
from conn_localstack.procs import (
    ProcessSpec,
    StackError,
    check_health,
    running_pid,
    start_process,
    stop_process,
)

log = logging.getLogger(__name__)

PLUGIN_MODULES = [
    "conn_simulator.localstack",
    "conn_api.localstack",
    "conn_executor.localstack",
    "conn_verifier.localstack",
    "conn_packager.localstack",
]


@dataclass
class Component:
    name: str
    start: Callable[[], Awaitable[int | None]]
    stop: Callable[[], bool]
    pid: Callable[[], int | None]
    healthy: Callable[[], Awaitable[bool]]
    port: int | None = None
    tags: set[str] = field(default_factory=set)


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)  # newly started by this call
    already_running: list[str] = field(default_factory=list)


_extra: list[ProcessSpec | Callable[[], ProcessSpec]] = []


def register_process(spec: ProcessSpec | Callable[[], ProcessSpec]) -> None:
    """Add a process to the stack (a spec, or a zero-arg factory evaluated at up/status)."""
    _extra.append(spec)


def _process_component(spec: ProcessSpec) -> Component:
    async def _start() -> int | None:
        return await start_process(spec)

    async def _healthy() -> bool:
        return running_pid(spec.name) is not None and await check_health(spec)

    return Component(
        name=spec.name,
        start=_start,
        stop=lambda: stop_process(spec.name),
        pid=lambda: running_pid(spec.name),
        healthy=_healthy,
        port=spec.port,
        tags={"process"},
    )


def _plugin_specs() -> list[ProcessSpec]:
    mods = list(PLUGIN_MODULES)
    extra = os.environ.get("CONN_LOCALSTACK_PLUGINS", "")
    mods += [m.strip() for m in extra.split(",") if m.strip()]
    specs: list[ProcessSpec] = []
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

    async def _kafka_start() -> int | None:
        kafka.prepare()
        pid = await start_process(kafka.spec())
        kafka.add_users()  # SCRAM users added to the dev set after the storage was formatted
        return pid

    out = [
        Component(
            "postgres",
            postgres.start,
            postgres.stop,
            lambda: running_pid("postgres"),
            postgres.healthy,
            port("CONN_POSTGRES_PORT"),
            {"core"},
        ),
        Component(
            "kafka",
            _kafka_start,
            lambda: stop_process("kafka"),
            lambda: running_pid("kafka"),
            kafka.healthy,
            port("CONN_KAFKA_PORT"),
            {"core"},
        ),
        Component(
            "topics",
            _topics_start,
            lambda: False,
            lambda: None,
            _topics_healthy,
            None,
            {"core"},
        ),
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
    """Start the selected components (default: all) in order; idempotent."""
    res = UpResult()
    for c in _select(names):
        before = c.pid()
        if c.name == "topics":
            if echo:
                echo("[up] topics: ensuring")
        elif before is not None and await c.healthy():
            res.already_running.append(c.name)
            if echo:
                echo(f"[up] {c.name}: already running (pid {before})")
            continue
        elif echo:
            echo(f"[up] {c.name}: starting")
        pid = await c.start()
        if c.name != "topics":
            res.started.append(c.name)
        if echo:
            echo(f"[up] {c.name}: healthy" + (f" (pid {pid})" if pid else ""))
    return res


def stack_down(
    names: Iterable[str] | None = None, *, echo: Callable[[str], None] | None = None
) -> list[str]:
    """Stop the selected components (default: all) in reverse order; idempotent."""
    stopped: list[str] = []
    for c in reversed(_select(names)):
        try:
            if c.stop():
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
    rows: list[dict[str, object]] = []
    for c in components():
        pid = c.pid()
        healthy = False
        with contextlib.suppress(Exception):
            healthy = await c.healthy()
        rows.append({"component": c.name, "pid": pid, "port": c.port, "healthy": healthy})
    return rows


def python() -> str:
    """The interpreter plugins should use in their argv."""
    return sys.executable
