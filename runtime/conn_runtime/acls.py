"""Kafka ACLs for the Conn topics, as data, and an idempotent `ensure_acls`.

The broker authorizes every client (KRaft `StandardAuthorizer`, no ACL = denied):

- only Conn principals write `conn.events` (the API, executors, verifiers, the
  packager, and registered integrations); only the API writes `conn.control`; only the
  packager writes `conn.takeover`; the consumer-group owners write `conn.deadletter`;
- each service uses only its own consumer group: only the executor principal may join
  the executor group (the "once" invariant's fence is in PostgreSQL, but a stranger in
  the group could still steal partitions);
- a read-only principal (an SRE running `conn replay`) reads every topic, writes none.

Signatures (conn_schemas.signing) decide what a record may *do*; ACLs decide who may
*write* at all. Both hold: an integration with a write ACL on `conn.events` still
cannot sign a DirectiveIssued, and a leaked key is useless without broker credentials.

aiokafka has the CreateAcls/DeleteAcls protocol structs but no admin method: the
requests are sent through its admin client here (one request for all bindings).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request

from conn_runtime.settings import Topics


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10


ALLOW = 3


@dataclass(frozen=True, order=True)
class AclBinding:
    resource_type: ResourceType
    name: str
    pattern: PatternType
    principal: str
    """Kafka principal, e.g. `User:executor`."""
    operation: Operation

    def describe(self) -> str:
        pattern = "" if self.pattern is PatternType.LITERAL else " (prefix)"
        return (
            f"{self.principal} {self.operation.name} "
            f"{self.resource_type.name.lower()} {self.name}{pattern}"
        )


@dataclass(frozen=True)
class KafkaPrincipals:
    """Kafka (SASL) user names of the Conn services and of registered others."""

    api: str = "directive-api"
    executor: str = "executor"
    verifier: str = "verifier"
    packager: str = "packager"
    integrations: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    """Read-only principals (e.g. an SRE running `conn replay`)."""


@dataclass(frozen=True)
class Groups:
    """Consumer groups (ids, or prefixes for faust's app id and its internal topics)."""

    prefix: str = ""
    executor: str = "conn-executor"
    verifier: str = "conn-verifier"
    packager: str = "conn-packager"
    """faust's app id: its consumer group, and the prefix of its internal topics."""

    def name(self, group: str) -> str:
        return f"{self.prefix}{group}"


def acl_bindings(
    topics: Topics,
    principals: KafkaPrincipals | None = None,
    groups: Groups | None = None,
) -> list[AclBinding]:
    """Every ACL the Conn topics and groups need; anything not listed is denied.

    Raises `ValueError` for principals that would share a Conn service's rights: an
    integration or reader named like a service principal, or whose own group prefix
    covers a service's consumer group (an integration called `conn` would get READ on
    every group starting with `conn`, so it could join the executor group)."""
    p = principals or KafkaPrincipals()
    g = groups or Groups()
    _check_names(p, g)
    out: list[AclBinding] = []

    def allow(
        principal: str,
        resource: ResourceType,
        name: str,
        ops: Iterable[Operation],
        pattern: PatternType = PatternType.LITERAL,
    ) -> None:
        out.extend(AclBinding(resource, name, pattern, f"User:{principal}", op) for op in ops)

    r, w, d = Operation.READ, Operation.WRITE, Operation.DESCRIBE
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    # The directive API: appends human intent and the kill switch; folds both topics.
    allow(p.api, topic, topics.events, (r, w, d))
    allow(p.api, topic, topics.control, (r, w, d))
    # Executors and verifiers: their own group on conn.events, conn.control read in full.
    for who, gid in ((p.executor, g.executor), (p.verifier, g.verifier)):
        allow(who, topic, topics.events, (r, w, d))
        allow(who, topic, topics.control, (r, d))
        allow(who, topic, topics.deadletter, (w, d))
        allow(who, group, g.name(gid), (r,))
    # The packager (faust): its group and internal topics (changelog, assignor leader).
    allow(p.packager, topic, topics.events, (r, w, d))
    allow(p.packager, topic, topics.takeover, (w, d))
    allow(p.packager, topic, topics.deadletter, (w, d))
    allow(p.packager, topic, g.name(g.packager), (Operation.ALL,), PatternType.PREFIXED)
    allow(p.packager, group, g.name(g.packager), (r,), PatternType.PREFIXED)
    # Other services: publish on conn.events (what they may *sign* is the keyring's
    # business), read the log and the packets, use groups named after themselves.
    for who in p.integrations:
        allow(who, topic, topics.events, (r, w, d))
        allow(who, topic, topics.takeover, (r, d))
        allow(who, group, g.name(who), (r,), PatternType.PREFIXED)
    for who in p.readers:
        for name in (topics.events, topics.control, topics.takeover, topics.deadletter):
            allow(who, topic, name, (r, d))
        allow(who, group, g.name(who), (r,), PatternType.PREFIXED)
    return sorted(set(out))


def _check_names(p: KafkaPrincipals, g: Groups) -> None:
    services = {p.api, p.executor, p.verifier, p.packager}
    service_groups = [g.name(gid) for gid in (g.executor, g.verifier, g.packager)]
    for who in (*p.integrations, *p.readers):
        if who in services:
            raise ValueError(
                f"{who!r} is a Conn service's Kafka principal; an integration or reader "
                "needs a login of its own"
            )
        mine = g.name(who)
        covered = [sg for sg in service_groups if sg.startswith(mine)]
        if covered:
            raise ValueError(
                f"{who!r} may use consumer groups starting with {mine!r}, which would "
                f"include {covered[0]!r}: choose a principal name that is not a prefix "
                "of a Conn service's group"
            )


# --- applying them --------------------------------------------------------------------------------


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self._bindings = bindings

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (
                    int(b.resource_type),
                    b.name,
                    int(b.pattern),
                    b.principal,
                    "*",
                    int(b.operation),
                    ALLOW,
                )
                for b in self._bindings
            ]
        )


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 31

    def __init__(self, bindings: Sequence[AclBinding]) -> None:
        self._bindings = bindings

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(
            [
                (
                    int(b.resource_type),
                    b.name,
                    int(b.pattern),
                    b.principal,
                    "*",
                    int(b.operation),
                    ALLOW,
                )
                for b in self._bindings
            ]
        )


