"""Helpers for the deploy tests: find helm, render the chart, index the manifests."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "conn"
CI_VALUES = CHART / "ci" / "production-values.yaml"
SERVICES = ("directive-api", "executor", "verifier", "packager")

# The smallest values that render: everything else is the chart's defaults.
MINIMAL = {
    "kafka.bootstrapServers": "kafka:9092",
    "postgresql.url": "postgresql://conn:pw@pg:5432/conn",
    "secrets.pagerdutyWebhookSecret": "a-real-secret",
    "secrets.apiTokens": "tokens: []",
    "adapters.kubernetes.namespaces.us-east": "checkout-us-east",
    "signing.keyring": "keys: []",
    **{
        f"services.{svc}.signing.{k}": v
        for svc in ("directive-api", "executor", "verifier", "packager")
        for k, v in (("existingSecret", f"conn-{svc}-signing-vault"), ("keyId", f"{svc}-1"))
    },
}


def helm_binary() -> str | None:
    """`$HELM`, then .local/bin/helm (built by deploy/local/setup.d/40-helm.sh), then PATH."""
    env = os.environ.get("HELM")
    if env:
        return env
    local = ROOT / ".local" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


def require_helm() -> str:
    helm = helm_binary()
    if helm is None:
        msg = (
            "helm binary not found (.local/bin/helm, $HELM or PATH): run `make setup` "
            "(deploy/local/setup.d/40-helm.sh builds it)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg + " — in CI the chart must be linted, rendered and installed")
        pytest.skip(msg)
    return helm


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


def run_helm(args: Iterable[str]) -> HelmResult:
    helm = require_helm()
    proc = subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(ROOT / ".local" / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(ROOT / ".local" / "helm" / "config"),
            "HELM_DATA_HOME": str(ROOT / ".local" / "helm" / "data"),
        },
    )
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def set_args(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        flag = "--set-string" if isinstance(value, str) else "--set"
        if isinstance(value, bool):
            value = "true" if value else "false"
        out += [flag, f"{key}={value}"]
    return out


def template(
    values: dict[str, Any] | None = None,
    *,
    values_files: Iterable[Path] = (),
    release: str = "conn",
    namespace: str = "incident",
) -> HelmResult:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for f in values_files:
        args += ["-f", str(f)]
    args += set_args(values or {})
    return run_helm(args)


class Manifests:
    """Rendered documents, indexed by (kind, name)."""

    def __init__(self, text: str) -> None:
        self.docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for d in self.of_kind(kind):
            if d["metadata"]["name"] == name:
                return d
        names = [d["metadata"]["name"] for d in self.of_kind(kind)]
        raise AssertionError(f"no {kind} named {name!r}; have {names}")

    def deployment(self, service: str, release: str = "conn") -> dict[str, Any]:
        return self.get("Deployment", f"{release}-{service}")


def render(values: dict[str, Any] | None = None, *, values_files: Iterable[Path] = ()) -> Manifests:
    merged = {**MINIMAL, **(values or {})} if not values_files else dict(values or {})
    res = template(merged, values_files=values_files)
    assert res.returncode == 0, f"helm template failed:\n{res.stderr}"
    return Manifests(res.stdout)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """name -> value (str) or valueFrom (dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


def pod_env(m: Manifests, c: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet would give container `c`: envFrom ConfigMaps, then env with
    secretKeyRef/configMapKeyRef resolved against the rendered objects (optional refs that
    do not resolve are left out, as Kubernetes does)."""
    out: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            out.update(m.get("ConfigMap", src["configMapRef"]["name"])["data"])
    for e in c.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
            continue
        ref = e.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            data = m.get("Secret", r["name"]).get("stringData") or {}
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            data = m.get("ConfigMap", r["name"])["data"]
        else:
            continue  # fieldRef etc.
        if r["key"] in data:
            out[e["name"]] = str(data[r["key"]])
        else:
            assert r.get("optional"), f"required key {r['key']!r} missing from {r['name']!r}"
    return out


METRIC_MODULES = (
    "conn_runtime.metrics",
    "conn_api.metrics",
    "conn_executor.metrics",
    "conn_verifier.metrics",
    "conn_packager.metrics",
    "conn_packager.fleet",
)
# Labels Prometheus adds at scrape time (ServiceMonitor / static config), and histogram buckets.
SCRAPE_LABELS = {"namespace", "job", "instance", "pod", "service", "container", "le"}


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the services expose -> its label names."""
    out: dict[str, set[str]] = {}
    for module in METRIC_MODULES:
        found = vars(importlib.import_module(module)).values()
        # a module may keep its metrics in a dict (conn_packager.fleet.GAUGES)
        nested = [v for d in found if isinstance(d, dict) for v in d.values()]
        for obj in [*found, *nested]:
            if not isinstance(obj, MetricWrapperBase):
                continue
            name, labels = obj._name, set(obj._labelnames)
            kind = obj._type
            if kind == "counter":
                names = [f"{name}_total"]
            elif kind == "histogram":
                names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
            elif kind == "summary":
                names = [f"{name}_sum", f"{name}_count", name]
            else:
                names = [name]
            for n in names:
                out[n] = labels
    return out


def promql_problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """Metrics a PromQL expression names that no service exports, and labels (in matchers and
    `by (...)`) that its metrics do not carry."""
    problems: list[str] = []
    used = set(re.findall(r"\b(conn_[a-z0-9_]+)\b", expr))
    if not used:
        problems.append("no conn_* metric")
    for m in sorted(used - exported.keys()):
        problems.append(f"{m} is not exported by any service")
    for metric, matchers in re.findall(r"\b(conn_[a-z0-9_]+)\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in exported.get(metric, set()) | SCRAPE_LABELS:
                problems.append(f"{metric} has no label {label!r}")
    known = set().union(*(exported.get(m, set()) for m in used)) | SCRAPE_LABELS
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in (x.strip() for x in group.split(",")):
            if label not in known:
                problems.append(f"'by ({label})' is not a label of {sorted(used)}")
    return problems
