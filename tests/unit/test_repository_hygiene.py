"""What must never be in the repository, and what the example producer may not use."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def repository() -> None:
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")


def test_no_signing_key_or_pem_file_is_committed(repository: None) -> None:
    # A PEM private-key block of any kind (PKCS#8, RSA, EC, OpenSSH...). Not spelled out
    # literally: this file must not match itself. Prose that says "private key" is fine.
    pattern = "-----BEGIN ([A-Z0-9]+ )*" + "PRIVATE" + " KEY-----"
    found = _git("grep", "-lE", "-e", pattern)
    assert found.returncode == 1 and found.stdout == "", found.stdout
    tracked = _git("ls-files", "*.pem", "*.key", ".local").stdout.split()
    assert tracked == []


def test_the_example_producer_uses_only_the_published_schemas_and_generic_libraries() -> None:
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples
    for path in examples:
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not {m for m in imported if m.startswith("conn")}, (path.name, imported)
