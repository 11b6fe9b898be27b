"""The Conn topics as data, and an idempotent `ensure_topics` (local stack, tests, Helm job).

`topic_specs(Topics())` is the production layout; tests pass a prefixed `Topics` and fewer
partitions. The Helm job passes `replication_factor=3`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conn_runtime.settings import Topics

DEFAULT_PARTITIONS = 6


class TopicMismatchError(RuntimeError):
    """An existing topic does not match its spec (e.g. a different partition count)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def events_partitions_from_env() -> int:
    return int(os.environ.get("CONN_EVENTS_PARTITIONS", str(DEFAULT_PARTITIONS)))


def topic_specs(
    topics: Topics | None = None,
    *,
    events_partitions: int | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
) -> list[TopicSpec]:
    """The four Conn topics. `events_partitions=None` reads CONN_EVENTS_PARTITIONS (default 6)."""
    t = topics or Topics()
    ev = events_partitions if events_partitions is not None else events_partitions_from_env()
    common: dict[str, str] = {}
    if replication_factor >= 3:
        common["min.insync.replicas"] = "2"
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    return [
        TopicSpec(
            t.events,
            ev,
            {**common, **forever, "cleanup.policy": "delete"},
            replication_factor,
        ),
        TopicSpec(
            t.takeover, partitions, {**common, "cleanup.policy": "compact"}, replication_factor
        ),
        TopicSpec(
            t.control,
            1,
            {**common, "cleanup.policy": "delete", "retention.ms": "-1"},
            replication_factor,
        ),
        TopicSpec(
            t.deadletter,
            partitions,
            {**common, "cleanup.policy": "delete", "retention.ms": "-1"},
            replication_factor,
        ),
    ]


def _partition_counts(described: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in described:
        if t.get("error_code", 0) == 0:
            out[t["topic"]] = len(t.get("partitions") or [])
    return out


async def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    ready_timeout: float = 30.0,
    **client_kwargs: Any,
) -> list[str]:
    """Create missing topics, tolerate existing ones, verify partition counts.

    Returns the names created. Raises TopicMismatchError if an existing topic has a
    different partition count. `client_kwargs` go to AIOKafkaAdminClient (SASL/SSL).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing:
            resp = await admin.create_topics(
                [
                    NewTopic(
                        name=s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication_factor,
                        topic_configs=dict(s.configs),
                    )
                    for s in missing
                ],
                timeout_ms=int(ready_timeout * 1000),
            )
            for err in resp.topic_errors:
                name, code = err[0], err[1]
                if code == 0:
                    created.append(name)
                    continue
                exc = for_code(code)
                if exc is TopicAlreadyExistsError:
                    continue
                raise exc(f"creating topic {name!r}: {err[2:] if len(err) > 2 else ''}")
        # Verify counts and wait until every partition has a leader.
        names = [s.name for s in specs]
        want = {s.name: s.partitions for s in specs}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while True:
            described = await admin.describe_topics(names)
            counts = _partition_counts(described)
            for name, n in counts.items():
                if n and n != want[name]:
                    raise TopicMismatchError(
                        f"topic {name!r} exists with {n} partitions, spec says {want[name]}; "
                        "partition count cannot be changed safely (keying by incident_id)"
                    )
            ready = all(
                counts.get(t["topic"]) == want[t["topic"]]
                and all(p.get("leader", -1) >= 0 for p in t.get("partitions") or [])
                for t in described
            ) and len(counts) == len(names)
            if ready:
                return created
            if loop.time() > deadline:
                raise TimeoutError(f"topics not ready after {ready_timeout}s: {described!r}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str], **client_kwargs: Any) -> None:
    """Best-effort delete (test cleanup)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()
