"""Static proof that every adapter satisfies its port `Protocol` (checked by `make lint`).

Nothing imports this module at run time; mypy --strict checks it with the package. Each
function returns an adapter where its port is expected, so an adapter whose method
signatures drift from `conn_core.ports` (or a decorator that changes them, as `bounded`
once did by returning `Awaitable` instead of a coroutine) fails the type check here,
not first in production. Add a line when you add an adapter.
"""

from __future__ import annotations

from conn_adapters.flags import SimulatorFeatureFlags, UnleashFeatureFlags
from conn_adapters.metrics import PrometheusMetrics, ScrapeMetrics
from conn_adapters.orchestrator import KubernetesOrchestrator, SimulatorOrchestrator
from conn_adapters.record import NullIncidentRecord, SimulatorIncidentRecord, WebhookIncidentRecord
from conn_core.ports import FeatureFlags, IncidentRecord, Metrics, Orchestrator


def unleash_flags(adapter: UnleashFeatureFlags) -> FeatureFlags:
    return adapter


def simulator_flags(adapter: SimulatorFeatureFlags) -> FeatureFlags:
    return adapter


def kubernetes_orchestrator(adapter: KubernetesOrchestrator) -> Orchestrator:
    return adapter


def simulator_orchestrator(adapter: SimulatorOrchestrator) -> Orchestrator:
    return adapter


def prometheus_metrics(adapter: PrometheusMetrics) -> Metrics:
    return adapter


def scrape_metrics(adapter: ScrapeMetrics) -> Metrics:
    return adapter


def webhook_record(adapter: WebhookIncidentRecord) -> IncidentRecord:
    return adapter


def simulator_record(adapter: SimulatorIncidentRecord) -> IncidentRecord:
    return adapter


def null_record(adapter: NullIncidentRecord) -> IncidentRecord:
    return adapter
