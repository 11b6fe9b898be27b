"""The committed JSON Schemas are strict and backward compatible (issue 14).

- Strict: the envelope's `event_type` and `schema_version` are required, and records
  the models accept validate against the committed schemas (and a record missing its
  type does not), so a producer that follows the schemas is never dead-lettered for it.
- Compatible: each committed schema is compared with the previous release's copy in
  schemas/json/released/ (works on a fresh clone, no network, no tags). A removed event
  type, a removed field or a newly required field fails unless it is listed in
  schemas/json/released/BREAKS (one `<schema file> <json path>` a line, with a reason).
  At a release, copy schemas/json/*.schema.json to released/ and empty BREAKS.
"""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from builders import one_of_each

from conn_schemas import codec, generate

RELEASED = generate.JSON_DIR / "released"
BREAKS_FILE = RELEASED / "BREAKS"


def intentional_breaks() -> list[tuple[str, str]]:
    """(schema file glob, model.field glob) pairs from BREAKS."""
    out = []
    for line in BREAKS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            file, path = line.split()[:2]
            out.append((file, path))
    return out


def listed(change: str, breaks: list[tuple[str, str]]) -> bool:
    file, path = change.split(" ", 1)
    return any(fnmatch(file, f) and fnmatch(path, p) for f, p in breaks)


def _models(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object schema of a document: the root and its $defs, by name."""
    out = {"<root>": schema}
    out.update(schema.get("$defs", {}))
    return {k: v for k, v in out.items() if isinstance(v, dict) and "properties" in v}


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    found = set()
    new_models = _models(new)
    for name, before in _models(old).items():
        after = new_models.get(name)
        if after is None:
            found.add(f"{name} removed")
            continue
        for prop in before["properties"]:
            if prop not in after["properties"]:
                found.add(f"{name}.{prop} removed")
        was = set(before.get("required", []))
        for prop in after.get("required", []):
            if prop not in was:
                found.add(f"{name}.{prop} newly required")
    return found


def all_breaks(released: Path, current: Path) -> set[str]:
    found = set()
    for old_path in sorted(released.glob("*.schema.json")):
        new_path = current / old_path.name
        if not new_path.exists():
            found.add(f"{old_path.name} <file> removed")
            continue
        old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
        found |= {f"{old_path.name} {b.split()[0]}" for b in breaking_changes(old, new)}
    return found


def test_every_schema_is_backward_compatible_with_the_last_release() -> None:
    assert RELEASED.is_dir() and any(RELEASED.glob("*.schema.json"))
    breaks = intentional_breaks()
    unlisted = {c for c in all_breaks(RELEASED, generate.JSON_DIR) if not listed(c, breaks)}
    assert not unlisted, f"breaking schema changes not listed in {BREAKS_FILE}: {sorted(unlisted)}"


def test_the_compatibility_check_catches_removals_and_new_requirements(tmp_path: Path) -> None:
    old = {"properties": {"a": {}, "b": {}}, "required": ["a"]}
    new = {"properties": {"a": {}, "c": {}}, "required": ["a", "c"]}
    assert breaking_changes(old, new) == {"<root>.b removed", "<root>.c newly required"}
    released, current = tmp_path / "released", tmp_path / "current"
    released.mkdir()
    current.mkdir()
    (released / "Gone.schema.json").write_text(json.dumps(old))
    assert all_breaks(released, current) == {"Gone.schema.json <file> removed"}


def test_listed_breaks_are_still_real() -> None:
    """The list only names changes that happened (no stale excuses)."""
    changes = all_breaks(RELEASED, generate.JSON_DIR)
    stale = [b for b in intentional_breaks() if not any(listed(c, [b]) for c in changes)]
    assert not stale, stale


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.event_type)
def test_records_the_models_accept_are_valid_against_the_committed_schemas(event: Any) -> None:
    raw = codec.to_raw(event)
    for name in (f"{event.event_type}.schema.json", "Event.schema.json"):
        schema = json.loads((generate.JSON_DIR / name).read_text())
        validator = jsonschema_rs.validator_for(schema)
        assert validator.is_valid(raw), [e.message for e in validator.iter_errors(raw)]
        for field in ("event_type", "schema_version"):
            assert not validator.is_valid({k: v for k, v in raw.items() if k != field})


def test_the_schemas_refuse_what_the_policy_refuses() -> None:
    raw = codec.to_raw(next(e for e in one_of_each() if e.event_type == "IncidentOpened"))
    schema = json.loads((generate.JSON_DIR / "IncidentOpened.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    for title in ("x\u001b[2J", "x\n# Not on hold", "\u202eevil", "x" * 301):
        assert not validator.is_valid({**raw, "payload": {**raw["payload"], "title": title}})
    for service in ("../eu-west", "a/b", "a..b"):
        assert not validator.is_valid({**raw, "payload": {**raw["payload"], "service": service}})
    assert not validator.is_valid({**raw, "incident_id": "_global"})
