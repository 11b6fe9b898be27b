"""The verifier's control-plane check reads the real rollout status from a real Kubernetes
API server (through the Kubernetes adapter, with a get-only identity): a restarted tier
matches only once the Deployment controller has rolled it out, a rollout that cannot progress
(a paused Deployment with a changed template) never matches, and a drained pool matches once
its pods are gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fixtures_kube import Kube

from conn_adapters.orchestrator import KubernetesOrchestrator
from conn_schemas.values import DrainWorkerPool, RestartDependencyTier
from conn_verifier.plan import Expected
from conn_verifier.verify import ReadPorts, check_control_plane

pytestmark = [pytest.mark.integration, pytest.mark.kube]

REGION, TIER, POOL = "us-east", "pricing-cache", "cache-invalidation"


@pytest.fixture
def target(kube: Kube) -> Any:
    ns = kube.create_namespace("verify")
    kube.create_deployment(ns, TIER, 3)
    kube.create_deployment(ns, POOL, 2)
    kube.wait_rolled_out(ns, TIER)
    kube.wait_rolled_out(ns, POOL)
    yield ns
    kube.delete_namespace(ns)


@pytest.fixture
async def ports(kube: Kube, target: str) -> AsyncIterator[ReadPorts]:
    # The verifier's own shape of identity: a ServiceAccount that may only `get` Deployments.
    sa = "conn-verifier"
    kube.request("POST", f"/api/v1/namespaces/{target}/serviceaccounts", {"metadata": {"name": sa}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{target}"
    rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]
    kube.request("POST", f"{rbac}/roles", {"metadata": {"name": sa}, "rules": rules})
    kube.request(
        "POST",
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": target}],
        },
    )
    orch = KubernetesOrchestrator(
        kube.server,
        kube.service_account_token(target, sa),
        ca_file=str(kube.ca_file),
        namespaces={REGION: target},
        timeout=10,
    )
    yield ReadPorts(flags=None, orchestrator=orch, metrics=None)  # type: ignore[arg-type]
    await orch.aclose()


def _restart_template(kube: Kube, ns: str, name: str, value: str) -> None:
    """A rollout restart done by someone else (what the executor's step does)."""
    body = {"spec": {"template": {"metadata": {"annotations": {"test/restart": value}}}}}
    kube.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", body)


async def test_restarted_tier_matches_once_rolled_out(
    kube: Kube, target: str, ports: ReadPorts
) -> None:
    expected = Expected(RestartDependencyTier(tier=TIER, region=REGION), generation_before=0)
    before = await check_control_plane(expected, ports)
    assert not before.matches and "generation 0" in before.observed  # not restarted yet
    _restart_template(kube, target, TIER, "1")
    kube.wait_rolled_out(target, TIER)
    after = await check_control_plane(expected, ports)
    assert after.matches, after
    assert after.observed == "generation 1, healthy=true, restarting=false"


async def test_a_rollout_that_cannot_progress_never_matches(
    kube: Kube, target: str, ports: ReadPorts
) -> None:
    path = f"/apis/apps/v1/namespaces/{target}/deployments/{TIER}"
    kube.request("PATCH", path, {"spec": {"paused": True}})
    _restart_template(kube, target, TIER, "paused")

    def observed() -> bool:
        d = kube.deployment(target, TIER)
        return int(d["status"].get("observedGeneration") or 0) >= int(d["metadata"]["generation"])

    kube.wait_for("the controller to observe the paused template", observed)
    expected = Expected(RestartDependencyTier(tier=TIER, region=REGION), generation_before=0)
    check = await check_control_plane(expected, ports)
    assert not check.matches
    assert "restarting=true" in check.observed


async def test_drained_pool_matches_once_its_pods_are_gone(
    kube: Kube, target: str, ports: ReadPorts
) -> None:
    expected = Expected(DrainWorkerPool(pool=POOL, region=REGION))
    assert not (await check_control_plane(expected, ports)).matches
    path = f"/apis/apps/v1/namespaces/{target}/deployments/{POOL}"
    kube.request("PATCH", path, {"spec": {"replicas": 0}})
    kube.wait_rolled_out(target, POOL)
    check = await check_control_plane(expected, ports)
    assert check.matches, check
    assert check.observed == "desired 0, ready 0"
