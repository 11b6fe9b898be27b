"""Generate schemas/json/*.schema.json from the pydantic models (`make schemas`).

`python -m conn_schemas.generate --check` exits 1 if the committed files drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from conn_schemas.events import EVENT_TYPES, Event

JSON_DIR = Path(__file__).resolve().parent.parent / "json"


def extra_models() -> dict[str, Any]:
    """Non-event documents that other services read (e.g. takeover packets)."""
    try:
        from conn_schemas.packet import TakeoverPacket
    except ImportError:  # packet model not present yet
        return {}
    return {"TakeoverPacket": TakeoverPacket}


def render() -> dict[str, str]:
    docs: dict[str, Any] = {}
    docs["Event"] = TypeAdapter(Event).json_schema()
    for name, cls in EVENT_TYPES.items():
        docs[name] = cls.model_json_schema()
    for name, cls in extra_models().items():
        docs[name] = cls.model_json_schema()
    out: dict[str, str] = {}
    for name, schema in docs.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            **schema,
        }
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        drift = [
            n
            for n, text in rendered.items()
            if not (JSON_DIR / n).exists() or (JSON_DIR / n).read_text() != text
        ]
        stray = sorted(p.name for p in JSON_DIR.glob("*.schema.json") if p.name not in rendered)
        if drift or stray:
            print("JSON Schema drift; run `make schemas`:", *drift, *stray, sep="\n  ")
            return 1
        return 0
    JSON_DIR.mkdir(exist_ok=True)
    for stale in JSON_DIR.glob("*.schema.json"):
        if stale.name not in rendered:
            stale.unlink()
    for name, text in rendered.items():
        (JSON_DIR / name).write_text(text)
    print(f"wrote {len(rendered)} schemas to {JSON_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
