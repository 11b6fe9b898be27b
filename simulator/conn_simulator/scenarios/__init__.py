"""Load scenario YAML files: the built-in ones are package data next to this module
(`conn_simulator/scenarios/*.yaml`, read with importlib.resources, so they travel with
the installed package); format in simulator/README.md.

`load("seed_outage")` reads a built-in scenario (or, with CONN_SIM_SCENARIO_DIR set, one
from that directory instead); `load("path/to/my.yaml")` reads a file."""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from conn_simulator.model import Scenario


def _directory() -> Traversable:
    override = os.environ.get("CONN_SIM_SCENARIO_DIR")
    return Path(override) if override else files(__name__)


SCENARIO_DIR = _directory()


def available() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in SCENARIO_DIR.iterdir()
        if p.is_file() and p.name.endswith(".yaml")
    )


def load_raw(name_or_path: str) -> dict[str, Any]:
    path: Traversable = Path(name_or_path)
    if not Path(name_or_path).suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"unknown scenario {name_or_path!r} (have: {available()})")
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    base = raw.pop("extends", None)
    if base:
        # Shallow merge: top-level keys of the child replace the base's.
        raw = load_raw(str(base)) | raw
    return raw


def load(name_or_path: str) -> Scenario:
    return Scenario.from_dict(load_raw(name_or_path))
