"""Helpers for tests of the signed log: one keyring of fresh keys, events re-stamped so
that a given principal may sign them, and every way a record can be forged.

The oracle is DESIGN.md ("A signed log"): the role each event type belongs to is
written out here independently of `conn_schemas.signing.CEILING`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.signing import (
    Keyring,
    SignerRole,
    generate_private_key,
    new_key_id,
    public_key_b64,
    sign,
)
from conn_schemas.values import Actor

OWNER: dict[str, SignerRole] = {
    "IncidentOpened": SignerRole.API,
    "AuthorityDeclared": SignerRole.API,
    "AuthorityChangeProposed": SignerRole.API,
    "AuthorityChangeApproved": SignerRole.API,
    "DirectiveIssued": SignerRole.API,
    "HoldDeclared": SignerRole.API,
    "ResumeDirected": SignerRole.API,
    "TakeoverRequested": SignerRole.API,
    "TakeoverAccepted": SignerRole.API,
    "IncidentClosed": SignerRole.API,
    "AlertReceived": SignerRole.API,
    "KillSwitchEngaged": SignerRole.API,
    "KillSwitchReleased": SignerRole.API,
    "ApprovalRecorded": SignerRole.API,
    "ApprovalDeclined": SignerRole.API,
    "DirectiveAccepted": SignerRole.EXECUTOR,
    "DirectiveRefused": SignerRole.EXECUTOR,
    "StateGathered": SignerRole.EXECUTOR,
    "StepStarted": SignerRole.EXECUTOR,
    "StepSucceeded": SignerRole.EXECUTOR,
    "StepFailed": SignerRole.EXECUTOR,
    "StepOutcomeUnknown": SignerRole.EXECUTOR,
    "IncidentRecordUpdated": SignerRole.EXECUTOR,
    "VerificationSnapshot": SignerRole.VERIFIER,
    "TakeoverPacketPublished": SignerRole.PACKAGER,
}
"""Who produces each event type, per DESIGN.md (a role that may, not the only one)."""

INTEGRATION_TYPES = frozenset({"AlertReceived", "IncidentRecordUpdated", "HoldDeclared"})
"""What DESIGN.md lets another service publish: alerts, record notes, hold requests."""

PRINCIPAL_OF_ROLE = {
    SignerRole.API: "directive-api",
    SignerRole.EXECUTOR: "executor",
    SignerRole.VERIFIER: "verifier",
    SignerRole.PACKAGER: "packager",
    SignerRole.INTEGRATION: "example-integration",
}


def may_sign(role: SignerRole, event_type: str) -> bool:
    """The oracle: may a principal of `role` sign `event_type`?"""
    if role is SignerRole.INTEGRATION:
        return event_type in INTEGRATION_TYPES
    if role is SignerRole.API:
        return OWNER[event_type] is SignerRole.API or event_type == "DirectiveRefused"
    return OWNER[event_type] is role


@dataclass
class Keys:
    """A keyring of fresh keys, one per principal of `PRINCIPAL_OF_ROLE` (plus any added)."""

    private: dict[str, Ed25519PrivateKey]
    key_ids: dict[str, str]
    doc: dict[str, object]
    retired: dict[str, tuple[Ed25519PrivateKey, str]] = field(default_factory=dict)
    """principal -> (signing key, key id) of a key rotated out (`with_retired`)."""

    @classmethod
    def fresh(cls) -> Keys:
        keys = cls({}, {}, {"version": 1, "principals": {}})
        for role, name in PRINCIPAL_OF_ROLE.items():
            keys.add(name, role)
        return keys

    def add(self, name: str, role: SignerRole, event_types: list[str] | None = None) -> str:
        key = generate_private_key()
        kid = new_key_id(name, key.public_key())
        principals = self.doc["principals"]
        assert isinstance(principals, dict)
        entry = principals.setdefault(name, {"role": role.value, "keys": []})
        if event_types is not None:
            entry["event_types"] = event_types
        entry["keys"].append({"id": kid, "public_key": public_key_b64(key.public_key())})
        self.private[name] = key
        self.key_ids[name] = kid
        return kid

    def with_retired(self, at: datetime) -> Keys:
        """A copy whose keyring also lists, for every principal, one more key retired at
        `at` (rotated out: `conn keys retire`). The current keys are the same."""
        out = Keys(dict(self.private), dict(self.key_ids), copy.deepcopy(self.doc))
        principals = out.doc["principals"]
        assert isinstance(principals, dict)
        for name, entry in principals.items():
            key = generate_private_key()
            kid = "retired-" + new_key_id(name, key.public_key())
            entry["keys"].append(
                {
                    "id": kid,
                    "public_key": public_key_b64(key.public_key()),
                    "not_after": at.isoformat(),
                }
            )
            out.retired[name] = (key, kid)
        return out

    @property
    def keyring(self) -> Keyring:
        return Keyring.from_mapping(self.doc)

    def headers(self, value: bytes, principal: str) -> list[tuple[str, bytes]]:
        return sign(value, self.private[principal], self.key_ids[principal])


def restamp(event: ev.Envelope, principal: str, role: SignerRole) -> ev.Envelope:
    """The same event as `principal` would write it: its producer name, itself as the
    actor (all roles but the API, which signs the human it authenticated), and the
    matching `refused_by` on a refusal."""
    update: dict[str, object] = {"producer": principal}
    if role is not SignerRole.API:
        update["actor"] = Actor.service(principal)
    if isinstance(event, ev.DirectiveRefused) and role in (SignerRole.API, SignerRole.EXECUTOR):
        by = "directive-api" if role is SignerRole.API else "executor"
        update["payload"] = event.payload.model_copy(update={"refused_by": by})
    return event.model_copy(update=update)


@dataclass(frozen=True)
class Forgery:
    """One way a record can fail to be trusted, and the reason it must be refused with."""

    name: str
    reason: str
    value: bytes
    key: bytes
    headers: list[tuple[str, bytes]]


def forgeries(
    event: ev.Envelope, keys: Keys, *, unknown: Ed25519PrivateKey | None = None
) -> Iterator[Forgery]:
    """Every forged variant of `event` (already stamped for its rightful signer):
    unsigned, an unknown key, a valid key of a principal not entitled to the type,
    a genuine signature replayed over altered bytes, the wrong Kafka key, and (when
    `keys` lists retired keys, `Keys.with_retired`) the rightful principal's retired
    key: a record signed with it after its retirement (the broker's append time, or
    no broker time at all) is refused."""
    owner = OWNER[event.event_type]
    rightful = PRINCIPAL_OF_ROLE[owner]
    value = encode(event)
    key = event.incident_id.encode()
    yield Forgery("unsigned", "unsigned", value, key, [])
    stranger = unknown or generate_private_key()
    yield Forgery(
        "unknown-key",
        "unknown_key",
        value,
        key,
        sign(value, stranger, new_key_id("nobody", stranger.public_key())),
    )
    for role, name in PRINCIPAL_OF_ROLE.items():
        if may_sign(role, event.event_type):
            continue
        # The non-entitled principal writes the record exactly as itself (its own
        # producer name and actor), so the only thing wrong is the entitlement.
        own = restamp(event, name, role)
        own_value = encode(own)
        yield Forgery(
            f"key-of-{name}", "not_entitled", own_value, key, keys.headers(own_value, name)
        )
    genuine = keys.headers(value, rightful)
    altered = value.replace(b'"producer":"', b'"producer":" ', 1)
    assert altered != value
    yield Forgery("replayed-signature", "bad_signature", altered, key, genuine)
    yield Forgery("wrong-kafka-key", "key_mismatch", value, b"another-incident", genuine)
    if rightful in keys.retired:
        old, old_kid = keys.retired[rightful]
        yield Forgery("retired-key", "key_retired", value, key, sign(value, old, old_kid))
