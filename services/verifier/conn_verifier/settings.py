"""Verifier settings (env prefix CONN_VERIFIER_). Kafka and adapters have their own:
`conn_runtime.settings.KafkaSettings` and `conn_adapters.config.AdapterSettings`;
`Settings` composes the three."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_adapters.config import AdapterSettings
from conn_runtime.settings import ServiceSettings


class VerifierSettings(BaseSettings):
    """Env: CONN_VERIFIER_METRICS_PORT (18102), CONN_VERIFIER_METRICS_HOST,
    CONN_VERIFIER_GROUP_ID, CONN_VERIFIER_MAX_CONCURRENT,
    CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS."""

    model_config = SettingsConfigDict(env_prefix="CONN_VERIFIER_", extra="ignore")

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=18102, ge=0, le=65535, description="ops server; 0 = off")
    group_id: str = Field(default="conn-verifier", min_length=1)
    max_concurrent: int = Field(
        default=32, ge=1, le=1000, description="Verifications running at once (all incidents)"
    )
    settle_override_seconds: float | None = Field(
        default=None,
        ge=0,
        description=(
            "OVERRIDE for benchmarks only: replaces the runbook's settle window "
            "(e.g. 0). The snapshot records the criteria actually used."
        ),
    )


class Settings(ServiceSettings):
    """Everything the verifier reads from its environment, validated once at start-up."""

    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
