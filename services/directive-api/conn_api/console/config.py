"""Settings of the bridge console (env vars; its own small pydantic-settings model so the
API's settings stay untouched).

CONN_CONSOLE_ENABLED (true), CONN_CONSOLE_SESSION_SECONDS (43200: a session lasts at most
12 h, and never beyond a JWT's `exp`), CONN_CONSOLE_COOKIE_SECURE (auto | always | never:
`auto` marks the session cookie Secure when the request came over https),
CONN_CONSOLE_STREAM_TICK_SECONDS (how often a live stream looks at the fold),
CONN_CONSOLE_HEARTBEAT_SECONDS, CONN_CONSOLE_LEDGER_ROWS (rows rendered on first load).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONN_CONSOLE_", extra="ignore")

    enabled: bool = True
    session_seconds: int = Field(default=12 * 3600, ge=60, le=7 * 24 * 3600)
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    stream_tick_seconds: float = Field(default=0.25, gt=0, le=5)
    heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    session_recheck_seconds: float = Field(default=30.0, gt=0, le=3600)
    ledger_rows: int = Field(default=1000, ge=10, le=100_000)
