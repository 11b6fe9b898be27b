"""`conn keys`: generate, add, list, rotate, retire, remove -- and what it writes is what
the runtime loads (`signer_for`, `read_keyring_file`). Files only, no services."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from conn_cli.main import app
from conn_runtime.settings import KafkaSettings
from conn_runtime.trust import TrustConfigError, read_keyring_file, signer_for
from conn_schemas.signing import SignerRole

runner = CliRunner()


def keys(tmp: Path, *args: str) -> Result:
    return runner.invoke(
        app, ["keys", *args], env={"CONN_KEYRING_FILE": str(tmp / "keyring.yaml"), "COLUMNS": "200"}
    )


def test_generate_writes_a_private_key_only_its_owner_reads_and_a_public_keyring(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "secrets" / "status-page.pem"
    r = keys(
        tmp_path,
        "generate",
        "status-page",
        "--role",
        "integration",
        "--event-types",
        "AlertReceived,HoldDeclared",
        "--key-out",
        str(key_file),
    )
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    keyring_text = (tmp_path / "keyring.yaml").read_text()
    assert "PRIVATE" not in keyring_text.upper()
    keyring = read_keyring_file(tmp_path / "keyring.yaml")
    assert keyring.principals["status-page"].event_types == {"AlertReceived", "HoldDeclared"}
    signer = signer_for(
        KafkaSettings(conn_keyring_file=tmp_path / "keyring.yaml", conn_signing_key_file=key_file),
        expect_role=SignerRole.INTEGRATION,
    )
    assert signer.principal.name == "status-page"
    # The same key cannot serve a Conn service: the role is checked at start-up.
    with pytest.raises(TrustConfigError, match="needs a key of role executor"):
        signer_for(
            KafkaSettings(
                conn_keyring_file=tmp_path / "keyring.yaml", conn_signing_key_file=key_file
            ),
            expect_role=SignerRole.EXECUTOR,
        )


def test_generate_refuses_what_the_role_may_never_sign_and_writes_nothing(
    tmp_path: Path,
) -> None:
    r = keys(
        tmp_path, "generate", "greedy", "--role", "integration", "--event-types", "DirectiveIssued"
    )
    assert r.exit_code == 2
    assert "may never sign" in r.output
    assert list(tmp_path.iterdir()) == []
    r = keys(tmp_path, "generate", "x", "--role", "root")
    assert r.exit_code == 2 and "unknown role" in r.output


def test_rotate_keeps_the_old_key_listed_then_retire_and_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert keys(tmp_path, "generate", "executor", "--role", "executor").exit_code == 0
    (old,) = read_keyring_file(tmp_path / "keyring.yaml").keys
    r = keys(tmp_path, "rotate", "executor")
    assert r.exit_code == 0, r.output
    listed = read_keyring_file(tmp_path / "keyring.yaml").keys
    assert old in listed and len(listed) == 2
    new = next(k for k in listed if k != old)
    assert (tmp_path / f"{new}.pem").exists() and (tmp_path / f"{old}.pem").exists()

    r = keys(tmp_path, "list")
    assert r.exit_code == 0 and old in r.output and new in r.output

    assert keys(tmp_path, "retire", old, "--at", "2026-01-01T00:00:00Z").exit_code == 0
    retired = read_keyring_file(tmp_path / "keyring.yaml").keys[old]
    assert retired.not_after is not None and retired.not_after.year == 2026
    assert "retired 2026-01-01" in keys(tmp_path, "list").output
    # A process cannot start signing with a retired key.
    with pytest.raises(TrustConfigError, match="retired"):
        signer_for(
            KafkaSettings(
                conn_keyring_file=tmp_path / "keyring.yaml",
                conn_signing_key_file=tmp_path / f"{old}.pem",
            )
        )

    assert keys(tmp_path, "remove", old).exit_code == 0
    assert set(read_keyring_file(tmp_path / "keyring.yaml").keys) == {new}
    r = keys(tmp_path, "remove", new)
    assert r.exit_code == 2 and "only key" in r.output
    r = keys(tmp_path, "rotate", "nobody")
    assert r.exit_code == 2 and "not in the keyring" in r.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_add_lists_a_key_the_service_generated_itself_with_openssl(tmp_path: Path) -> None:
    """The other service keeps its signing key; Conn's operators only list the public one."""
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", "svc.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "pkey", "-in", "svc.pem", "-pubout", "-out", "svc.pub.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    r = keys(
        tmp_path,
        "add",
        "status-page",
        "--role",
        "integration",
        "--public-key",
        str(tmp_path / "svc.pub.pem"),
    )
    assert r.exit_code == 0, r.output
    signer = signer_for(
        KafkaSettings(
            conn_keyring_file=tmp_path / "keyring.yaml",
            conn_signing_key_file=tmp_path / "svc.pem",
        )
    )
    assert signer.principal.name == "status-page"
    assert signer.principal.role is SignerRole.INTEGRATION
    r = keys(tmp_path, "add", "other", "--public-key", str(tmp_path / "svc.pub.pem"))
    assert r.exit_code == 2 and "pass --role" in r.output


def test_without_a_keyring_the_commands_say_so(tmp_path: Path) -> None:
    r = runner.invoke(app, ["keys", "list"], env={"CONN_KEYRING_FILE": ""})
    assert r.exit_code == 2 and "no keyring" in r.output
    r = keys(tmp_path, "list")
    assert r.exit_code == 2 and "does not exist" in r.output
