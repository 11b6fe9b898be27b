"""Who a test is, on the authenticated broker and in the signed log.

Every test that touches Kafka goes through the same doors as the services: it logs in
to the broker as one of the local stack's SCRAM principals (`conn_localstack.trust`)
and writes only records signed by a key of the session's TEST keyring (fresh keys,
written to a temporary directory; the processes a test starts load that keyring too).
No test writes an unsigned record and expects it to be honoured.

    trust.settings(bootstrap, topics, "executor")   KafkaSettings acting as the executor
    trust.env("verifier")                           env vars for a verifier process
    trust.kafka_options("sre")                      aiokafka kwargs of a read-only client
    LedgerWriter(trust, bootstrap, topics)          appends any event as its rightful signer
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, restamp

from conn_runtime.kafka import EventProducer, Position, event_headers
from conn_runtime.settings import KafkaSettings, Topics
from conn_runtime.trust import Trust, trust_for, write_keyring_file
from conn_schemas.codec import encode
from conn_schemas.events import Envelope
from conn_schemas.signing import SignerRole, private_key_pem

SIGNERS = tuple(PRINCIPAL_OF_ROLE.values())
"""directive-api, executor, verifier, packager, example-integration."""


def prefix_of(topics: Topics) -> str:
    return topics.events.removesuffix("conn.events")


@dataclass
class Identities:
    """The session's test keyring (public keys) and signing keys, and the broker logins."""

    root: Path
    keys: Keys
    sasl: bool = True
    """False when the broker is a PLAINTEXT testcontainer (no SASL, no ACLs)."""

    @classmethod
    def create(cls, root: Path, *, sasl: bool) -> Identities:
        trust = cls(root, Keys.fresh(), sasl)
        trust.write()
        return trust

    def write(self) -> None:
        (self.root / "keys").mkdir(parents=True, exist_ok=True)
        for name, key in self.keys.private.items():
            path = self.key_file(name)
            path.write_bytes(private_key_pem(key))
            path.chmod(0o600)
        write_keyring_file(self.keyring_file, self.keys.keyring)

    @property
    def keyring_file(self) -> Path:
        return self.root / "keyring.yaml"

    def key_file(self, principal: str) -> Path:
        return self.root / "keys" / f"{principal}.pem"

    # -- the broker ---------------------------------------------------------------------------

    def kafka_options(self, user: str) -> dict[str, Any]:
        """aiokafka kwargs (no bootstrap) that log in as `user`."""
        if not self.sasl:
            return {}
        from conn_localstack.trust import dev_trust

        return dev_trust().client_options(user)

    def kafka_env(self, user: str) -> dict[str, str]:
        if not self.sasl:
            return {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        from conn_localstack.trust import dev_trust

        return dev_trust().kafka_env(user)

    # -- a process or client acting as a principal --------------------------------------------

    def env(self, principal: str, *, kafka_user: str | None = None) -> dict[str, str]:
        """Env vars for a process acting as `principal` (signing if it is a signer)."""
        env = {
            **self.kafka_env(kafka_user or principal),
            "CONN_KEYRING_FILE": str(self.keyring_file),
        }
        if principal in self.keys.private:
            env["CONN_SIGNING_KEY_FILE"] = str(self.key_file(principal))
        return env

    def settings(
        self,
        bootstrap: str,
        topics: Topics | str,
        principal: str,
        *,
        kafka_user: str | None = None,
    ) -> KafkaSettings:
        prefix = topics if isinstance(topics, str) else prefix_of(topics)
        user = kafka_user or principal
        sasl: dict[str, Any] = {}
        if self.sasl:
            from conn_localstack.trust import SASL_MECHANISM, dev_trust

            sasl = {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": SASL_MECHANISM,
                "kafka_sasl_username": user,
                "kafka_sasl_password": dev_trust().password(user),
            }
        return KafkaSettings(
            kafka_bootstrap_servers=bootstrap,
            conn_topic_prefix=prefix,
            conn_keyring_file=self.keyring_file,
            conn_signing_key_file=(
                self.key_file(principal) if principal in self.keys.private else None
            ),
            **sasl,
        )

    def reader(self, bootstrap: str, topics: Topics | str) -> Trust:
        """What every Conn reader uses to trust a record, for these topics."""
        return trust_for(self.settings(bootstrap, topics, "sre"))


@dataclass
class LedgerWriter:
    """Appends events the way their rightful producers do: each event type through an
    EventProducer of the principal DESIGN.md entitles to it (its own Kafka login and
    signing key), re-stamped with that principal's producer name (and, for services,
    itself as the actor). `append` returns the event exactly as written."""

    trust: Identities
    bootstrap: str
    topics: Topics
    _producers: dict[str, EventProducer] = field(default_factory=dict)

    def principal_for(self, event: Envelope) -> str:
        return PRINCIPAL_OF_ROLE[OWNER[event.event_type]]

    async def producer(self, principal: str) -> EventProducer:
        p = self._producers.get(principal)
        if p is None:
            p = EventProducer(
                self.trust.settings(self.bootstrap, self.topics, principal),
                producer_name=f"test-{principal}",
            )
            await p.start()
            self._producers[principal] = p
        return p

    def stamp(self, event: Envelope, principal: str | None = None) -> Envelope:
        name = principal or self.principal_for(event)
        role = self.trust.keys.keyring.principals[name].role
        return restamp(event, name, role)

    async def append(
        self, event: Envelope, *, as_: str | None = None, topic: str | None = None
    ) -> Envelope:
        principal = as_ or self.principal_for(event)
        stamped = self.stamp(event, principal)
        await (await self.producer(principal)).append(stamped, topic=topic)
        return stamped

    async def append_many(self, events: Iterable[Envelope]) -> list[Envelope]:
        return [await self.append(e) for e in events]

    async def append_at(self, event: Envelope) -> tuple[Envelope, Position]:
        principal = self.principal_for(event)
        stamped = self.stamp(event, principal)
        return stamped, await (await self.producer(principal)).append(stamped)

    async def append_to_partition(self, event: Envelope, partition: int) -> Position:
        """Append `event` exactly as its rightful producer signs it (key = its incident),
        but onto an explicit `partition`: what another client's partitioner does. The
        record is trusted; only its place is wrong (`conn_runtime.partitioning`)."""
        principal = self.principal_for(event)
        stamped = self.stamp(event, principal)
        value = encode(stamped)
        headers = [*event_headers(stamped), *self.trust.keys.headers(value, principal)]
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", **self.trust.kafka_options(principal)
        )
        await producer.start()
        try:
            md = await producer.send_and_wait(
                self.topics.events,
                value,
                key=stamped.incident_id.encode(),
                headers=headers,
                partition=partition,
            )
        finally:
            await producer.stop()
        return Position(md.topic, md.partition, md.offset)

    async def stop(self) -> None:
        for p in self._producers.values():
            with contextlib.suppress(Exception):
                await p.stop()
        self._producers.clear()

    async def __aenter__(self) -> LedgerWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def api_principal() -> str:
    return PRINCIPAL_OF_ROLE[SignerRole.API]


_current: Identities | None = None


def set_current(identities: Identities) -> None:
    global _current
    _current = identities


def current() -> Identities:
    """The session's identities (set by the `trust` fixture), for helpers that read the
    log deep inside test support code."""
    if _current is None:
        raise RuntimeError("request the `trust` fixture (or a fixture that uses it) first")
    return _current
