"""Settings shared by every Conn process, read from environment variables.

Each service composes these with its own parts in its `Settings` (a `ServiceSettings`). The
names of the environment variables are the contract with `make up`, the test
fixtures, the Helm chart and an operator's own deployment.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://conn:conn@127.0.0.1:15432/conn"

Environment = Literal["development", "production"]
DEVELOPMENT: Environment = "development"
"""CONN_ENV: production unless a process is told otherwise. `make up`, `make demo`
and the test fixtures set CONN_ENV=development explicitly; a deployment that
forgets it runs with production checks (no development keys, tokens or secrets)."""


class ProductionConfigError(ValueError):
    """A production process was given development material or no secret at all."""


def development_material(path: Path | None) -> bool:
    """Is `path` part of the local stack's generated trust material (`.local/trust/`:
    development signing keys, SCRAM passwords)?"""
    if path is None:
        return False
    parts = Path(path).expanduser().absolute().parts
    return any(a == ".local" and b == "trust" for a, b in itertools.pairwise(parts))


def refuse_in_production(env: str, problems: list[str]) -> None:
    """Raise with every problem at once (not the first), unless CONN_ENV=development."""
    if env != DEVELOPMENT and problems:
        raise ProductionConfigError(
            "; ".join(problems)
            + f" (CONN_ENV={env}; set CONN_ENV=development only on a development machine)"
        )


class Topics(BaseModel):
    """Names of the four Conn topics. Tests use a unique prefix per test."""

    model_config = {"frozen": True}

    events: str = "conn.events"
    takeover: str = "conn.takeover"
    control: str = "conn.control"
    deadletter: str = "conn.deadletter"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        """`with_prefix("t1234.")` -> t1234.conn.events, ... (for isolated tests)."""
        return cls(
            events=f"{prefix}conn.events",
            takeover=f"{prefix}conn.takeover",
            control=f"{prefix}conn.control",
            deadletter=f"{prefix}conn.deadletter",
        )


class KafkaSettings(BaseSettings):
    """How a process reaches the log, and as whom.

    Env: KAFKA_BOOTSTRAP_SERVERS, CONN_TOPIC_PREFIX; the broker identity
    KAFKA_SECURITY_PROTOCOL (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL),
    KAFKA_SASL_MECHANISM (e.g. SCRAM-SHA-512), KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD,
    KAFKA_SSL_CAFILE; the ledger identity CONN_KEYRING_FILE (public keys: whom to
    trust), CONN_SIGNING_KEY_FILE and optionally CONN_SIGNING_KEY_ID (this process's
    own key, see `conn_runtime.trust`)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str = DEFAULT_KAFKA
    conn_topic_prefix: str = ""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    conn_keyring_file: Path | None = None
    conn_signing_key_file: Path | None = None
    conn_signing_key_id: str | None = None
    conn_env: Environment = "production"

    @model_validator(mode="after")
    def _no_development_keys_in_production(self) -> KafkaSettings:
        problems = [
            f"{name} {path} is development trust material (.local/trust)"
            for name, path in (
                ("CONN_SIGNING_KEY_FILE", self.conn_signing_key_file),
                ("CONN_KEYRING_FILE", self.conn_keyring_file),
            )
            if development_material(path)
        ]
        refuse_in_production(self.conn_env, problems)
        return self

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.conn_topic_prefix)


class DatabaseSettings(BaseSettings):
    """Env: DATABASE_URL (a libpq/asyncpg DSN)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    conn_env: Environment = "production"

    @model_validator(mode="after")
    def _no_development_database_in_production(self) -> DatabaseSettings:
        problems = []
        if self.database_url == DEFAULT_DATABASE_URL:
            problems.append("DATABASE_URL is not set (the default is the local stack's conn:conn)")
        refuse_in_production(self.conn_env, problems)
        return self


class OpsSettings(BaseSettings):
    """Env: CONN_WEDGED_AFTER_SECONDS (liveness: an operation with no progress for this
    long makes /healthz answer 503; 0 turns it off)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    conn_wedged_after_seconds: float = 300.0


class ServiceSettings(BaseModel):
    """The one settings pattern of every Conn service: its `Settings` subclasses this and
    adds its parts, each a pydantic-settings model read from the environment when it is
    not given (so `Settings()` reads everything, and a test passes the parts it wants).
    Built once, in the service's `build` (see `conn_runtime.service.serve`): a missing or
    invalid value is a clear start-up error (exit code 2), never a failure later."""

    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
