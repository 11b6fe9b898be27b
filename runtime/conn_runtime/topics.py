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
    # The broker stamps the append time (producers cannot choose it): a retired signing
    # key keeps verifying what was appended before its retirement (conn_schemas.signing).
    broker_time = {"message.timestamp.type": "LogAppendTime"}
    return [
        TopicSpec(
            t.events,
            ev,
            {**common, **forever, **broker_time, "cleanup.policy": "delete"},
            replication_factor,
        ),
        TopicSpec(
            t.takeover, partitions, {**common, "cleanup.policy": "compact"}, replication_factor
        ),
        TopicSpec(
            t.control,
            1,
            {**common, **broker_time, "cleanup.policy": "delete", "retention.ms": "-1"},
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


# --- `python -m conn_runtime.topics` (the Helm pre-install/pre-upgrade job) -----------------


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Create (or verify) the Conn topics, and with --acls their ACLs. Connection and
    prefix come from the environment (KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_*, KAFKA_SSL_CAFILE, CONN_TOPIC_PREFIX). Exit 0 on success, 1 on a
    Kafka/mismatch error, 2 on bad arguments.

        python -m conn_runtime.topics --replication-factor 3 --events-partitions 12
        python -m conn_runtime.topics --acls --integration status-page --reader sre
        python -m conn_runtime.topics --dry-run      # print the specs as JSON, no Kafka
    """
    import argparse
    import json
    import sys

    from conn_runtime.kafka import client_options
    from conn_runtime.settings import KafkaSettings

    parser = argparse.ArgumentParser(
        prog="python -m conn_runtime.topics",
        description="Create the Conn topics idempotently and verify their partition counts.",
    )
    parser.add_argument(
        "--replication-factor",
        type=_positive_int,
        default=1,
        help="replication factor (production: 3, which also sets min.insync.replicas=2)",
    )
    parser.add_argument(
        "--events-partitions",
        "--partitions",
        dest="events_partitions",
        type=_positive_int,
        default=None,
        help="partitions of conn.events (default: $CONN_EVENTS_PARTITIONS or 6); "
        "the executor/verifier replicas must not exceed it",
    )
    parser.add_argument(
        "--other-partitions",
        type=_positive_int,
        default=DEFAULT_PARTITIONS,
        help="partitions of conn.takeover and conn.deadletter (conn.control always has 1)",
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the topic specs as JSON and exit"
    )
    parser.add_argument(
        "--acls",
        action="store_true",
        help="also create the ACLs of conn_runtime.acls (needs an authorizer on the cluster "
        "and an admin login); principals default to directive-api, executor, verifier, packager",
    )
    parser.add_argument(
        "--integration",
        action="append",
        default=[],
        metavar="USER",
        help="with --acls: a Kafka user of another service that may write conn.events "
        "(repeatable; what it may sign is the keyring's business)",
    )
    for service, default in (
        ("api", "directive-api"),
        ("executor", "executor"),
        ("verifier", "verifier"),
        ("packager", "packager"),
    ):
        parser.add_argument(
            f"--{service}-user",
            default=default,
            metavar="USER",
            help=f"with --acls: the Kafka user of the {service} (default: {default})",
        )
    parser.add_argument(
        "--reader",
        action="append",
        default=[],
        metavar="USER",
        help="with --acls: a read-only Kafka user, e.g. for `conn replay` (repeatable)",
    )
    args = parser.parse_args(argv)
    from conn_runtime import logs

    logs.configure("topics")  # library warnings (aiokafka) as structured lines on stderr

    try:
        settings = KafkaSettings()
        events_partitions = (
            args.events_partitions
            if args.events_partitions is not None
            else events_partitions_from_env()
        )
    except ValueError as e:  # pydantic ValidationError or a bad CONN_EVENTS_PARTITIONS
        print(f"topics: invalid configuration: {e}", file=sys.stderr)
        return 2
    specs = topic_specs(
        settings.topics,
        events_partitions=events_partitions,
        partitions=args.other_partitions,
        replication_factor=args.replication_factor,
    )
    from conn_runtime.acls import Groups, KafkaPrincipals, acl_bindings

    try:
        acls = (
            acl_bindings(
                settings.topics,
                KafkaPrincipals(
                    api=args.api_user,
                    executor=args.executor_user,
                    verifier=args.verifier_user,
                    packager=args.packager_user,
                    integrations=tuple(args.integration),
                    readers=tuple(args.reader),
                ),
                Groups(prefix=settings.conn_topic_prefix),
            )
            if args.acls
            else []
        )
    except ValueError as e:
        print(f"topics: invalid ACL principals: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        doc: Any = [
            {
                "name": s.name,
                "partitions": s.partitions,
                "replication_factor": s.replication_factor,
                "configs": dict(s.configs),
            }
            for s in specs
        ]
        if args.acls:
            doc = {"topics": doc, "acls": [b.describe() for b in acls]}
        print(json.dumps(doc, indent=2))
        return 0

    opts = client_options(settings)
    bootstrap = opts.pop("bootstrap_servers")
    from conn_runtime.acls import ensure_acls

    async def apply() -> list[str]:
        created = await ensure_topics(bootstrap, specs, ready_timeout=args.ready_timeout, **opts)
        await ensure_acls(bootstrap, acls, ready_timeout=args.ready_timeout, **opts)
        return created

    try:
        created = asyncio.run(apply())
    except Exception as e:  # noqa: BLE001 - one clear line for the job log, never a traceback
        print(f"topics: failed against {bootstrap}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for s in specs:
        state = "created" if s.name in created else "exists"
        print(
            f"topics: {s.name}: {state} (partitions={s.partitions}, "
            f"replication_factor={s.replication_factor}, "
            + ", ".join(f"{k}={v}" for k, v in sorted(s.configs.items()))
            + ")"
        )
    for b in acls:
        print(f"acls: allow {b.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
