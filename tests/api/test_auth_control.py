"""Authentication (tokens, JWT), role checks, config refusals, takeover and stops."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from api_support import TOKENS_FILE, Api, running_api, settings_for
from cryptography.hazmat.primitives.asymmetric import rsa
from kafka_support import current

from conn_api.auth import Authenticator
from conn_api.config import ApiSettings, ConfigError
from conn_readmodel.packet import build_packet, packet_sha256
from conn_runtime.kafka import EventProducer
from conn_runtime.stops import GLOBAL_SCOPE, active_stop
from conn_schemas.events import TakeoverPacketPublished, TakeoverPacketPublishedPayload, new_event
from conn_schemas.values import Actor


def _shape(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["code"] == code


async def test_401_and_403(api: Api) -> None:
    _shape(await api.client.get("/v1/incidents"), 401, "unauthorized")
    r = await api.client.get("/v1/incidents", headers={"Authorization": "Bearer not-a-token"})
    _shape(r, 401, "unauthorized")
    assert "Bearer" in r.headers["www-authenticate"]
    _shape(
        await api.post("/v1/incidents", "olive", {"title": "t", "service": "s"}), 403, "forbidden"
    )
    _shape(await api.post("/v1/kill-switch/engage", "alice", {"reason": "r"}), 403, "forbidden")
    inc = await api.open_incident()
    _shape(await api.post(f"/v1/incidents/{inc}/hold", "olive", {}), 403, "role_may_not_direct")
    _shape(await api.post(f"/v1/incidents/{inc}/resume", "dana", {}), 403, "not_conn_holder")
    _shape(await api.post("/v1/incidents", "alice", {"title": "t"}), 422, "invalid_request")


def test_config_refuses_placeholders_outside_development(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PAGERDUTY"):
        ApiSettings(conn_env="production", conn_api_tokens_file=TOKENS_FILE)
    prod = ApiSettings(
        conn_env="production",
        conn_api_tokens_file=TOKENS_FILE,
        conn_pagerduty_webhook_secret="a-real-secret-0f9e8d7c",
    )
    with pytest.raises(ConfigError, match="development-only"):
        Authenticator.from_settings(prod)
    own = tmp_path / "tokens.yaml"
    own.write_text(TOKENS_FILE.read_text().replace("development_only: true", ""))
    auth = Authenticator.from_settings(prod.model_copy(update={"conn_api_tokens_file": own}))
    assert auth.by_hash  # the same hashes, in a file not marked development-only


async def test_jwt_against_local_jwks(
    tmp_path: Path, kafka_bootstrap: str, conn_topics: Any, fresh_database: str
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    settings = settings_for(
        kafka_bootstrap,
        conn_topics,
        fresh_database,
        conn_api_jwks_file=jwks,
        conn_api_jwt_issuer="https://idp.example",
        conn_api_jwt_audience="conn",
    )

    def token(**claims: Any) -> str:
        base = {
            "sub": "carol",
            "roles": ["commander"],
            "iss": "https://idp.example",
            "aud": "conn",
            "exp": int(time.time()) + 300,
        }
        return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": "k1"})

    async with running_api(settings) as api:
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token()}"})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "id": "carol",
            "roles": ["commander"],
            "team": None,
            "kind": "human",
            "via": "jwt",
        }
        for bad in (token(exp=int(time.time()) - 10), token(aud="other")):
            r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
            _shape(r, 401, "unauthorized")
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(
            {"sub": "carol", "exp": int(time.time()) + 60},
            other,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        _shape(
            await api.client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}),
            401,
            "unauthorized",
        )


async def test_takeover_moves_the_conn(api: Api, fresh_database: str) -> None:
    inc = await api.open_incident()
    r = await api.post(f"/v1/incidents/{inc}/handoff", "alice", {"to_team": "database-platform"})
    assert r.status_code == 200, r.text
    # no default packet: the exact hash is required
    _shape(await api.post(f"/v1/incidents/{inc}/takeover", "dana", {}), 422, "invalid_request")
    # accepting before any packet exists is refused
    _shape(
        await api.post(f"/v1/incidents/{inc}/takeover", "dana", {"packet_sha256": "ab" * 32}),
        422,
        "invalid_base_position",
    )
    # The packet as the packager builds and publishes it (its own login and key): the
    # content of the incident's state now, its exact hash and the ledger head it
    # describes. (Not a made-up hash: issue 15.)
    view = api.app.state.runtime.view
    state = copy.deepcopy(view.state(inc))
    head = view.ledger(inc)[-1]
    assert head.sequence == state.sequence
    packet = build_packet(
        state,
        head_hash=head.hash,
        trigger="handoff",
        to_team="database-platform",
        generated_at=datetime.now(UTC),
    )
    sha = packet_sha256(packet)
    packager = current().settings(
        api.settings.kafka.kafka_bootstrap_servers, api.settings.kafka.topics, "packager"
    )
    producer = EventProducer(packager, producer_name="test-packager")
    await producer.start()
    try:
        event = new_event(
            TakeoverPacketPublished,
            incident_id=inc,
            payload=TakeoverPacketPublishedPayload(
                packet_id=packet.packet_id,
                packet_sha256=sha,
                to_team="database-platform",
                trigger="handoff",
                ledger_sequence=state.sequence,
                ledger_hash=head.hash,
            ),
            actor=Actor.service("packager"),
            producer="packager",
        )
        pos = await producer.append(event)
    finally:
        await producer.stop()
    assert await api.app.state.runtime.view.wait_applied(pos, 10)
    r = await api.get(f"/v1/incidents/{inc}/packet")
    assert r.status_code == 200 and r.json()["packet_sha256"] == sha
    # rob is a specialist, but of another team; a stale packet hash is refused
    _shape(
        await api.post(
            f"/v1/incidents/{inc}/takeover",
            "rob",
            {"team": "database-platform", "packet_sha256": sha},
        ),
        403,
        "role_may_not_direct",
    )
    _shape(
        await api.post(f"/v1/incidents/{inc}/takeover", "dana", {"packet_sha256": "cd" * 32}),
        409,
        "stale_base_position",
    )
    r = await api.post(f"/v1/incidents/{inc}/takeover", "dana", {"packet_sha256": sha})
    assert r.status_code == 200, r.text
    assert r.json()["holder"] == "dana"
    orders = {"action": "restart_dependency_tier", "tier": "orders-db", "region": "us-east"}
    r = await api.direct(inc, "alice", orders)
    _shape(r, 403, "not_conn_holder")
    r = await api.direct(inc, "dana", orders)
    assert r.status_code == 202, r.text


async def test_hold_and_kill_switch_write_the_stops(api: Api) -> None:
    pool = api.app.state.runtime.db
    inc = await api.open_incident()
    assert await active_stop(pool, inc) is None
    assert (
        await api.post(f"/v1/incidents/{inc}/hold", "dana", {"detail": "stop"})
    ).status_code == 200
    stop = await active_stop(pool, inc)
    assert stop is not None and stop.scope == inc
    _shape(await api.post(f"/v1/incidents/{inc}/resume", "dana", {}), 403, "not_conn_holder")
    assert (await api.post(f"/v1/incidents/{inc}/resume", "alice", {})).status_code == 200
    assert await active_stop(pool, inc) is None
    assert (
        await api.post("/v1/kill-switch/engage", "root", {"reason": "drill"})
    ).status_code == 200
    stop = await active_stop(pool, inc)
    assert stop is not None and stop.scope == GLOBAL_SCOPE
    r = await api.get("/v1/control")
    assert r.json()["kill_switch"] is True
    assert (
        await api.post("/v1/kill-switch/release", "root", {"reason": "over"})
    ).status_code == 200
    assert await active_stop(pool, inc) is None
    metrics = (await api.client.get("/metrics")).text
    assert 'conn_api_control_total{outcome="accepted",verb="hold"}' in metrics
