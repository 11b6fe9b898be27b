"""One Orchestrator contract, run against the simulator adapter (httpx) and the
Kubernetes adapter (lightkube), both against the simulator's apps/v1 API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from adapter_support import SIM_TOKEN, Sim

from conn_adapters.orchestrator import (
    DeploymentOrchestrator,
    KubernetesOrchestrator,
    SimulatorOrchestrator,
)
from conn_core.ports import Orchestrator, PortError

POOL, TIER, REGION = "cache-invalidation", "pricing-cache", "us-east"


class OrchestratorContract:
    async def test_implements_the_port(self, orch: Any) -> None:
        assert isinstance(orch, Orchestrator)

    async def test_reads_pool_and_tier(self, orch: Orchestrator) -> None:
        pool = await orch.get_pool(POOL, REGION)
        assert (pool.desired_replicas, pool.ready_replicas, pool.drained) == (6, 6, False)
        tier = await orch.get_tier(TIER, REGION)
        assert (tier.healthy, tier.generation, tier.restarting) == (False, 0, False)

    async def test_drain_pool(self, orch: Orchestrator, sim: Sim) -> None:
        result = await orch.drain_pool(POOL, REGION, idempotency_key="k-drain")
        assert result.changed and result.before["desired_replicas"] == 6
        assert result.after["desired_replicas"] == 0
        sim.advance(60)
        assert (await orch.get_pool(POOL, REGION)).drained

    async def test_restart_tier(self, orch: Orchestrator, sim: Sim) -> None:
        result = await orch.restart_tier(TIER, REGION, idempotency_key="k-restart")
        assert result.changed and result.after["restarting"]
        sim.advance(60)
        tier = await orch.get_tier(TIER, REGION)
        assert (tier.healthy, tier.generation, tier.restarting) == (True, 1, False)

    async def test_two_directed_restarts_within_one_second_both_restart(
        self, orch: Orchestrator, sim: Sim
    ) -> None:
        # `restartedAt` has one-second resolution (as with kubectl): without the
        # directive's key in the pod template, the second patch would change
        # nothing and yet be reported as a restart.
        first = await orch.restart_tier(TIER, REGION, idempotency_key="k-r1")
        sim.advance(60)
        second = await orch.restart_tier(TIER, REGION, idempotency_key="k-r2")
        sim.advance(60)
        assert first.changed and second.changed
        assert sim.side_effects() == {"k-r1": 1, "k-r2": 1}
        assert (await orch.get_tier(TIER, REGION)).generation == 2

    async def test_same_key_twice_changes_nothing(self, orch: Orchestrator, sim: Sim) -> None:
        first = await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        mid = sim.state()
        second = await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        r1 = await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        r2 = await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        assert first.changed and not second.changed and r1.changed and not r2.changed
        assert mid["pools"] == sim.state()["pools"]
        assert sim.side_effects() == {"k-d": 1, "k-r": 1}
        sim.advance(60)
        assert (await orch.get_tier(TIER, REGION)).generation == 1

    async def test_retries_a_409_with_a_fresh_resource_version(
        self, orch: DeploymentOrchestrator, sim: Sim, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_get = orch._get
        calls = 0

        async def racing_get(ns: str, name: str) -> dict[str, Any]:
            nonlocal calls
            d = await real_get(ns, name)
            calls += 1
            if calls == 1:  # someone else writes right after our read
                body = {"metadata": {"annotations": {"other": "writer"}}}
                url = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
                sim.http.patch(url, json=body, headers={"Authorization": SIM_TOKEN})
            return d

        monkeypatch.setattr(orch, "_get", racing_get)
        result = await orch.restart_tier(TIER, REGION, idempotency_key="k-409")
        assert result.changed and calls >= 2
        assert sim.side_effects() == {"k-409": 1}

    async def test_unknown_deployment_is_a_port_error(self, orch: Orchestrator) -> None:
        with pytest.raises(PortError) as err:
            await orch.get_pool("no-such-pool", REGION)
        assert not err.value.retriable


class TestSimulatorOrchestrator(OrchestratorContract):
    @pytest.fixture
    async def orch(self, sim: Sim) -> AsyncIterator[SimulatorOrchestrator]:
        adapter = SimulatorOrchestrator(sim.url, SIM_TOKEN, timeout=5)
        yield adapter
        await adapter.aclose()


@pytest.mark.integration
class TestKubernetesOrchestrator(OrchestratorContract):
    """lightkube against the simulator's Kubernetes-shaped API (404, 409, /scale)."""

    @pytest.fixture
    async def orch(self, sim: Sim) -> AsyncIterator[KubernetesOrchestrator]:
        adapter = KubernetesOrchestrator(sim.url, SIM_TOKEN, timeout=5)
        yield adapter
        await adapter.aclose()
