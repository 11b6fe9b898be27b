"""One Orchestrator contract, run against three pairs of adapter and platform:

- the simulator adapter (httpx) against the simulator's Kubernetes-shaped API;
- the Kubernetes adapter (lightkube) against the same simulator API;
- the Kubernetes adapter against a REAL Kubernetes API server (etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler, KWOK's fake node; `fixtures_kube`), where the
  Deployment controller really creates ReplicaSets and scales pods.

The oracles are the platform's own records, read beside the adapter: `spec_changes` (the
simulator counts them in `metadata.generation`; on the real API server every restart is a new
ReplicaSet, whose pod template carries the directive's key, and a drain is the replica count
leaving its seeded value; `generation` there also moves on annotation-only writes), and
`write_marker`, which changes on any write the adapter could make (the simulator's
`resourceVersion`; on the real API server `metadata.generation`, which moves on every spec or
annotation change of a Deployment but not on the controllers' status updates).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import httpx2
import pytest
from adapter_support import SIM_TOKEN, Sim
from fixtures_kube import Kube

from conn_adapters.orchestrator import (
    RESTART_KEY,
    DeploymentOrchestrator,
    KubernetesOrchestrator,
    SimulatorOrchestrator,
)
from conn_core.ports import Orchestrator, PortError

POOL, TIER, REGION = "cache-invalidation", "pricing-cache", "us-east"


class Target(Protocol):
    """The platform behind the adapter, observed independently of it."""

    namespace: str
    tier_healthy_at_start: bool

    def settle(self) -> None:
        """Let the platform reconcile what was asked (time passes / rollouts finish)."""

    def deployment(self, name: str) -> dict[str, Any]: ...

    def spec_changes(self, name: str) -> int:
        """Drains and restarts the platform has seen on `name` since the test began."""

    def foreign_write(self, name: str) -> None:
        """Someone else writes the Deployment (an unrelated annotation)."""

    def write_marker(self, name: str) -> str:
        """Changes whenever anything but a controller's status update writes `name`."""


class SimTarget:
    namespace = REGION
    tier_healthy_at_start = False  # the seed outage: pricing-cache is failing in us-east

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.start = {name: self._generation(name) for name in (POOL, TIER)}

    def _generation(self, name: str) -> int:
        return int(self.deployment(name)["metadata"]["generation"])

    def spec_changes(self, name: str) -> int:
        return self._generation(name) - self.start[name]

    def write_marker(self, name: str) -> str:
        return str(self.deployment(name)["metadata"]["resourceVersion"])

    def _url(self, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}"

    def settle(self) -> None:
        self.sim.advance(60)

    def deployment(self, name: str) -> dict[str, Any]:
        return dict(self.sim.http.get(self._url(name), headers={"Authorization": SIM_TOKEN}).json())

    def foreign_write(self, name: str) -> None:
        body = {"metadata": {"annotations": {"other": "writer"}}}
        self.sim.http.patch(self._url(name), json=body, headers={"Authorization": SIM_TOKEN})


class KubeTarget:
    """A fresh namespace on the real API server with the pool (6) and the tier (3)."""

    tier_healthy_at_start = True

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.namespace = kube.create_namespace("orch")
        kube.create_deployment(self.namespace, POOL, 6)
        kube.create_deployment(self.namespace, TIER, 3)
        self.replicas = {POOL: 6, TIER: 3}
        self.settle()

    def spec_changes(self, name: str) -> int:
        templates = len(self.kube.replicasets(self.namespace, name)) - 1
        scaled = int(self.deployment(name)["spec"]["replicas"] != self.replicas[name])
        return templates + scaled

    def write_marker(self, name: str) -> str:
        return str(self.deployment(name)["metadata"]["generation"])

    def settle(self) -> None:
        for name in (POOL, TIER):
            self.kube.wait_rolled_out(self.namespace, name)

    def deployment(self, name: str) -> dict[str, Any]:
        return dict(self.kube.deployment(self.namespace, name))

    def foreign_write(self, name: str) -> None:
        body = {"metadata": {"annotations": {"other": f"writer-{uuid.uuid4().hex[:6]}"}}}
        self.kube.request(
            "PATCH", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}", body
        )

    def close(self) -> None:
        self.kube.delete_namespace(self.namespace)


