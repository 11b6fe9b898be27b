"""Generate schemas/json/*.schema.json from the pydantic models (`make schemas`).

`python -m conn_schemas.generate --check` exits 1 if the committed files drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from conn_schemas.events import EVENT_TYPES, GLOBAL_EVENT_TYPES, Event
from conn_schemas.signing import (
    CEILING,
    CONTROL_EVENT_TYPES,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
)
from conn_schemas.values import GLOBAL_INCIDENT, INCIDENT_ID_PATTERN, RESERVED_INCIDENT_IDS

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
    from conn_schemas.bridge import BridgeState, BridgeSummary

    return {
        "TakeoverPacket": TakeoverPacket,
        "DecisionPacket": DecisionPacket,
        "BridgeState": BridgeState,
        "BridgeSummary": BridgeSummary,
    }


ALWAYS_REQUIRED = (
    "event_type",
    "schema_version",
    "action",
    "kind",
    "packet_version",
    "bridge_version",
)
"""Single-valued fields a reader needs to tell records apart (the envelope's type and
version, the discriminators of actions and expectations, the packet's version). The
models give them defaults for convenience, which pydantic reports as optional; on the
wire they are required (a record without them is dead-lettered)."""


def strict(schema: Any) -> Any:
    """Mark ALWAYS_REQUIRED const properties required, in every (sub)schema."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            must = [
                k for k in ALWAYS_REQUIRED if isinstance(props.get(k), dict) and "const" in props[k]
            ]
            if must:
                schema["required"] = list(dict.fromkeys([*must, *schema.get("required", [])]))
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def incident_id_rule(event_schema: dict[str, Any], event_type: str) -> None:
    """The reserved global-control id is the only id of kill-switch events and never
    the id of anything else (the envelope model checks this across two fields)."""
    prop = event_schema["properties"]["incident_id"]
    if event_type in GLOBAL_EVENT_TYPES:
        prop.pop("pattern", None)
        prop["const"] = GLOBAL_INCIDENT
    else:
        prop["pattern"] = INCIDENT_ID_PATTERN
        prop["not"] = {"enum": sorted(RESERVED_INCIDENT_IDS)}


def render() -> dict[str, str]:
    docs: dict[str, Any] = {}
    union = strict(TypeAdapter(Event).json_schema())
    for name in EVENT_TYPES:
        incident_id_rule(union["$defs"][name], name)
    docs["Event"] = {**union, "x-conn-record": record(None)}
    for name, cls in EVENT_TYPES.items():
        schema = strict(cls.model_json_schema())
        incident_id_rule(schema, name)
        docs[name] = {**schema, "x-conn-record": record(name)}
    for name, cls in extra_models().items():
        docs[name] = strict(cls.model_json_schema())
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
