"""Small helpers of the security tier, kept apart from the unit tier's (builders,
trust_support) so this tier does not share their blind spots: its own forging key,
its own raw producer and dead-letter reader, its own request helpers."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from api.api_support import DEV_TOKENS  # the dev token file the API loads (data only)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conn_schemas.signing import KEY_ID_HEADER, SIGNATURE_HEADER

TOKENS: dict[str, str] = dict(DEV_TOKENS)
"""alice: commander (holds the conn after declaring), dana: database-platform
specialist, rob: specialist of another team, olive: observer, alertbot: integration,
root: admin."""


def as_(who: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}


def sign_with(value: bytes, key: Ed25519PrivateKey, key_id: str) -> list[tuple[str, bytes]]:
    """Signature headers as the wire carries them, computed here from first principles."""
    return [
        (SIGNATURE_HEADER, base64.b64encode(key.sign(value))),
        (KEY_ID_HEADER, key_id.encode()),
    ]


@dataclass
class RawWriter:
    """Writes raw bytes onto a topic with chosen headers: a client that got broker
    access (its own login) and tries to write what it is not entitled to."""

    bootstrap: str
    options: dict[str, Any]

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", **self.options)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        finally:
            await producer.stop()


async def raw_records(bootstrap: str, topic: str, options: dict[str, Any]) -> list[Any]:
    """Every record on `topic`, as consumed (value, key, headers, topic...), unverified."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not consumer.assignment():
            assert loop.time() < deadline, "no partitions assigned"
            await consumer.getmany(timeout_ms=100)
        parts = list(consumer.assignment())
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        out: list[Any] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            assert loop.time() < deadline, f"could not read {topic}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()
