"""`make setup`'s development keys (conn_localstack.trust, setup.d/15-dev-keys.sh).

Issue 12 item 4: development keys are generated into the ignored local data
directory, never committed; the keyring holds public keys only; generation is
idempotent, and a lost signing key is rotated in (the old one stays listed)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conn_localstack.trust import DEV_SIGNERS, KAFKA_USERS, DevTrust
from conn_runtime.trust import read_keyring_file
from conn_schemas.signing import load_private_key

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_signer_gets_a_private_key_only_it_reads_and_a_public_keyring(
    tmp_path: Path,
) -> None:
    trust = DevTrust(tmp_path / "trust")
    trust.ensure()
    keyring = read_keyring_file(trust.keyring_file)
    assert set(keyring.principals) == set(DEV_SIGNERS)
    for name, (role, _) in DEV_SIGNERS.items():
        key_file = trust.key_file(name)
        assert _mode(key_file) == 0o600
        entry = keyring.key_for(load_private_key(key_file.read_bytes()).public_key())
        assert entry is not None and entry.principal.name == name
        assert entry.principal.role.value == role
        env = trust.env_file(name).read_text()
        assert f"CONN_SIGNING_KEY_ID={entry.key_id}\n" in env
        assert _mode(trust.env_file(name)) == 0o600
    assert "PRIVATE" not in trust.keyring_file.read_text()
    assert _mode(trust.users_file) == 0o600
    assert set(KAFKA_USERS) <= set(trust.passwords())


def test_generation_is_idempotent_and_a_lost_key_is_rotated_in(tmp_path: Path) -> None:
    trust = DevTrust(tmp_path / "trust")
    trust.ensure()
    keys = {n: trust.key_file(n).read_bytes() for n in DEV_SIGNERS}
    passwords = trust.passwords()
    assert trust.ensure() == []
    assert {n: trust.key_file(n).read_bytes() for n in DEV_SIGNERS} == keys
    assert trust.passwords() == passwords

    old = read_keyring_file(trust.keyring_file).key_for(
        load_private_key(keys["executor"]).public_key()
    )
    assert old is not None
    trust.key_file("executor").unlink()
    assert trust.ensure() == ["signing key executor"]
    keyring = read_keyring_file(trust.keyring_file)
    listed = [k.key_id for k in keyring.keys.values() if k.principal.name == "executor"]
    assert old.key_id in listed and len(listed) == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_the_default_place_is_ignored_by_git() -> None:
    from conn_localstack.config import paths

    root = paths().root
    if not root.is_relative_to(ROOT):
        pytest.skip("the local data directory is outside the checkout")
    probe = (root / "trust" / "keys" / "executor.pem").relative_to(ROOT)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=ROOT, check=False
    ).returncode
    assert ignored == 0, f"{probe} would be committable"
