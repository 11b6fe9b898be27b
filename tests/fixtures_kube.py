"""A real Kubernetes control plane for the tests that need one (`kube` fixture).

Loaded for every run through `-p fixtures_kube` (pyproject addopts); the control plane is
started only when a test asks for it: a private one per session (temporary data directory,
free loopback ports; see `conn_localstack.kube`), stopped at the end. A control plane started
by `make kube-up` is never used or touched.

Without the binaries (`make setup` builds them: deploy/local/setup.d/45-kube.sh) the tests
skip with a message, except in CI (`CI=true`), where a missing tier is a failure.
"""

from __future__ import annotations

import os
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conn_localstack.kube import Binaries, ControlPlane, KubePorts

KUBE_MARK = "kube: talks to a real Kubernetes API server (control plane built by make setup)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", KUBE_MARK)


@dataclass
class Kube:
    """The session's control plane, with an admin HTTP client (client certificate)."""

    plane: ControlPlane
    http: httpx.Client

    @property
    def server(self) -> str:
        return self.plane.server

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.plane.ca_file

    # --- small admin helpers over the REST API (independent of the adapter under test) ---

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if method == "PATCH":
            headers.setdefault("Content-Type", "application/merge-patch+json")
        r = self.http.request(method, path, json=body, headers=headers, **kw)
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> None:
        self.http.delete(f"/api/v1/namespaces/{name}")

    def create_deployment(self, ns: str, name: str, replicas: int, **spec: Any) -> Any:
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": name, "image": f"conn.invalid/{name}:1"}]},
                },
                **spec,
            },
        }
        return self.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body)

    def deployment(self, ns: str, name: str) -> Any:
        return self.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")

    def replicasets(self, ns: str, app: str) -> list[dict[str, Any]]:
        items = self.get(f"/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app%3D{app}")
        return list(items["items"])

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
        """Poll `check` until true (a condition, never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.2)

    def rolled_out(self, ns: str, name: str) -> bool:
        """`kubectl rollout status` done: observed, all updated, no old pods, all available."""
        d = self.deployment(ns, name)
        st, want = d.get("status") or {}, int(d["spec"]["replicas"])
        return (
            int(st.get("observedGeneration") or 0) >= int(d["metadata"]["generation"])
            and int(st.get("updatedReplicas") or 0) == want
            and int(st.get("replicas") or 0) == want
            and int(st.get("availableReplicas") or 0) == want
            and int(st.get("readyReplicas") or 0) == want
        )

    def wait_rolled_out(self, ns: str, name: str, timeout: float = 90.0) -> None:
        self.wait_for(
            f"deployment {ns}/{name} rolled out", lambda: self.rolled_out(ns, name), timeout
        )

    def service_account_token(self, ns: str, sa: str) -> str:
        """A short-lived token for ServiceAccount `sa` (TokenRequest API)."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        out = self.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body)
        return str(out["status"]["token"])

    def can(self, user: str, verb: str, ns: str, resource: str, subresource: str = "") -> bool:
        """SubjectAccessReview: may `user` do `verb` on apps/`resource` in `ns`?"""
        attrs: dict[str, str] = {
            "namespace": ns,
            "verb": verb,
            "group": "apps",
            "resource": resource,
        }
        if subresource:
            attrs["subresource"] = subresource
        groups = ["system:authenticated"]
        if user.startswith("system:serviceaccount:"):
            groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
        }
        out = self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        return bool(out["status"].get("allowed"))


def _require_binaries() -> None:
    missing = Binaries.from_cache().missing()
    if missing:
        msg = (
            "Kubernetes control plane not built ("
            + ", ".join(str(m) for m in missing)
            + "): run `make setup` (deploy/local/setup.d/45-kube.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg + " — in CI the real-Kubernetes tier must run")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A private control plane for this test session (temporary directory, free ports)."""
    _require_binaries()
    plane = ControlPlane(tmp_path_factory.mktemp("kube"), KubePorts.free())
    plane.start()
    ctx = ssl.create_default_context(cafile=str(plane.ca_file))
    ctx.load_cert_chain(plane.pki / "admin.crt", plane.pki / "admin.key")
    http = httpx.Client(base_url=plane.server, verify=ctx, timeout=15)
    try:
        yield Kube(plane, http)
    finally:
        http.close()
        plane.stop()


@pytest.fixture
def kube_namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace, deleted after the test."""
    ns = kube.create_namespace()
    yield ns
    kube.delete_namespace(ns)
