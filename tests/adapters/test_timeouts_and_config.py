"""Every adapter call is bounded: a server that never answers -> PortError(timeout)."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from conn_adapters import AdapterSettings, build_adapters
from conn_adapters.flags import SimulatorFeatureFlags, UnleashFeatureFlags
from conn_adapters.metrics import PrometheusMetrics, ScrapeMetrics
from conn_adapters.orchestrator import KubernetesOrchestrator, SimulatorOrchestrator
from conn_adapters.record import WebhookIncidentRecord
from conn_core.ports import PortError


@pytest.fixture(scope="module")
def blackhole() -> Iterator[str]:
    """Accepts TCP connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


T = 0.3
CALLS: dict[str, Callable[[str], Awaitable[Any]]] = {
    "sim-flags": lambda u: SimulatorFeatureFlags(u, timeout=T).get_rule("f", "r", "us-east"),
    "unleash": lambda u: UnleashFeatureFlags(u, "t", timeout=T).disable_rule(
        "f", "r", "us-east", idempotency_key="k"
    ),
    "sim-orch": lambda u: SimulatorOrchestrator(u, timeout=T).drain_pool(
        "p", "us-east", idempotency_key="k"
    ),
    "k8s": lambda u: KubernetesOrchestrator(u, "t", timeout=T).restart_tier(
        "t", "us-east", idempotency_key="k"
    ),
    "scrape": lambda u: ScrapeMetrics(u + "/metrics", timeout=T).read_region("us-east"),
    "prometheus": lambda u: PrometheusMetrics(u, timeout=T).read_region("us-east"),
    "webhook": lambda u: WebhookIncidentRecord(u, timeout=T).append_note(
        "i", "n", idempotency_key="k"
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_call_is_bounded_by_timeout(name: str, blackhole: str) -> None:
    start = time.monotonic()
    with pytest.raises(PortError) as err:
        await CALLS[name](blackhole)
    assert err.value.timeout and err.value.retriable
    assert time.monotonic() - start < T + 1.0


def test_build_adapters_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONN_FLAGS_BACKEND", "unleash")
    monkeypatch.setenv("CONN_UNLEASH_ENVIRONMENTS", '{"us-east": "production"}')
    monkeypatch.setenv("CONN_ORCHESTRATOR_BACKEND", "kubernetes")
    monkeypatch.setenv("CONN_KUBERNETES_API_URL", "https://k8s.example:6443")
    monkeypatch.setenv("CONN_METRICS_BACKEND", "prometheus")
    monkeypatch.setenv("CONN_RECORD_BACKEND", "webhook")
    monkeypatch.setenv("CONN_RECORD_WEBHOOK_URL", "https://hooks.example/x")
    monkeypatch.setenv("CONN_METRICS_TIMEOUT", "2.5")
    a = build_adapters(AdapterSettings())
    assert (
        isinstance(a.flags, UnleashFeatureFlags) and a.flags.environment("us-east") == "production"
    )
    assert isinstance(a.orchestrator, KubernetesOrchestrator)
    assert isinstance(a.metrics, PrometheusMetrics) and a.metrics.timeout == 2.5
    assert isinstance(a.record, WebhookIncidentRecord)


def test_defaults_are_the_simulator() -> None:
    a = build_adapters(AdapterSettings(_env_file=None))
    assert isinstance(a.flags, SimulatorFeatureFlags)
    assert isinstance(a.orchestrator, SimulatorOrchestrator)
    assert isinstance(a.metrics, ScrapeMetrics)
