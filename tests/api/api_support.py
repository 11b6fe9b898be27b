"""Helpers for directive API tests: run the app in-process on real Kafka + PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from kafka_support import current

from conn_api.app import create_app
from conn_api.config import ApiSettings, Settings
from conn_api.runtime import Runtime
from conn_runtime.settings import DatabaseSettings, KafkaSettings, Topics
from conn_schemas.codec import UnreadableRecord
from conn_schemas.events import Envelope

ROOT = Path(__file__).resolve().parents[2]
DEV_TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())
TOKENS_FILE = ROOT / "deploy" / "local" / "tokens.yaml"


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {DEV_TOKENS[who]}"}


def settings_for(bootstrap: str, topics: Topics, dsn: str, **api: Any) -> Settings:
    """The API in-process, logged in and signing as the directive-api principal."""
    kafka: KafkaSettings = current().settings(bootstrap, topics, "directive-api")
    return Settings(
        api=ApiSettings(conn_api_tokens_file=TOKENS_FILE, **api),
        kafka=kafka,
        database=DatabaseSettings(database_url=dsn),
    )


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    settings: Settings

    async def post(self, path: str, who: str, json: Any = None, **kw: Any) -> httpx.Response:
        headers = {**auth(who), **kw.pop("headers", {})}
        return await self.client.post(path, json=json, headers=headers, **kw)

    async def get(self, path: str, who: str = "olive", **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=auth(who), **kw)

    async def open_incident(self, service: str = "checkout", runbook: bool = True) -> str:
        r = await self.post(
            "/v1/incidents", "alice", {"title": "checkout failing", "service": service}
        )
        assert r.status_code == 201, r.text
        incident = str(r.json()["incident_id"])
        if runbook:
            r = await self.post(
                f"/v1/incidents/{incident}/authority", "alice", {"runbook": "checkout-authority"}
            )
            assert r.status_code == 201, r.text
        return incident

    async def position(self, incident: str) -> int:
        r = await self.get(f"/v1/incidents/{incident}")
        assert r.status_code == 200, r.text
        return int(r.json()["sequence"])

    async def direct(
        self,
        incident: str,
        who: str,
        action: dict[str, Any],
        based_on: int | None = None,
        **kw: Any,
    ) -> httpx.Response:
        if based_on is None:
            based_on = await self.position(incident)
        body = {"action": action, "based_on_sequence": based_on, **kw.pop("extra", {})}
        return await self.post(f"/v1/incidents/{incident}/directives", who, body, **kw)


def runtime(api: Api) -> Runtime:
    """The started runtime of an in-process API."""
    rt = api.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


async def unacknowledged_attempt(
    api: Api, incident: str, action: dict[str, Any], based_on: int, key: dict[str, str]
) -> httpx.Response:
    """alice's directive whose DirectiveIssued is sent but never acknowledged in time (the
    producer's acknowledgement timeout set to 0 for this one request): answered 503
    `outcome_unknown`. Returns that answer."""
    rt = runtime(api)
    timeout = rt.producer.send_timeout
    rt.producer.send_timeout = 0  # no acknowledgement is ever in time
    try:
        first = await api.direct(incident, "alice", action, based_on=based_on, headers=key)
    finally:
        rt.producer.send_timeout = timeout
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "outcome_unknown"
    return first


async def issued_ids(bootstrap: str, api: Api, incident: str) -> list[str | None]:
    """The correlation ids of the incident's DirectiveIssued, read straight from Kafka."""
    log = await read_log(bootstrap, runtime(api).view.topics.events)
    return [e.correlation_id for e in of_incident(log, incident, "DirectiveIssued")]


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as c:
            # The API serves at once and connects in the background: wait until it is ready.
            deadline = asyncio.get_running_loop().time() + 60
            while (await c.get("/readyz")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "API not ready in 60s"
                await asyncio.sleep(0.05)
            yield Api(c, app, settings)


async def read_log(bootstrap: str, topic: str) -> list[Envelope]:
    """Every trusted event on `topic`, read straight from Kafka (independent of the API's
    fold) as the read-only SRE principal."""
    identities = current()
    trust = identities.reader(
        bootstrap, topic.removesuffix("conn.events").removesuffix("conn.control")
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **identities.kafka_options("sre"),
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
        out: list[tuple[int, int, Envelope]] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            assert loop.time() < deadline, "could not read the log"
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    try:
                        out.append((tp.partition, r.offset, trust.open(r).event))
                    except UnreadableRecord:
                        continue
        return [e for _, _, e in sorted(out, key=lambda x: (x[0], x[1]))]
    finally:
        await consumer.stop()


def of_incident(events: list[Envelope], incident: str, event_type: str | None = None) -> list[Any]:
    return [
        e
        for e in events
        if e.incident_id == incident and (event_type is None or e.event_type == event_type)
    ]


@dataclass
class Alertmanager:
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


AlertmanagerFactory = Callable[..., Alertmanager]