ANY = 1


class _DescribeAllAcls(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 29

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ANY, None, ANY, None, None, ANY, ANY)


class AclError(RuntimeError):
    pass


async def describe_acls(admin: Any) -> set[AclBinding]:
    """Every ALLOW binding the broker's authorizer holds now."""
    response = await admin._send_request(_DescribeAllAcls())
    if response.error_code != 0:
        raise AclError(f"describing ACLs failed: {response.error_message or response.error_code}")
    out: set[AclBinding] = set()
    for rtype, name, pattern, acls in response.resources:
        for principal, _host, operation, permission in acls:
            if permission != ALLOW:
                continue
            try:
                out.add(
                    AclBinding(
                        ResourceType(rtype),
                        name,
                        PatternType(pattern),
                        principal,
                        Operation(operation),
                    )
                )
            except ValueError:
                continue  # a kind of binding Conn does not use
    return out


async def ensure_acls(
    bootstrap: str,
    bindings: Sequence[AclBinding],
    *,
    ready_timeout: float = 30.0,
    **client_kwargs: Any,
) -> int:
    """Create the bindings (creating an existing ACL is a no-op) and wait until the
    broker's authorizer enforces them (ACLs reach it through the metadata log, a moment
    after the controller committed them). Returns how many were sent. `client_kwargs` go
    to AIOKafkaAdminClient: an admin principal's SASL/SSL."""
    if not bindings:
        return 0
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        response = await admin._send_to_controller(_CreateAcls(list(bindings)))
        errors = [
            f"{b.describe()}: {msg or code}"
            for b, (code, msg) in zip(bindings, response.creation_responses, strict=True)
            if code != 0
        ]
        if errors:
            raise AclError("creating ACLs failed: " + "; ".join(errors[:5]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while True:
            missing = set(bindings) - await describe_acls(admin)
            if not missing:
                return len(bindings)
            if loop.time() > deadline:
                raise AclError(
                    f"{len(missing)} ACLs not in force after {ready_timeout}s, e.g. "
                    + next(iter(missing)).describe()
                )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def delete_acls(bootstrap: str, bindings: Sequence[AclBinding], **client_kwargs: Any) -> None:
    """Best-effort removal (test cleanup)."""
    if not bindings:
        return
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        await admin._send_to_controller(_DeleteAcls(list(bindings)))
    finally:
        await admin.close()
