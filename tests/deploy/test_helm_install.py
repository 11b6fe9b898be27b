"""The chart installed for real: `helm install --wait` against a real Kubernetes API server
(etcd, kube-apiserver, controllers, scheduler and one KWOK node: pods are scheduled and made
Ready by KWOK's stages, no container runs), then upgraded and uninstalled.

What this proves that `helm template` cannot: the API server accepts every object (schemas,
admission, RBAC escalation checks), the pre-install hooks (the topics Job and its hook Secret)
run and are cleaned up, every workload becomes Ready on a node, the RBAC the chart grants is
exactly what the Kubernetes adapter needs (checked with SubjectAccessReviews and by driving
the real adapter with the executor's own ServiceAccount token), and uninstall leaves nothing.

The topics Job's *command* cannot run on KWOK (no containers), so
`test_topics_job_command_creates_the_topics_on_real_kafka` runs the rendered Job's container
(command, args, env) as a local process against the test Kafka instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, ROOT, SERVICES, Manifests, container, require_helm, template
from fixtures_kube import Kube

from conn_adapters.orchestrator import KubernetesOrchestrator
from conn_core.ports import PortError
from conn_localstack.kube import NODE_NAME

RELEASE = "conn"
REGION = "us-east"
TIER, POOL = "pricing-cache", "cache-invalidation"


def _ed25519_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


@dataclass
class Release:
    kube: Kube
    namespace: str  # where Conn runs
    target: str  # where the checkout platform's Deployments live (the executor acts here)
    values: Path
    helm_env: dict[str, str]

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [require_helm(), *args, "--namespace", self.namespace],
            capture_output=True,
            text=True,
            env=self.helm_env,
            timeout=400,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args[:2])} failed:\n{res.stdout}\n{res.stderr}")
        return res

    def sa(self, name: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{name}"


def _values(target: str, tmp: Path) -> Path:
    services: dict[str, Any] = {}
    keyring = []
    for svc in SERVICES:
        services[svc] = {
            "kafkaSasl": {"username": f"conn-{svc}", "password": f"pw-{svc}-{uuid.uuid4().hex}"},
            "signing": {"keyId": f"{svc}-1", "privateKey": _ed25519_pem()},
        }
        keyring.append({"key_id": f"{svc}-1", "principal": svc})
    values = {
        "image": {"repository": "conn.invalid/conn", "tag": "test"},
        "kafka": {
            # Nothing connects on KWOK; the address only has to be well-formed.
            "bootstrapServers": "kafka-0.kafka.invalid:9092",
            "securityProtocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "SCRAM-SHA-512"},
            "topics": {
                "replicationFactor": 1,
                "job": {"kafkaSasl": {"username": "conn-topics", "password": "pw-topics"}},
            },
        },
        "postgresql": {"url": "postgresql://conn:pw@pg.invalid:5432/conn"},
        "secrets": {
            "apiTokens": "tokens: []\n",
            "pagerdutyWebhookSecret": "pd-secret-for-the-test",
            "unleashToken": "unleash-write",
            "verifierUnleashToken": "unleash-read",
            "prometheusToken": "prom-read",
        },
        "signing": {"keyring": yaml.safe_dump({"keys": keyring})},
        "adapters": {"kubernetes": {"namespaces": {REGION: target}}},
        "services": services,
    }
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def release(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    require_helm()
    tmp = tmp_path_factory.mktemp("helm")
    ns, target = kube.create_namespace("conn"), kube.create_namespace("checkout")
    for name, replicas in ((TIER, 3), (POOL, 4)):
        kube.create_deployment(target, name, replicas)
    helm_env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "HELM_CACHE_HOME": str(tmp / "cache"),
        "HELM_CONFIG_HOME": str(tmp / "config"),
        "HELM_DATA_HOME": str(tmp / "data"),
    }
    rel = Release(kube, ns, target, _values(target, tmp), helm_env)
    rel.helm("install", RELEASE, str(CHART), "-f", str(rel.values), "--wait", "--timeout", "5m")
    try:
        yield rel
    finally:
        rel.helm("uninstall", RELEASE, "--wait", check=False)
        kube.delete_namespace(ns)
        kube.delete_namespace(target)


pytestmark = [pytest.mark.integration, pytest.mark.kube]


def test_every_workload_is_ready_on_the_kwok_node(release: Release) -> None:
    kube, ns = release.kube, release.namespace
    for svc in SERVICES:
        assert kube.rolled_out(ns, f"{RELEASE}-{svc}"), svc
    pods = kube.get(f"/api/v1/namespaces/{ns}/pods")["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == set(SERVICES)
    for p in pods:
        assert p["spec"]["nodeName"] == NODE_NAME
        ready = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert ready["Ready"] == "True", p["metadata"]["name"]
    # The pre-install hooks ran and cleaned up after themselves (hook-succeeded).
    assert not kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
    secrets = {s["metadata"]["name"] for s in kube.get(f"/api/v1/namespaces/{ns}/secrets")["items"]}
    assert f"{RELEASE}-topics" not in secrets
    assert {f"{RELEASE}-{svc}" for svc in SERVICES} <= secrets
    assert {f"{RELEASE}-{svc}-signing" for svc in SERVICES} <= secrets


def test_each_pod_references_only_its_own_secrets(release: Release) -> None:
    """On the objects the API server stored: a pod of one service names no other service's
    Secret (env or volume), and only executor and verifier carry a ServiceAccount token."""
    kube, ns = release.kube, release.namespace
    for svc in SERVICES:
        dep = kube.deployment(ns, f"{RELEASE}-{svc}")
        pod = dep["spec"]["template"]["spec"]
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container(dep)["env"]
            if "secretKeyRef" in (e.get("valueFrom") or {})
        } | {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert refs == {f"{RELEASE}-{svc}", f"{RELEASE}-{svc}-signing"}, svc
        assert pod["automountServiceAccountToken"] is (svc in ("executor", "verifier"))
    api = kube.get(f"/api/v1/namespaces/{ns}/secrets/{RELEASE}-directive-api")["data"]
    assert set(api) == {
        "DATABASE_URL",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "CONN_PAGERDUTY_WEBHOOK_SECRET",
        "api-tokens.yaml",
    }


NEEDED = [("get", "deployments", ""), ("patch", "deployments", "")]
NEEDED += [("get", "deployments", "scale"), ("patch", "deployments", "scale")]
NOT_NEEDED = [
    (verb, "deployments", "") for verb in ("list", "watch", "update", "create", "delete")
] + [("update", "deployments", "scale"), ("deletecollection", "deployments", "")]


def test_executor_rbac_is_exactly_what_the_adapter_needs(release: Release) -> None:
    kube, executor = release.kube, release.sa(f"{RELEASE}-executor")
    for verb, res, sub in NEEDED:
        assert kube.can(executor, verb, release.target, res, sub), (verb, res, sub)
    for verb, res, sub in NOT_NEEDED:
        assert not kube.can(executor, verb, release.target, res, sub), (verb, res, sub)
    # Nowhere else: not in its own namespace, not in a namespace it was not given.
    for other in (release.namespace, "default"):
        for verb, res, sub in NEEDED:
            assert not kube.can(executor, verb, other, res, sub), (other, verb, res, sub)


def test_verifier_reads_rollout_status_and_nothing_more(release: Release) -> None:
    kube, verifier = release.kube, release.sa(f"{RELEASE}-verifier")
    assert kube.can(verifier, "get", release.target, "deployments")
    for verb, res, sub in [*NEEDED[1:], *NOT_NEEDED]:
        assert not kube.can(verifier, verb, release.target, res, sub), (verb, res, sub)
    default = release.sa("default")  # what directive-api and packager would run as
    for verb, res, sub in NEEDED:
        assert not kube.can(default, verb, release.target, res, sub)


def _adapter(release: Release, sa: str) -> KubernetesOrchestrator:
    return KubernetesOrchestrator(
        release.kube.server,
        release.kube.service_account_token(release.namespace, sa),
        ca_file=str(release.kube.ca_file),
        namespaces={REGION: release.target},
        timeout=10,
    )


def test_the_adapter_works_with_exactly_the_executor_role(release: Release) -> None:
    async def run() -> None:
        executor = _adapter(release, f"{RELEASE}-executor")
        verifier = _adapter(release, f"{RELEASE}-verifier")
        try:
            restart = await executor.restart_tier(TIER, REGION, idempotency_key="k-helm-r")
            drain = await executor.drain_pool(POOL, REGION, idempotency_key="k-helm-d")
            assert restart.changed and drain.changed
            release.kube.wait_rolled_out(release.target, TIER)
            # The verifier's own read-only identity sees the real rollout status ...
            tier = await verifier.get_tier(TIER, REGION)
            assert (tier.generation, tier.restarting, tier.healthy) == (1, False, True)
            # ... and cannot act.
            with pytest.raises(PortError, match="not authorized") as err:
                await verifier.restart_tier(TIER, REGION, idempotency_key="k-helm-v")
            assert not err.value.retriable
        finally:
            await executor.aclose()
            await verifier.aclose()

    asyncio.run(run())


def test_a_missing_verb_fails_and_upgrade_restores_the_role(release: Release) -> None:
    """Drop `patch` on deployments/scale from the chart's Role: draining fails with a clear
    authorization error. `helm upgrade` puts the chart's Role back and draining works."""
    kube, target = release.kube, release.target
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{target}/roles/{RELEASE}-executor"
    role = kube.get(path)
    role["rules"] = [
        {**r, "verbs": ["get"]} if r["resources"] == ["deployments/scale"] else r
        for r in role["rules"]
    ]
    kube.request("PUT", path, role)

    async def drain(key: str) -> None:
        adapter = _adapter(release, f"{RELEASE}-executor")
        try:
            await adapter.drain_pool(POOL, REGION, idempotency_key=key)
        finally:
            await adapter.aclose()

    kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{target}/deployments/{POOL}", {"spec": {"replicas": 2}}
    )
    objects_before = _release_objects(release)
    with pytest.raises(PortError, match="not authorized") as err:
        asyncio.run(drain("k-helm-missing-verb"))
    assert not err.value.retriable
    assert kube.deployment(target, POOL)["spec"]["replicas"] == 2

    release.helm(
        "upgrade", RELEASE, str(CHART), "-f", str(release.values),
        "--set", "services.executor.replicas=1", "--set-string", "logLevel=DEBUG",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    status = yaml.safe_load(release.helm("status", RELEASE, "-o", "yaml").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    assert kube.deployment(release.namespace, f"{RELEASE}-executor")["spec"]["replicas"] == 1
    for svc in SERVICES:
        assert kube.rolled_out(release.namespace, f"{RELEASE}-{svc}"), svc
    asyncio.run(drain("k-helm-after-upgrade"))
    assert kube.deployment(target, POOL)["spec"]["replicas"] == 0
    # The upgrade left nothing behind: its pre-upgrade hooks (the topics Job and its Secret)
    # ran and were deleted, and the release has the same objects as before (no orphan).
    assert not kube.get(f"/apis/batch/v1/namespaces/{release.namespace}/jobs")["items"]
    assert _release_objects(release) == objects_before


NAMESPACED = [
    "/apis/apps/v1/namespaces/{ns}/deployments",
    "/apis/apps/v1/namespaces/{ns}/replicasets",
    "/api/v1/namespaces/{ns}/pods",
    "/api/v1/namespaces/{ns}/services",
    "/api/v1/namespaces/{ns}/secrets",
    "/api/v1/namespaces/{ns}/configmaps",
    "/api/v1/namespaces/{ns}/serviceaccounts",
    "/apis/batch/v1/namespaces/{ns}/jobs",
    "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
]
# What Kubernetes itself puts in every namespace.
BUILTIN = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


def _leftovers(kube: Kube, ns: str, keep_target: bool = False) -> list[tuple[str, str]]:
    out = []
    for path in NAMESPACED:
        listing = kube.get(path.format(ns=ns))
        kind = listing["kind"].removesuffix("List")
        for item in listing["items"]:
            name = item["metadata"]["name"]
            if (kind, name) in BUILTIN:
                continue
            app = (item["metadata"].get("labels") or {}).get("app")
            if keep_target and (app in (TIER, POOL) or name in (TIER, POOL)):
                continue  # the checkout platform's own Deployments, pods and ReplicaSets
            out.append((kind, name))
    return out


def _release_objects(release: Release) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of what the release owns in both namespaces, without what
    changes on every rollout (pods, ReplicaSets, EndpointSlices) and Helm's own record of
    each revision."""
    churn = {"Pod", "ReplicaSet", "EndpointSlice"}
    return {
        (ns, kind, name)
        for ns, keep in ((release.namespace, False), (release.target, True))
        for kind, name in _leftovers(release.kube, ns, keep_target=keep)
        if kind not in churn and not name.startswith(f"sh.helm.release.v1.{RELEASE}.")
    }


def test_uninstall_leaves_nothing_behind(release: Release) -> None:
    kube = release.kube
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "3m")
    with contextlib.suppress(AssertionError):  # the asserts below name what is left
        kube.wait_for(
            "every object of the release to be gone",
            lambda: (
                not _leftovers(kube, release.namespace)
                and not _leftovers(kube, release.target, keep_target=True)
            ),
        )
    assert _leftovers(kube, release.namespace) == []
    assert _leftovers(kube, release.target, keep_target=True) == []
    assert release.helm("status", RELEASE, check=False).returncode != 0


# --- the topics Job's command, run for real ------------------------------------------------


def test_topics_job_command_creates_the_topics_on_real_kafka(
    kafka_bootstrap: str, trust: Any
) -> None:
    """KWOK completes the hook Job without running it; here the rendered container (command,
    args, env as the chart sets them) runs as a process against the test Kafka, logged in
    as the stack's admin principal (the Job's own Kafka user in a real cluster); with SASL
    it also creates the ACLs for the services' principals."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    job_login = trust.kafka_env("admin")
    sasl = job_login.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") != "PLAINTEXT"
    res = template(
        {
            "kafka.bootstrapServers": kafka_bootstrap,
            "kafka.securityProtocol": job_login.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            "kafka.sasl.mechanism": job_login.get("KAFKA_SASL_MECHANISM", ""),
            "kafka.topics.acls.create": sasl,
            **(
                {
                    "kafka.topics.job.kafkaSasl.username": "admin",
                    "kafka.topics.job.kafkaSasl.password": "from-the-hook-secret",
                }
                if sasl
                else {}
            ),
            **{
                f"services.{svc}.kafkaSasl.{k}": v
                for svc in ("directive-api", "executor", "verifier", "packager")
                for k, v in (("username", svc), ("password", "unused-here"))
                if sasl
            },
            "kafka.topicPrefix": prefix,
            "kafka.topics.replicationFactor": 1,
            "kafka.topics.eventsPartitions": 4,
            "kafka.topics.otherPartitions": 2,
            "postgresql.url": "postgresql://conn:pw@pg:5432/conn",
            "secrets.pagerdutyWebhookSecret": "x",
            "secrets.apiTokens": "tokens: []",
            "adapters.kubernetes.namespaces.us-east": "checkout-us-east",
            "signing.enabled": False,
        }
    )
    assert res.returncode == 0, res.stderr
    job = Manifests(res.stdout).get("Job", f"{RELEASE}-topics")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["python", "-m", "conn_runtime.topics"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    # The Job reads its login from its hook Secret; here: the stack's admin user.
    env.update(
        {k: v for k, v in job_login.items() if k in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")}
    )
    argv = [sys.executable, *c["command"][1:], *c["args"]]
    assert ("--acls" in c["args"]) is sasl
    for attempt in ("create", "verify"):  # a second run (pre-upgrade) only verifies
        run = subprocess.run(
            argv,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
            check=False,
        )
        assert run.returncode == 0, f"{attempt}: {run.stdout}\n{run.stderr}"

    async def partitions() -> dict[str, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka_bootstrap, **trust.kafka_options("admin")
        )
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            described = await admin.describe_topics(names)
            return {d["topic"]: len(d["partitions"]) for d in described}
        finally:
            await admin.delete_topics(
                [t for t in await admin.list_topics() if t.startswith(prefix)]
            )
            await admin.close()

    got = asyncio.run(partitions())
    assert got == {
        f"{prefix}conn.events": 4,
        f"{prefix}conn.takeover": 2,
        f"{prefix}conn.deadletter": 2,
        f"{prefix}conn.control": 1,
    }
