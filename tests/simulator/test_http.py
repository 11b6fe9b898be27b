"""The simulator's HTTP shell, in-process (no ticker: time moves by /sim/advance)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from conn_simulator.app import create_app

T = {"Authorization": "sim-admin-token"}
DEP = "/apis/apps/v1/namespaces/us-east/deployments"
FEATURE = "/api/admin/projects/default/features/checkout-pricing"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("seed_outage", 7, speed=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as c:
        yield c


async def test_metrics_exposition(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    for name in (
        'checkout_error_ratio{region="us-east"}',
        'checkout_queue_depth{region="eu-west"}',
        'checkout_requests_total{region="us-east"}',
        "checkout_metrics_updated_timestamp_seconds",
        'checkout_flag_rule_enabled{flag="checkout-pricing",region="eu-west",rule="canary-10pct"}',
        "checkout_worker_pool_replicas",
        "checkout_tier_healthy",
        "checkout_tier_generation",
    ):
        assert name in text


async def test_auth_404_and_409(client: httpx.AsyncClient) -> None:
    assert (await client.get(FEATURE)).status_code == 401
    assert (await client.get(DEP + "/nope", headers=T)).json()["reason"] == "NotFound"
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 0}}
    r = await client.patch(DEP + "/cache-invalidation/scale", json=stale, headers=T)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"


async def test_unleash_shape_and_side_effects(client: httpx.AsyncClient) -> None:
    feature = (await client.get(FEATURE, headers=T)).json()
    env = next(e for e in feature["environments"] if e["name"] == "eu-west")
    canary = next(s for s in env["strategies"] if s["title"] == "canary-10pct")
    assert canary["disabled"] is False
    url = f"{FEATURE}/environments/eu-west/strategies/{canary['id']}"
    ops = [{"op": "replace", "path": "/disabled", "value": True}]
    for _ in range(2):
        r = await client.patch(url, json=ops, headers=T | {"Idempotency-Key": "k"})
        assert r.json()["disabled"] is True
    assert (await client.get("/sim/side-effects")).json() == {"k": 1}


async def test_rollout_restart_bumps_revision_and_generation(client: httpx.AsyncClient) -> None:
    d = (await client.get(DEP + "/pricing-cache", headers=T)).json()
    patch = {
        "metadata": {"resourceVersion": d["metadata"]["resourceVersion"]},
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}}}
        },
    }
    d2 = (await client.patch(DEP + "/pricing-cache", json=patch, headers=T)).json()
    assert d2["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d2["status"]["updatedReplicas"] < d2["spec"]["replicas"]
    await client.post("/sim/advance", json={"seconds": 60})
    state = (await client.get("/sim/state")).json()
    tier = next(
        t for t in state["tiers"] if (t["tier"], t["region"]) == ("pricing-cache", "us-east")
    )
    assert tier["generation"] == 1 and tier["healthy"] and not tier["restarting"]


async def test_incident_record_webhook_dedupes(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        r = await client.post(
            "/sim/incident-record", json={"text": "hi"}, headers={"Idempotency-Key": "n1"}
        )
    assert r.json()["duplicate"] is True
    assert len((await client.get("/sim/incident-record")).json()) == 1


async def test_frozen_scenario_freezes_exposition(client: httpx.AsyncClient) -> None:
    await client.post("/sim/reset", json={"scenario": "frozen_metrics", "seed": 7, "speed": 0})
    await client.post("/sim/advance", json={"seconds": 130})
    first = (await client.get("/metrics")).text
    await client.post("/sim/advance", json={"seconds": 60})
    assert (await client.get("/metrics")).text == first
