"""Publish a signed event to Conn from another service -- a runnable example.

It uses only Conn's published JSON Schemas (schemas/json/) and generic libraries:
aiokafka (any Kafka client will do), cryptography (any Ed25519 implementation will
do) and jsonschema_rs (any JSON Schema validator). It imports nothing from Conn.

The recipe, in any language:
  1. build the event document (see schemas/json/<EventType>.schema.json): `producer`
     is your principal's name, `actor` is {"kind": "service", "id": <principal>};
  2. serialise it to JSON bytes, any way you like;
  3. sign THOSE bytes with your Ed25519 key;
  4. produce them to conn.events with key = incident_id and two headers:
     conn-sig = base64(signature), conn-kid = your key id.

Configuration (environment; for the local stack: `set -a; . .local/trust/env/example-integration.env; set +a`):
  KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL (SASL_PLAINTEXT | SASL_SSL),
  KAFKA_SASL_MECHANISM (SCRAM-SHA-512), KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD,
  KAFKA_SSL_CAFILE (with SASL_SSL), CONN_TOPIC_PREFIX (optional),
  CONN_PRINCIPAL, CONN_SIGNING_KEY_FILE (PEM), CONN_SIGNING_KEY_ID.

Examples:
  python examples/publish_event.py hold INC-123 --detail "payments sees fraud spike"
  python examples/publish_event.py alert INC-123 --service checkout --summary "p99 up"
  python examples/publish_event.py note INC-123 --summary "status page updated"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "json"
VERSIONS = {"AlertReceived": 1, "HoldDeclared": 1, "IncidentRecordUpdated": 1}


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        sys.exit(f"publish_event: set {name}")
    return value


def build(
    event_type: str, incident: str, principal: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": VERSIONS[event_type],
        "incident_id": incident,
        "correlation_id": None,
        "causation_id": None,
        "actor": {"kind": "service", "id": principal, "roles": [], "team": None},
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": principal,
        "payload": payload,
    }


def validate(event: dict[str, Any]) -> None:
    """Check the document against the published schema before sending it."""
    schema = json.loads((SCHEMAS / f"{event['event_type']}.schema.json").read_text())
    errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(event)]
    if errors:
        sys.exit("publish_event: not a valid event: " + "; ".join(errors[:3]))


def sign(value: bytes, key_file: str) -> bytes:
    key = load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        sys.exit("publish_event: the signing key is not an Ed25519 key")
    return base64.b64encode(key.sign(value))


def kafka_options() -> dict[str, Any]:
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    opts: dict[str, Any] = {
        "bootstrap_servers": env("KAFKA_BOOTSTRAP_SERVERS"),
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = ssl.create_default_context(cafile=os.environ.get("KAFKA_SSL_CAFILE"))
    if protocol.startswith("SASL"):
        opts["sasl_mechanism"] = os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        opts["sasl_plain_username"] = env("KAFKA_SASL_USERNAME")
        opts["sasl_plain_password"] = env("KAFKA_SASL_PASSWORD")
    return opts


async def publish(event: dict[str, Any]) -> tuple[int, int]:
    value = json.dumps(event).encode()  # these exact bytes are signed and sent
    headers = [
        ("conn-sig", sign(value, env("CONN_SIGNING_KEY_FILE"))),
        ("conn-kid", env("CONN_SIGNING_KEY_ID").encode()),
    ]
    topic = os.environ.get("CONN_TOPIC_PREFIX", "") + "conn.events"
    producer = AIOKafkaProducer(**kafka_options(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        md = await producer.send_and_wait(
            topic, value, key=event["incident_id"].encode(), headers=headers
        )
    finally:
        await producer.stop()
    return md.partition, md.offset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=["alert", "hold", "note"])
    parser.add_argument("incident", help="incident id (the record key)")
    parser.add_argument("--principal", default=os.environ.get("CONN_PRINCIPAL"))
    parser.add_argument("--service", default="checkout", help="alert: the service")
    parser.add_argument("--summary", default="", help="alert or note: one line")
    parser.add_argument("--detail", default="", help="hold: why")
    args = parser.parse_args(argv)
    principal = args.principal or env("CONN_PRINCIPAL")
    if args.kind == "alert":
        event_type = "AlertReceived"
        payload: dict[str, Any] = {
            "source": "manual",
            "fingerprint": f"{principal}-{uuid.uuid4().hex[:12]}",
            "service": args.service,
            "summary": args.summary,
        }
    elif args.kind == "hold":
        event_type = "HoldDeclared"  # a hold REQUEST: Conn honours it on an open incident
        payload = {"reason": "manual", "detail": args.detail}
    else:
        event_type = "IncidentRecordUpdated"
        payload = {
            "destination": principal,
            "summary": args.summary,
            "delivered": True,
            "idempotency_key": str(uuid.uuid4()),
        }
    event = build(event_type, args.incident, principal, payload)
    validate(event)
    partition, offset = asyncio.run(publish(event))
    print(
        json.dumps(
            {
                "event_id": event["event_id"],
                "event_type": event_type,
                "partition": partition,
                "offset": offset,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
