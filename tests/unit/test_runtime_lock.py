"""The image's lock (requirements-runtime.lock) is exactly what the services need at run
time: every pin agrees with requirements.lock, and it holds the whole transitive closure of
pyproject's [project.dependencies] (read from the installed distributions' metadata) and
nothing else, so the image ships no test, lint or mutation tooling."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version
    return pins


def _closure(direct: list[str]) -> set[str]:
    env = {k: str(v) for k, v in default_environment().items()}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in direct]
    while todo:
        req, extras = todo.pop()
        name = _norm(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for dep in metadata.requires(req.name) or []:
            sub = Requirement(dep)
            if sub.marker is not None and not any(
                sub.marker.evaluate({**env, "extra": e}) for e in (extras or {""})
            ):
                continue
            todo.append((sub, frozenset(sub.extras)))
    return {n for n, _ in seen}


def test_runtime_lock_pins_agree_with_the_full_lock() -> None:
    full = _pins(ROOT / "requirements.lock")
    runtime = _pins(ROOT / "requirements-runtime.lock")
    assert {n: v for n, v in runtime.items() if full.get(n) != v} == {}


def test_runtime_lock_is_the_closure_of_the_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = _closure(project["dependencies"])
    runtime = set(_pins(ROOT / "requirements-runtime.lock"))
    assert needed - runtime == set(), "missing from requirements-runtime.lock"
    assert runtime - needed == set(), "not needed at run time"
    dev = {_norm(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert dev & runtime == set()


def test_the_image_installs_the_runtime_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-runtime.lock" in dockerfile
    assert "requirements.lock" not in dockerfile.replace("requirements-runtime.lock", "")
