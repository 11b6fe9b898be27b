"""The broker authenticates and authorizes (DESIGN.md: "The broker itself authenticates
clients (SASL) and authorizes them (ACLs)"), on the real local broker with the
production ACLs of `conn_runtime.acls` on this test's topics:

- a client without credentials, or with a wrong password, is refused;
- only the API writes conn.control (not the verifier, not an integration);
- only Conn principals write conn.events (not the read-only SRE principal);
- only the executor joins the executor's consumer group.

Each refusal has a positive twin (the entitled principal succeeds), so these tests
fail if the broker simply refused everyone.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from kafka_support import Identities, prefix_of

from conn_runtime.settings import Topics

pytestmark = pytest.mark.integration

DENIED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
"""A principal with no write ACL anywhere is refused already when the idempotent
producer asks for its id (cluster IDEMPOTENT_WRITE), before naming a topic."""


@pytest.fixture(autouse=True)
def _sasl_only(trust: Identities) -> None:
    if not trust.sasl:
        # Only ever on request (CONN_TEST_KAFKA=docker): otherwise the next test fails.
        assert os.environ.get("CONN_TEST_KAFKA") == "docker", "PLAINTEXT broker not asked for"
        pytest.skip("the broker is a PLAINTEXT testcontainer: no SASL, no ACLs")


def test_the_session_broker_authenticates_unless_told_otherwise(
    kafka_bootstrap: str, trust: Identities, service_sources: dict[str, str]
) -> None:
    """The suite (and CI) runs on an authenticated broker even where a Docker daemon
    answers: a PLAINTEXT testcontainer is used only when CONN_TEST_KAFKA=docker."""
    assert trust.sasl and service_sources["kafka"] != "docker", service_sources


async def _write(bootstrap: str, topic: str, **login: Any) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
        **login,
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"{}", key=b"_global")
    finally:
        await producer.stop()


async def _join(bootstrap: str, topic: str, group: str, **login: Any) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        **login,
    )
    try:
        await consumer.start()
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
    finally:
        await consumer.stop()


async def test_a_client_without_credentials_cannot_write_conn_control(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        async with asyncio.timeout(30):
            await _write(kafka_bootstrap, conn_topics.control)
    wrong = {**trust.kafka_options("directive-api"), "sasl_plain_password": "not-the-password"}
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        async with asyncio.timeout(30):
            await _write(kafka_bootstrap, conn_topics.control, **wrong)
    unknown = {**trust.kafka_options("sre"), "sasl_plain_username": "mallory"}
    with pytest.raises((KafkaConnectionError, KafkaError, asyncio.TimeoutError)):
        async with asyncio.timeout(30):
            await _write(kafka_bootstrap, conn_topics.control, **unknown)


@pytest.mark.parametrize("principal", ["verifier", "executor", "example-integration", "sre"])
async def test_only_the_api_writes_conn_control(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities, principal: str
) -> None:
    with pytest.raises(DENIED):
        await _write(kafka_bootstrap, conn_topics.control, **trust.kafka_options(principal))
    await _write(kafka_bootstrap, conn_topics.control, **trust.kafka_options("directive-api"))


async def test_only_conn_principals_write_conn_events(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    with pytest.raises(DENIED):
        await _write(kafka_bootstrap, conn_topics.events, **trust.kafka_options("sre"))
    for principal in ("directive-api", "executor", "verifier", "packager", "example-integration"):
        await _write(kafka_bootstrap, conn_topics.events, **trust.kafka_options(principal))
    with pytest.raises(TopicAuthorizationFailedError):
        await _write(kafka_bootstrap, conn_topics.takeover, **trust.kafka_options("executor"))


@pytest.mark.parametrize("principal", ["verifier", "example-integration", "directive-api", "sre"])
async def test_only_the_executor_joins_the_executor_group(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities, principal: str
) -> None:
    group = f"{prefix_of(conn_topics)}conn-executor"
    with pytest.raises(GroupAuthorizationFailedError):
        await _join(kafka_bootstrap, conn_topics.events, group, **trust.kafka_options(principal))
    await _join(kafka_bootstrap, conn_topics.events, group, **trust.kafka_options("executor"))