class OrchestratorContract:
    async def test_implements_the_port(self, orch: Any) -> None:
        assert isinstance(orch, Orchestrator)

    async def test_reads_pool_and_tier(self, orch: Orchestrator, target: Target) -> None:
        pool = await orch.get_pool(POOL, REGION)
        assert (pool.desired_replicas, pool.ready_replicas, pool.drained) == (6, 6, False)
        tier = await orch.get_tier(TIER, REGION)
        assert (tier.healthy, tier.generation, tier.restarting) == (
            target.tier_healthy_at_start,
            0,
            False,
        )

    async def test_drain_pool(self, orch: Orchestrator, target: Target) -> None:
        result = await orch.drain_pool(POOL, REGION, idempotency_key="k-drain")
        assert result.changed and result.before["desired_replicas"] == 6
        assert result.after["desired_replicas"] == 0
        target.settle()  # the controller (or the simulator) takes the pods away
        pool = await orch.get_pool(POOL, REGION)
        assert pool.drained and pool.ready_replicas == 0
        assert target.spec_changes(POOL) == 1

    async def test_restart_tier(self, orch: Orchestrator, target: Target) -> None:
        result = await orch.restart_tier(TIER, REGION, idempotency_key="k-restart")
        # Right after the write the rollout is in progress, or (on a fast control plane)
        # already finished: never "nothing happened".
        assert result.changed
        assert result.after["restarting"] or result.after["generation"] == 1
        target.settle()
        tier = await orch.get_tier(TIER, REGION)
        assert (tier.healthy, tier.generation, tier.restarting) == (True, 1, False)
        assert target.spec_changes(TIER) == 1

    async def test_two_directed_restarts_within_one_second_both_restart(
        self, orch: Orchestrator, target: Target
    ) -> None:
        # `restartedAt` has one-second resolution (as with kubectl): without the
        # directive's key in the pod template, the second patch would change
        # nothing and yet be reported as a restart.
        first = await orch.restart_tier(TIER, REGION, idempotency_key="k-r1")
        target.settle()
        second = await orch.restart_tier(TIER, REGION, idempotency_key="k-r2")
        target.settle()
        assert first.changed and second.changed
        assert target.spec_changes(TIER) == 2
        assert (await orch.get_tier(TIER, REGION)).generation == 2

    async def test_same_key_twice_changes_nothing(self, orch: Orchestrator, target: Target) -> None:
        first = await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        rv_pool = target.write_marker(POOL)
        second = await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        assert target.write_marker(POOL) == rv_pool  # not a single write
        r1 = await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        rv_tier = target.write_marker(TIER)
        r2 = await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        assert target.write_marker(TIER) == rv_tier
        assert first.changed and not second.changed and r1.changed and not r2.changed
        target.settle()
        assert target.spec_changes(POOL) == 1
        assert target.spec_changes(TIER) == 1
        assert (await orch.get_tier(TIER, REGION)).generation == 1

    async def test_retries_a_409_with_a_fresh_resource_version(
        self, orch: DeploymentOrchestrator, target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_get = orch._get
        calls = 0

        async def racing_get(ns: str, name: str) -> dict[str, Any]:
            nonlocal calls
            d = await real_get(ns, name)
            calls += 1
            if calls == 1:  # someone else writes right after our read
                target.foreign_write(name)
            return d

        monkeypatch.setattr(orch, "_get", racing_get)
        result = await orch.restart_tier(TIER, REGION, idempotency_key="k-409")
        assert result.changed and calls >= 2
        target.settle()  # a real controller creates the new ReplicaSet asynchronously
        assert target.spec_changes(TIER) == 1

    async def test_unknown_deployment_is_a_port_error(self, orch: Orchestrator) -> None:
        with pytest.raises(PortError) as err:
            await orch.get_pool("no-such-pool", REGION)
        assert not err.value.retriable

    # -- recorded undo and dry run (issue 19) ---------------------------------------

    async def test_scale_pool_restores_the_size_before_a_drain(
        self, orch: Orchestrator, target: Target
    ) -> None:
        before = await orch.get_pool(POOL, REGION)
        await orch.drain_pool(POOL, REGION, idempotency_key="k-drain-u")
        target.settle()
        result = await orch.scale_pool(
            POOL, REGION, before.desired_replicas, idempotency_key="k-undo"
        )
        assert result.changed and result.before["desired_replicas"] == 0
        again = await orch.scale_pool(
            POOL, REGION, before.desired_replicas, idempotency_key="k-undo"
        )
        assert not again.changed
        target.settle()
        pool = await orch.get_pool(POOL, REGION)
        assert (pool.desired_replicas, pool.ready_replicas) == (6, 6)

    async def test_dry_run_changes_nothing(self, orch: Orchestrator, target: Target) -> None:
        markers = {name: target.write_marker(name) for name in (POOL, TIER)}
        drain = await orch.preview_scale(POOL, REGION, 0)
        assert drain.method == "server_dry_run" and drain.would_change
        assert [(c.path, c.before, c.after) for c in drain.changes] == [("spec.replicas", 6, 0)]
        restart = await orch.preview_restart(TIER, REGION)
        assert restart.method == "server_dry_run" and restart.would_change
        generation = next(c for c in restart.changes if c.path == "metadata.generation")
        assert generation.after == generation.before + 1  # what the server would store
        same = await orch.preview_scale(POOL, REGION, 6)
        assert not same.would_change
        target.settle()
        # The platform's own records: not a single write, no drain, no new rollout.
        assert {name: target.write_marker(name) for name in (POOL, TIER)} == markers
        assert target.spec_changes(POOL) == 0 and target.spec_changes(TIER) == 0
        pool = await orch.get_pool(POOL, REGION)
        assert (pool.desired_replicas, pool.ready_replicas) == (6, 6)
        assert (await orch.get_tier(TIER, REGION)).generation == 0


BAD_NAMES = ["a/b", "..", ".", "a.b", "Pricing", "x" * 64, "", "-a", "a-", "a b", "a%2Fb", "é"]


class NameSafetyContract:
    """Names that are not DNS-1123 labels never reach a URL: refused before any request."""

    @pytest.fixture
    def no_io(self, orch: DeploymentOrchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
        async def forbidden(*_args: Any, **_kw: Any) -> Any:
            raise AssertionError("an invalid name reached the transport")

        for method in ("_get", "_patch", "_patch_scale"):
            monkeypatch.setattr(orch, method, forbidden)

    @pytest.mark.parametrize("bad", BAD_NAMES)
    async def test_bad_target_names_are_refused_before_any_request(
        self, orch: DeploymentOrchestrator, no_io: None, bad: str
    ) -> None:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: orch.get_pool(bad, REGION),
            lambda: orch.get_tier(bad, REGION),
            lambda: orch.drain_pool(bad, REGION, idempotency_key="k"),
            lambda: orch.restart_tier(bad, REGION, idempotency_key="k"),
            lambda: orch.get_pool(POOL, bad),
            lambda: orch.restart_tier(TIER, bad, idempotency_key="k"),
        ]
        for call in calls:
            with pytest.raises(PortError, match="DNS-1123") as err:
                await call()
            assert not err.value.retriable

    @pytest.mark.parametrize("bad", ["a/b", "..", "UPPER", "x" * 64])
    def test_bad_names_in_the_mapping_are_refused_at_construction(self, bad: str) -> None:
        with pytest.raises(PortError, match="DNS-1123"):
            SimulatorOrchestrator("http://127.0.0.1:9", namespaces={"us-east": bad})
        with pytest.raises(PortError, match="DNS-1123"):
            SimulatorOrchestrator("http://127.0.0.1:9", deployments={POOL: bad})


class TestSimulatorOrchestrator(OrchestratorContract, NameSafetyContract):
    @pytest.fixture
    def target(self, sim: Sim) -> SimTarget:
        return SimTarget(sim)

    @pytest.fixture
    async def orch(self, sim: Sim) -> AsyncIterator[SimulatorOrchestrator]:
        adapter = SimulatorOrchestrator(sim.url, SIM_TOKEN, timeout=5)
        yield adapter
        await adapter.aclose()

    async def test_side_effects_are_attributed_to_their_keys(
        self, orch: Orchestrator, sim: Sim
    ) -> None:
        await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        await orch.drain_pool(POOL, REGION, idempotency_key="k-d")
        await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        await orch.restart_tier(TIER, REGION, idempotency_key="k-r")
        assert sim.side_effects() == {"k-d": 1, "k-r": 1}

    async def test_dry_run_counts_no_side_effect(self, orch: Orchestrator, sim: Sim) -> None:
        await orch.preview_scale(POOL, REGION, 0)
        await orch.preview_restart(TIER, REGION)
        assert sim.side_effects() == {}


@pytest.mark.integration
class TestKubernetesOrchestratorOnSimulator(OrchestratorContract, NameSafetyContract):
    """lightkube against the simulator's Kubernetes-shaped API (404, 409, /scale)."""

    @pytest.fixture
    def target(self, sim: Sim) -> SimTarget:
        return SimTarget(sim)

    @pytest.fixture
    async def orch(self, sim: Sim) -> AsyncIterator[KubernetesOrchestrator]:
        adapter = KubernetesOrchestrator(sim.url, SIM_TOKEN, timeout=5)
        yield adapter
        await adapter.aclose()


@pytest.fixture
def kube_target(kube: Kube) -> Iterator[KubeTarget]:
    t = KubeTarget(kube)
    yield t
    t.close()


@pytest.mark.integration
@pytest.mark.kube
class TestKubernetesOrchestratorOnRealApiServer(OrchestratorContract):
    """The same contract against a real API server and real controllers."""

    @pytest.fixture
    def target(self, kube_target: KubeTarget) -> KubeTarget:
        return kube_target

    @pytest.fixture
    async def orch(
        self, kube: Kube, kube_target: KubeTarget
    ) -> AsyncIterator[KubernetesOrchestrator]:
        adapter = KubernetesOrchestrator(
            kubeconfig=str(kube.kubeconfig),
            namespaces={REGION: kube_target.namespace},
            timeout=10,
        )
        yield adapter
        await adapter.aclose()

    # --- what only a real API server can show ------------------------------------------

    async def test_each_directed_restart_is_one_new_replicaset_carrying_its_key(
        self, orch: Orchestrator, kube: Kube, kube_target: KubeTarget
    ) -> None:
        ns = kube_target.namespace
        assert len(kube.replicasets(ns, TIER)) == 1
        for key in ("k-a", "k-a", "k-b", "k-b", "k-a"):
            await orch.restart_tier(TIER, REGION, idempotency_key=key)
            kube_target.settle()
        sets = kube.replicasets(ns, TIER)
        keys = [
            ((rs["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTART_KEY))
            for rs in sets
        ]
        assert sorted(k or "-" for k in keys) == ["-", "k-a", "k-b"]
        # The new ReplicaSet runs the pods; the original is scaled to zero.
        live = [rs for rs in sets if rs["spec"]["replicas"]]
        assert len(live) == 1
        assert live[0]["spec"]["template"]["metadata"]["annotations"][RESTART_KEY] == "k-b"

    async def test_drain_is_reconciled_by_the_controller(
        self, orch: Orchestrator, kube: Kube, kube_target: KubeTarget
    ) -> None:
        ns = kube_target.namespace
        await orch.drain_pool(POOL, REGION, idempotency_key="k-drain")
        kube.wait_for(
            "the pool's pods to be gone",
            lambda: (
                not kube.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{POOL}")["items"]
            ),
        )
        (rs,) = kube.replicasets(ns, POOL)
        assert rs["spec"]["replicas"] == 0
        kube.wait_for(
            "the ReplicaSet to report no replicas",
            lambda: not kube.replicasets(ns, POOL)[0]["status"].get("replicas"),
        )

    async def test_paused_deployment_refuses_restart_and_writes_nothing(
        self, orch: Orchestrator, kube: Kube, kube_target: KubeTarget
    ) -> None:
        ns = kube_target.namespace
        path = f"/apis/apps/v1/namespaces/{ns}/deployments/{TIER}"
        kube.request("PATCH", path, {"spec": {"paused": True}})
        rv = kube_target.write_marker(TIER)
        with pytest.raises(PortError, match="paused") as err:
            await orch.restart_tier(TIER, REGION, idempotency_key="k-paused")
        assert not err.value.retriable
        assert kube_target.write_marker(TIER) == rv
        assert len(kube.replicasets(ns, TIER)) == 1

    async def test_a_role_without_patch_is_a_clear_non_retriable_denial(
        self, kube: Kube, kube_target: KubeTarget
    ) -> None:
        ns = kube_target.namespace
        sa = "conn-executor-readonly"
        kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": sa}})
        rules = [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments", "deployments/scale"],
                "verbs": ["get"],
            }
        ]
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
        kube.request("POST", f"{rbac}/roles", {"metadata": {"name": sa}, "rules": rules})
        binding = {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }
        kube.request("POST", f"{rbac}/rolebindings", binding)
        adapter = KubernetesOrchestrator(
            kube.server,
            kube.service_account_token(ns, sa),
            ca_file=str(kube.ca_file),
            namespaces={REGION: ns},
            timeout=10,
        )
        try:
            assert (await adapter.get_tier(TIER, REGION)).generation == 0  # get is allowed
            rv_tier = kube_target.write_marker(TIER)
            rv_pool = kube_target.write_marker(POOL)
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: adapter.restart_tier(TIER, REGION, idempotency_key="k-denied"),
                lambda: adapter.drain_pool(POOL, REGION, idempotency_key="k-denied"),
            ]
            for call in calls:
                with pytest.raises(PortError) as err:
                    await call()
                assert not err.value.retriable
                assert "not authorized" in str(err.value) and "patch" in str(err.value)
            assert kube_target.write_marker(TIER) == rv_tier
            assert kube_target.write_marker(POOL) == rv_pool
        finally:
            await adapter.aclose()

    async def test_bad_names_never_leave_the_process(
        self, orch: KubernetesOrchestrator, kube_target: KubeTarget
    ) -> None:
        sent: list[str] = []
        inner = orch._transport.inner

        class Counting(httpx2.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                sent.append(str(request.url))
                return await inner.handle_async_request(request)

        orch._transport.inner = Counting()
        for bad in BAD_NAMES:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: orch.get_tier(bad, REGION),  # noqa: B023 - called right here
                lambda: orch.restart_tier(bad, REGION, idempotency_key="k"),  # noqa: B023
                lambda: orch.drain_pool(POOL, bad, idempotency_key="k"),  # noqa: B023
            ]
            for call in calls:
                with pytest.raises(PortError, match="DNS-1123"):
                    await call()
        assert sent == []
        await orch.get_tier(TIER, REGION)  # the counter does see real requests
        assert len(sent) == 1 and sent[0].endswith(f"/deployments/{TIER}")

    async def test_unknown_credentials_are_a_clear_non_retriable_error(
        self, kube: Kube, kube_target: KubeTarget
    ) -> None:
        adapter = KubernetesOrchestrator(
            kube.server,
            "not-a-token",
            ca_file=str(kube.ca_file),
            namespaces={REGION: kube_target.namespace},
            timeout=10,
        )
        try:
            with pytest.raises(PortError, match="401") as err:
                await adapter.get_tier(TIER, REGION)
            assert not err.value.retriable
        finally:
            await adapter.aclose()
