"""Adapter selection by configuration (env vars, prefix CONN_). See adapters/README.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_adapters.flags import SimulatorFeatureFlags, UnleashFeatureFlags
from conn_adapters.metrics import PrometheusMetrics, ScrapeMetrics
from conn_adapters.orchestrator import KubernetesOrchestrator, SimulatorOrchestrator
from conn_adapters.record import NullIncidentRecord, SimulatorIncidentRecord, WebhookIncidentRecord
from conn_core.ports import FeatureFlags, IncidentRecord, Metrics, Orchestrator


class AdapterSettings(BaseSettings):
    """Dict-valued settings are JSON in the environment, e.g.
    CONN_UNLEASH_ENVIRONMENTS='{"us-east":"production","eu-west":"production-eu"}'."""

    model_config = SettingsConfigDict(env_prefix="CONN_", extra="ignore")

    flags_backend: Literal["simulator", "unleash"] = "simulator"
    orchestrator_backend: Literal["simulator", "kubernetes"] = "simulator"
    metrics_backend: Literal["scrape", "prometheus"] = "scrape"
    record_backend: Literal["simulator", "webhook", "none"] = "simulator"

    adapter_timeout: float = 5.0
    flags_timeout: float | None = None
    orchestrator_timeout: float | None = None
    metrics_timeout: float | None = None
    record_timeout: float | None = None

    simulator_url: str = "http://127.0.0.1:18080"
    simulator_token: str = "sim-admin-token"

    unleash_url: str = "http://127.0.0.1:14242"
    unleash_token: str = ""
    unleash_project: str = "default"
    unleash_environments: dict[str, str] = {}  # region -> Unleash environment

    kubernetes_api_url: str | None = None  # unset: in-cluster / $KUBECONFIG
    kubernetes_token: str | None = None
    kubernetes_ca_file: str | None = None
    kubernetes_insecure: bool = False
    kubernetes_kubeconfig: str | None = None  # a kubeconfig file (used when the URL is unset)
    kubernetes_namespaces: dict[str, str] = {}  # region -> namespace
    kubernetes_deployments: dict[str, str] = {}  # pool/tier -> Deployment name

    metrics_scrape_url: str | None = None  # default: {simulator_url}/metrics
    prometheus_url: str = "http://127.0.0.1:19090"
    prometheus_token: str | None = None  # sent as a bearer token (read-only access)
    prometheus_queries: dict[str, str] = {}  # field -> PromQL with {region}
    prometheus_region_queries: dict[str, dict[str, str]] = {}

    record_webhook_url: str | None = None
    record_webhook_headers: dict[str, str] = {}
    record_retries: int = 3

    def timeout_for(self, port: str) -> float:
        value: float | None = getattr(self, f"{port}_timeout")
        return self.adapter_timeout if value is None else value


@dataclass(frozen=True)
class Adapters:
    flags: FeatureFlags
    orchestrator: Orchestrator
    metrics: Metrics
    record: IncidentRecord

    async def aclose(self) -> None:
        for adapter in (self.flags, self.orchestrator, self.metrics, self.record):
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()


def build_adapters(settings: AdapterSettings | None = None) -> Adapters:
    s = settings or AdapterSettings()
    flags: FeatureFlags
    if s.flags_backend == "unleash":
        flags = UnleashFeatureFlags(
            s.unleash_url,
            s.unleash_token,
            project=s.unleash_project,
            environments=s.unleash_environments,
            timeout=s.timeout_for("flags"),
        )
    else:
        flags = SimulatorFeatureFlags(
            s.simulator_url, s.simulator_token, timeout=s.timeout_for("flags")
        )

    orchestrator: Orchestrator
    if s.orchestrator_backend == "kubernetes":
        orchestrator = KubernetesOrchestrator(
            s.kubernetes_api_url,
            s.kubernetes_token,
            ca_file=s.kubernetes_ca_file,
            insecure=s.kubernetes_insecure,
            kubeconfig=s.kubernetes_kubeconfig,
            namespaces=s.kubernetes_namespaces,
            deployments=s.kubernetes_deployments,
            timeout=s.timeout_for("orchestrator"),
        )
    else:
        orchestrator = SimulatorOrchestrator(
            s.simulator_url, s.simulator_token, timeout=s.timeout_for("orchestrator")
        )

    metrics: Metrics
    if s.metrics_backend == "prometheus":
        metrics = PrometheusMetrics(
            s.prometheus_url,
            queries=s.prometheus_queries,
            region_queries=s.prometheus_region_queries,
            timeout=s.timeout_for("metrics"),
            headers={"Authorization": f"Bearer {s.prometheus_token}"}
            if s.prometheus_token
            else None,
        )
    else:
        metrics = ScrapeMetrics(
            s.metrics_scrape_url or s.simulator_url.rstrip("/") + "/metrics",
            timeout=s.timeout_for("metrics"),
        )

    record: IncidentRecord
    if s.record_backend == "webhook":
        if not s.record_webhook_url:
            raise ValueError("CONN_RECORD_BACKEND=webhook needs CONN_RECORD_WEBHOOK_URL")
        record = WebhookIncidentRecord(
            s.record_webhook_url,
            headers=s.record_webhook_headers,
            retries=s.record_retries,
            timeout=s.timeout_for("record"),
        )
    elif s.record_backend == "none":
        record = NullIncidentRecord()
    else:
        record = SimulatorIncidentRecord(s.simulator_url, timeout=s.timeout_for("record"))
    return Adapters(flags, orchestrator, metrics, record)
