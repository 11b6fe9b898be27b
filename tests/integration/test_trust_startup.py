"""A Conn process without a valid signing identity does not start, and says why; the local
stack refuses a Kafka data directory formatted before the broker required authentication.
(Processes are started for real, but fail before they would reach Kafka or PostgreSQL.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from trust_support import Keys

from conn_runtime.trust import write_keyring_file
from conn_schemas.signing import private_key_pem

pytestmark = pytest.mark.integration

SERVICES = {
    "executor": "conn_executor",
    "verifier": "conn_verifier",
    "packager": "conn_packager",
    "directive-api": "conn_api",
}


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    root = tmp_path_factory.mktemp("keys")
    keys = Keys.fresh()
    write_keyring_file(root / "keyring.yaml", keys.keyring)
    for name, key in keys.private.items():
        (root / f"{name}.pem").write_bytes(private_key_pem(key))
    return root, keys


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONN_"))}
    return subprocess.run(
        [sys.executable, "-m", module],
        env={
            **base,
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "DATABASE_URL": "postgresql://x:y@127.0.0.1:1/z",
            "CONN_ENV": "development",
            "CONN_API_TOKENS_FILE": str(
                Path(__file__).resolve().parents[2] / "deploy" / "local" / "tokens.yaml"
            ),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("principal", list(SERVICES))
def test_a_service_without_a_signing_key_does_not_start(
    principal: str, material: tuple[Path, Keys]
) -> None:
    root, _ = material
    res = _run(SERVICES[principal], {"CONN_KEYRING_FILE": str(root / "keyring.yaml")})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "CONN_SIGNING_KEY_FILE is not set" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("principal", list(SERVICES))
def test_a_service_with_another_roles_key_does_not_start(
    principal: str, material: tuple[Path, Keys]
) -> None:
    root, _ = material
    other = "example-integration"
    res = _run(
        SERVICES[principal],
        {
            "CONN_KEYRING_FILE": str(root / "keyring.yaml"),
            "CONN_SIGNING_KEY_FILE": str(root / f"{other}.pem"),
        },
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"belongs to {other} (role integration)" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_service_without_a_keyring_does_not_start(material: tuple[Path, Keys]) -> None:
    root, _ = material
    res = _run("conn_executor", {"CONN_SIGNING_KEY_FILE": str(root / "executor.pem")})
    assert res.returncode == 2
    assert "CONN_KEYRING_FILE is not set" in res.stderr


def test_kafka_data_formatted_before_authentication_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conn_localstack import kafka
    from conn_localstack.procs import StackError

    monkeypatch.setenv("CONN_LOCAL_DIR", str(tmp_path))
    data = tmp_path / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\ncluster.id=abc\nnode.id=1\n")
    with pytest.raises(StackError, match="before the local broker required authentication") as e:
        kafka.prepare()
    assert "make clean" in str(e.value)
    assert (data / "meta.properties").exists(), "nothing of the old data is touched"
