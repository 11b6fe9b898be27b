"""Load scenario YAML files (simulator/scenarios/*.yaml; format in simulator/README.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from conn_simulator.model import Scenario

SCENARIO_DIR = Path(
    os.environ.get("CONN_SIM_SCENARIO_DIR", Path(__file__).resolve().parent.parent / "scenarios")
)


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_raw(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"unknown scenario {name_or_path!r} (have: {available()})")
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    base = raw.pop("extends", None)
    if base:
        # Shallow merge: top-level keys of the child replace the base's.
        raw = load_raw(str(base)) | raw
    return raw


def load(name_or_path: str) -> Scenario:
    return Scenario.from_dict(load_raw(name_or_path))
