"""Static checks of the one Dockerfile for every service (no Docker daemon here to build it):
pinned base image, built from requirements-runtime.lock without resolving, non-root, a /healthz
HEALTHCHECK, and every SERVICE mapped to a real console script and the chart's port."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from deploy_support import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
SERVICES = ("directive-api", "executor", "verifier", "packager", "simulator")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def test_base_images_are_pinned_exact_python_311_slim(
    instructions: list[tuple[str, str]],
) -> None:
    args = _arg_defaults(instructions)
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert name == "python", image
        # An exact patch release and Debian release, e.g. 3.11.11-slim-bookworm.
        assert re.fullmatch(r"3\.11\.\d+-slim-[a-z]+", tag), image
    assert "latest" not in DOCKERFILE.read_text()


def test_dependencies_come_from_the_lock_without_resolution(
    instructions: list[tuple[str, str]],
) -> None:
    runs = [rest for word, rest in instructions if word == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert any("--no-deps -r requirements-runtime.lock" in r for r in pip), pip
    # Every pip install is --no-deps: nothing outside the lock is ever resolved, and every
    # extra package (the build backend) is pinned with ==.
    for cmd in pip:
        for part in cmd.split("&&"):
            if "pip install" not in part:
                continue
            assert "--no-deps" in part, part
            tokens = part.split()
            for prev, token in zip(["", *tokens], tokens, strict=False):
                if prev == "-r" or token in {"pip", "install"}:
                    continue
                if re.fullmatch(r"[A-Za-z][\w.-]*", token):
                    raise AssertionError(f"unpinned package {token!r} in: {part}")
    copies = [rest for word, rest in instructions if word == "COPY"]
    assert any(c.startswith("requirements-runtime.lock") for c in copies)


def test_runs_as_a_non_root_user(instructions: list[tuple[str, str]]) -> None:
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER instruction: the image would run as root"
    last = users[-1].split(":")[0]
    assert last not in {"root", "0"}, last
    # The USER comes after the last RUN, so nothing at run time executes as root.
    last_user = max(n for n, (w, _) in enumerate(instructions) if w == "USER")
    last_run = max(n for n, (w, _) in enumerate(instructions) if w == "RUN")
    assert last_user > last_run


def test_healthcheck_hits_healthz(instructions: list[tuple[str, str]]) -> None:
    (check,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "/healthz" in check
    assert "CMD" in check


def test_service_arg_maps_to_console_scripts_and_the_charts_ports(
    instructions: list[tuple[str, str]],
) -> None:
    text = DOCKERFILE.read_text()
    mapping = dict(re.findall(r"^\s*([a-z-]+)\)\s+port=(\d+)", text, flags=re.M))
    assert set(mapping) == set(SERVICES)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for service in SERVICES:
        assert f"conn-{service}" in scripts, f"no console script conn-{service}"
    assert "conn-${SERVICE}" in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, svc in values["services"].items():
        assert int(mapping[name]) == svc["port"], name
    ports = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "local" / "ports.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert int(mapping["directive-api"]) == int(ports["CONN_API_PORT"])
    assert int(mapping["executor"]) == int(ports["CONN_EXECUTOR_METRICS_PORT"])
    assert int(mapping["verifier"]) == int(ports["CONN_VERIFIER_METRICS_PORT"])
    assert int(mapping["packager"]) == int(ports["CONN_PACKAGER_METRICS_PORT"])
    assert int(mapping["simulator"]) == int(ports["CONN_SIMULATOR_PORT"])
    # Exec-form entry point: the service is PID 1 and receives SIGTERM.
    (entry,) = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entry.startswith("[")


def test_copied_sources_exist_and_dockerignore_keeps_the_context_small() -> None:
    for word, rest in _instructions(DOCKERFILE.read_text()):
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            if src == "README.md":  # written by the lead for the release (pyproject readme)
                continue
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".local", "tests"):
        assert entry in ignored


def test_dockerfile_path_is_the_repo_root() -> None:
    assert Path(ROOT, "Dockerfile") == DOCKERFILE
    assert DOCKERFILE.is_file()
