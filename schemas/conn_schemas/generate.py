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
from conn_schemas.signing import (
    CEILING,
    CONTROL_EVENT_TYPES,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
)

JSON_DIR = Path(__file__).resolve().parent.parent / "json"


def record(event_type: str | None) -> dict[str, Any]:
    """How an event travels on Kafka, signed (`x-conn-record`; see schemas/README.md)."""
    if event_type is None:
        topic = "conn.events (conn.control for KillSwitchEngaged / KillSwitchReleased)"
    elif event_type in CONTROL_EVENT_TYPES:
        topic = "conn.control"
    else:
        topic = "conn.events"
    doc: dict[str, Any] = {
        "topic": topic,
        "key": "the event's incident_id, UTF-8",
        "value": "this document as JSON (UTF-8); any key order or whitespace: the exact "
        "bytes sent are what is signed",
        "headers": {
            SIGNATURE_HEADER: "base64 (RFC 4648, padded) of the 64-byte Ed25519 signature "
            "over the exact bytes of the record value",
            KEY_ID_HEADER: "id of the signing key in Conn's keyring (UTF-8)",
        },
        "producer": "must be the signing principal's name (optionally '<name>/<instance>')",
        "actor": "a service writes as itself ({kind: service, id: <principal>}); only the "
        "directive-api signs human actors",
        "readme": "schemas/README.md",
    }
    if event_type is not None:
        doc["signer_roles"] = sorted(r.value for r, types in CEILING.items() if event_type in types)
    return doc


def extra_models() -> dict[str, Any]:
    """Non-event documents that other services read (e.g. takeover packets)."""
    try:
        from conn_schemas.packet import TakeoverPacket
    except ImportError:  # packet model not present yet
        return {}
    from conn_schemas.approvals import DecisionPacket

    return {"TakeoverPacket": TakeoverPacket, "DecisionPacket": DecisionPacket}


def render() -> dict[str, str]:
    docs: dict[str, Any] = {}
    docs["Event"] = {**TypeAdapter(Event).json_schema(), "x-conn-record": record(None)}
    for name, cls in EVENT_TYPES.items():
        docs[name] = {**cls.model_json_schema(), "x-conn-record": record(name)}
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
