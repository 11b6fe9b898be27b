"""conn_localstack: run Kafka (KRaft), PostgreSQL, the topics and Conn processes locally.

Public API (used by `make up/down/status`, tests/conftest.py and other components):
"""

from conn_localstack.config import database_url, kafka_bootstrap, paths, port, stack_env
from conn_localstack.procs import (
    ProcessSpec,
    StackError,
    log_file,
    running_pid,
    start_process,
    stop_process,
)
from conn_localstack.stack import (
    UpResult,
    register_process,
    stack_down,
    stack_status,
    stack_up,
)

__all__ = [
    "ProcessSpec",
    "StackError",
    "UpResult",
    "database_url",
    "kafka_bootstrap",
    "log_file",
    "paths",
    "port",
    "register_process",
    "running_pid",
    "stack_down",
    "stack_env",
    "stack_status",
    "stack_up",
    "start_process",
    "stop_process",
]
