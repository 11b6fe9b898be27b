"""Bad configuration is a clear one-line error and exit code 2, never a stack trace."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conn_localstack.services import verifier as verifier_spec


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONN_VERIFIER_METRICS_PORT": "not-a-port"}, "metrics_port"),
        ({"CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "-1"}, "settle_override_seconds"),
        ({"CONN_METRICS_BACKEND": "graphite"}, "metrics_backend"),
    ],
)
def test_bad_configuration_is_a_clear_error(env: dict[str, str], needle: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conn_verifier"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid configuration" in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_localstack_plugin_runs_the_verifier_on_its_port() -> None:
    spec = verifier_spec()
    assert spec.name == "verifier" and list(spec.argv)[1:] == ["-m", "conn_verifier"]
    assert spec.port is not None and str(spec.port) in (spec.health_url or "")
