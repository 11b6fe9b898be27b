"""Malformed and hostile records for `conn.events`: each must be dead-lettered with
its reason by the consuming services, and disturb nothing else.

`hostile_records(rng, incident_ids)` returns (label, expected reason, key, value)
tuples; values are built so that `conn_schemas.codec.decode` rejects every one (the
injector signs them with a key the keyring knows, so the bytes are what is refused).
`forged_records(rng, incident_ids, keys)` returns well-formed records whose signature
or signer is wrong: a directive forged every way there is (unsigned, an unknown key,
keys of principals not entitled to a directive, a genuine signature over altered bytes,
the wrong Kafka key), and one forgery (of a randomly chosen kind) of every other event
type of `conn.events`, aimed at a live incident.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Keys, forgeries, restamp
from unit.builders import one_of_each

from conn_schemas import events as ev
from conn_schemas.codec import MAX_RECORD_BYTES
from conn_schemas.values import Actor, RestartDependencyTier, Role


@dataclass(frozen=True)
class Hostile:
    label: str
    reason: str
    """The `dlq.reason` the readers give it (UnreadableRecord.reason)."""
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] | None = None
    """Signature headers as forged; None: the injector signs the record itself."""

    @property
    def untrusted(self) -> bool:
        return self.headers is not None


def forged_records(rng: random.Random, incident_ids: list[str], keys: Keys) -> list[Hostile]:
    """A well-formed DirectiveIssued on a live incident, forged every way there is."""
    inc = rng.choice(incident_ids) if incident_ids else "chaos-hostile"
    directive = ev.new_event(
        ev.DirectiveIssued,
        incident_id=inc,
        payload=ev.DirectiveIssuedPayload(
            action=RestartDependencyTier(tier="pricing-cache", region="us-east"),
            based_on_sequence=0,
        ),
        actor=Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command"),
        producer="directive-api",
        correlation_id=f"forged-{uuid.uuid4().hex[:8]}",
    )
    out = [
        Hostile(f"forged: {f.name}", f.reason, f.key, f.value, tuple(f.headers))
        for f in forgeries(directive, keys)
    ]
    for template in one_of_each():
        etype = template.event_type
        if etype in ("DirectiveIssued", "KillSwitchEngaged", "KillSwitchReleased"):
            continue  # the directive above; the kill switch lives on conn.control
        owner = OWNER[etype]
        event = restamp(
            template.model_copy(
                update={
                    "event_id": uuid.uuid4(),
                    "incident_id": inc,
                    "correlation_id": directive.correlation_id,
                }
            ),
            PRINCIPAL_OF_ROLE[owner],
            owner,
        )
        f = rng.choice(list(forgeries(event, keys)))
        out.append(Hostile(f"forged {etype}: {f.name}", f.reason, f.key, f.value, tuple(f.headers)))
    return out


def _envelope(event_type: str, incident_id: str, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "incident_id": incident_id,
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "actor": {"id": "mallory", "kind": "human", "roles": ["commander"], "team": None},
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "chaos-hostile",
        "payload": {},
    }
    doc.update(over)
    return doc


def hostile_records(rng: random.Random, incident_ids: list[str]) -> list[Hostile]:
    """One of each kind, keyed on live incidents (so they sit in busy partitions)."""

    def key() -> bytes:
        return rng.choice(incident_ids).encode() if incident_ids else b"chaos-hostile"

    inc = rng.choice(incident_ids) if incident_ids else "chaos-hostile"
    directive = _envelope(
        "DirectiveIssued",
        inc,
        payload={
            "action": {
                "action": "restart_dependency_tier",
                "tier": "orders-db",
                "region": "eu-west",
            },
            "expectation": None,
            "based_on_sequence": 0,
            "rationale": "hostile",
        },
    )
    wrong_types = dict(directive, payload={"action": 42, "based_on_sequence": "zero"}, actor=7)
    newer = dict(directive, schema_version=99)
    string_version = dict(directive, schema_version="1")
    near_limit = _envelope("StepStarted", inc, payload={"pad": "x" * (MAX_RECORD_BYTES - 2_000)})
    over_limit = _envelope("StepStarted", inc, payload={"pad": "y" * (MAX_RECORD_BYTES + 500)})
    return [
        Hostile("binary garbage", "not_json", key(), rng.randbytes(512)),
        Hostile("truncated JSON", "not_json", key(), orjson.dumps(directive)[:-7]),
        Hostile("JSON array", "not_an_object", key(), b"[1, 2, 3]"),
        Hostile("JSON string", "not_an_object", key(), b'"DirectiveIssued"'),
        Hostile(
            "unknown event type",
            "unknown_event_type",
            key(),
            orjson.dumps(_envelope("FormatDisk", inc)),
        ),
        Hostile("no event type", "unknown_event_type", key(), b'{"payload": {}}'),
        Hostile("unknown (newer) version", "unsupported_version", key(), orjson.dumps(newer)),
        Hostile("version as a string", "unsupported_version", key(), orjson.dumps(string_version)),
        Hostile("wrong field types", "invalid", key(), orjson.dumps(wrong_types)),
        Hostile("empty value (tombstone)", "empty", key(), None),
        Hostile("huge payload just under 1 MB", "invalid", key(), orjson.dumps(near_limit)),
        Hostile("huge payload over 1 MB", "too_large", key(), orjson.dumps(over_limit)),
    ]
