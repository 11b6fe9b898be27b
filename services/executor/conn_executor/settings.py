"""Executor settings (pydantic-settings, env prefix CONN_EXECUTOR_), composed with
the shared Kafka, database and adapter settings in `Settings`."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_adapters.config import AdapterSettings
from conn_executor.faults import Faults, parse_faults
from conn_runtime.settings import DatabaseSettings, ServiceSettings


def default_executor_id() -> str:
    return f"executor-{socket.gethostname()}-{os.getpid()}"


class ExecutorSettings(BaseSettings):
    """Env: CONN_EXECUTOR_ID, CONN_EXECUTOR_METRICS_PORT (18101), CONN_EXECUTOR_GROUP_ID,
    CONN_EXECUTOR_STEP_TIMEOUT, CONN_EXECUTOR_GATHER_TIMEOUT, CONN_EXECUTOR_MAX_IN_FLIGHT,
    CONN_EXECUTOR_STOP_READ_PATIENCE, CONN_EXECUTOR_ACT_WITHIN, CONN_EXECUTOR_FAULT (test
    only)."""

    model_config = SettingsConfigDict(env_prefix="CONN_EXECUTOR_", extra="ignore")

    id: str = Field(default_factory=default_executor_id, min_length=1, max_length=200)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=18101, ge=0, le=65535)
    group_id: str = Field(default="conn-executor", min_length=1)
    step_timeout: float = Field(default=30.0, gt=0, description="Bound on one side effect")
    gather_timeout: float = Field(default=10.0, gt=0, description="Bound on one state read")
    record_timeout: float = Field(default=10.0, gt=0)
    stop_read_patience: float = Field(
        default=30.0,
        ge=0,
        description="How long the last check before a side effect waits for PostgreSQL to "
        "answer (a restart) before it fails closed",
    )
    act_within: float = Field(
        default=5.0,
        gt=0,
        lt=10.0,
        description="Bound from the fenced gate to the call: a step that takes longer (a "
        "frozen process, a slow look) is not executed, because another executor may have "
        "taken its claim over. Below the consumer session timeout (10 s), the least time "
        "before another executor can own the incident",
    )
    max_in_flight: int = Field(default=32, ge=1, le=1024)
    fault: str = ""

    @field_validator("fault")
    @classmethod
    def _valid_fault(cls, value: str) -> str:
        parse_faults(value)  # raises a clear error at start-up
        return value

    @property
    def faults(self) -> Faults:
        return parse_faults(self.fault)


class Settings(ServiceSettings):
    """Everything the executor reads from its environment, validated once at start-up."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
