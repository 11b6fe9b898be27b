"""Packager settings (env): KafkaSettings + DatabaseSettings +
CONN_PACKAGER_METRICS_PORT (default 18103), CONN_READ_SCHEMA (default conn_read),
CONN_PACKAGER_HOST (ops server bind, default 127.0.0.1),
CONN_PACKAGER_REPLICATION (replication factor of faust's internal topics, default 1),
CONN_PACKAGER_DATADIR (faust local data, default <tmp>/conn-faust),
CONN_PACKAGER_FLEET_INTERVAL (seconds between conn_fleet_* gauge refreshes, default 15)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_readmodel.store import check_schema
from conn_runtime.settings import DatabaseSettings, ServiceSettings


class PackagerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    conn_packager_metrics_port: int = Field(default=18103, ge=0, le=65535)
    conn_packager_host: str = "127.0.0.1"
    conn_read_schema: str = "conn_read"
    conn_packager_replication: int = Field(default=1, ge=1)
    conn_packager_datadir: Path = Field(
        default=Path(tempfile.gettempdir()) / "conn-faust",
        description="Where faust keeps its local data (one folder per app id)",
    )
    conn_packager_fleet_interval: float = Field(
        default=15.0, ge=0.5, le=3600, description="Seconds between conn_fleet_* refreshes"
    )

    @field_validator("conn_read_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        return check_schema(value)


class Settings(ServiceSettings):
    """Everything the packager reads from the environment, validated once at start-up."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    packager: PackagerSettings = Field(default_factory=PackagerSettings)

    @property
    def schema(self) -> str:  # type: ignore[override]  # (BaseModel.schema: deprecated v1 API)
        return self.packager.conn_read_schema
