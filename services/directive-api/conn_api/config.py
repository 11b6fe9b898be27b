"""Settings of the directive API (env vars; one pydantic-settings model).

Env: CONN_API_HOST, CONN_API_PORT (18000), CONN_ENV (development|production),
CONN_API_TOKENS_FILE (YAML of sha256 token hashes), CONN_API_TOKENS (same, inline
JSON), CONN_API_JWKS_FILE / CONN_API_JWKS_URL (+ CONN_API_JWT_ISSUER,
CONN_API_JWT_AUDIENCE), CONN_RUNBOOKS_DIR, CONN_PAGERDUTY_WEBHOOK_SECRET,
CONN_ALERT_DEDUP_WINDOW_SECONDS, CONN_WEBHOOK_DELIVERY_WINDOW_SECONDS (172800, at
least a day), CONN_READ_SCHEMA (the packager's read model, default
conn_read), CONN_API_READ_MODEL (true: ledger/packet reads from it when caught up),
CONN_API_READ_MODEL_WAIT_SECONDS, CONN_API_MAX_BODY_BYTES (65536) and
CONN_API_MAX_ALERT_BODY_BYTES (1048576, under /v1/alerts/), CONN_API_MAX_IN_FLIGHT (64
requests under /v1/ at once; beyond, 503 overloaded with Retry-After
CONN_API_SHED_RETRY_AFTER_SECONDS, default 1; stops are never shed),
CONN_API_MAX_BACKLOG (64 directives issued whose outcome is not in the log yet;
beyond, a new directive is shed the same way), CONN_API_MAX_LOOP_LAG_SECONDS (0.1: past
this sustained event-loop lag every request but the stops is shed the same way; 0
turns it off), plus the shared
KAFKA_* and DATABASE_URL.
CONN_ENV defaults to production: without CONN_ENV=development a missing or placeholder
webhook secret, the public development secret and development-only token files are
refused (the process exits with the reason).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_runtime.settings import DatabaseSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
DEV_TOKENS_FILE = ROOT / "deploy" / "local" / "tokens.yaml"

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "placeholder"})
DEV_PAGERDUTY_SECRET = "conn-dev-pagerduty-secret"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_MAX_ALERT_BODY_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """The service configuration is unusable; the message says why."""


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    conn_env: Literal["development", "production"] = "production"
    conn_api_host: str = "127.0.0.1"
    conn_api_port: int = 18000
    conn_api_tokens_file: Path | None = None
    conn_api_tokens: str | None = Field(
        default=None, description="Inline token entries (JSON list), instead of a file"
    )
    conn_api_jwks_file: Path | None = None
    conn_api_jwks_url: str | None = None
    conn_api_jwt_issuer: str | None = None
    conn_api_jwt_audience: str | None = None
    conn_api_jwt_roles_claim: str = "roles"
    conn_api_jwt_team_claim: str = "team"
    conn_api_jwt_identity_claim: str = "sub"
    conn_runbooks_dir: Path = ROOT / "runbooks"
    conn_pagerduty_webhook_secret: str | None = Field(
        default=None, description="Required outside development (the development one is public)"
    )
    conn_alert_dedup_window_seconds: float = 300.0
    conn_webhook_delivery_window_seconds: float = Field(
        default=2 * 24 * 3600,
        ge=24 * 3600,
        description="How long a PagerDuty delivery (webhook id, event id) is remembered",
    )
    conn_api_read_your_writes_seconds: float = 5.0
    conn_api_idempotency_wait_seconds: float = 10.0
    conn_api_idempotency_abandoned_seconds: float = Field(
        default=300.0,
        ge=60.0,
        description="A key claimed this long ago with no answer was abandoned (the API "
        "process that claimed it died): a retry treats its append as of unknown outcome. "
        "Far above the longest a request holds its key (send timeout + read-your-writes)",
    )
    conn_read_schema: str = "conn_read"
    conn_api_read_model: bool = True
    conn_api_read_model_wait_seconds: float = Field(default=1.0, ge=0, le=30)
    conn_api_max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1024, description="Request-body limit (413 above)"
    )
    conn_api_max_alert_body_bytes: int = Field(
        default=DEFAULT_MAX_ALERT_BODY_BYTES, ge=1024, description="... under /v1/alerts/"
    )
    conn_api_max_in_flight: int = Field(
        default=64,
        ge=1,
        description="Requests under /v1/ in flight at once; beyond, 503 overloaded + Retry-After",
    )
    conn_api_max_backlog: int = Field(
        default=64,
        ge=1,
        description="Directives issued whose outcome is not in the log yet; beyond, new "
        "directives get 503 overloaded + Retry-After",
    )
    conn_api_max_loop_lag_seconds: float = Field(
        default=0.5,
        ge=0,
        description="Sustained event-loop lag past which requests (not the stops) get 503 "
        "overloaded + Retry-After: they have waited that long before the app saw them "
        "(0: off)",
    )
    conn_api_shed_retry_after_seconds: int = Field(default=1, ge=1, le=60)

    @field_validator("conn_read_schema")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("CONN_READ_SCHEMA must be a lower-case SQL identifier")
        return value

    @model_validator(mode="after")
    def _no_placeholders_outside_development(self) -> ApiSettings:
        if self.conn_env == "development":
            if self.conn_pagerduty_webhook_secret is None:
                self.conn_pagerduty_webhook_secret = DEV_PAGERDUTY_SECRET
            return self
        problems: list[str] = []
        secret = self.conn_pagerduty_webhook_secret
        if secret is None:
            problems.append("CONN_PAGERDUTY_WEBHOOK_SECRET is not set")
        elif secret.lower() in PLACEHOLDER_SECRETS or secret == DEV_PAGERDUTY_SECRET:
            problems.append(
                "CONN_PAGERDUTY_WEBHOOK_SECRET is a placeholder or the public development secret"
            )
        # (A development-only tokens file is refused by the Authenticator, by its marker.)
        no_tokens = self.conn_api_tokens_file is None and not self.conn_api_tokens
        if no_tokens and not (self.conn_api_jwks_file or self.conn_api_jwks_url):
            problems.append(
                "no credentials configured: set CONN_API_TOKENS_FILE, CONN_API_TOKENS or a JWKS"
            )
        if problems:
            raise ConfigError(
                "; ".join(problems) + f" (CONN_ENV={self.conn_env}; "
                "CONN_ENV=development is for a development machine only)"
            )
        return self

    def tokens_path(self) -> Path | None:
        """The tokens file; in development the shipped demo file is the default."""
        if self.conn_api_tokens_file is not None:
            return self.conn_api_tokens_file
        if self.conn_env == "development" and not self.conn_api_tokens:
            return DEV_TOKENS_FILE
        return None


class Settings(ServiceSettings):
    """Everything the API reads from its environment, validated once at start-up."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
