"""Signed records: who may write what on the log, and how every reader checks it.

This module is the trust contract, written once and shared by every process
(pure code, no I/O). DESIGN.md, "A signed log" and invariant 1.

The record
    A producer serialises its event to JSON however it likes and signs *those exact
    bytes* (the Kafka record value) with Ed25519. Two record headers travel with it:

        conn-sig   base64 (RFC 4648, with padding) of the 64-byte Ed25519 signature
        conn-kid   the key id, as listed in the keyring (UTF-8)

    The record key must be the event's `incident_id` (UTF-8). Nothing is
    canonicalised: a Go, Java or shell producer signs the bytes it sends.

The keyring (configuration, loaded by every process)
    principal -> role -> permitted event types -> public keys (several, for rotation).
    `CEILING` below is the hard limit per role, in code: the keyring may only narrow
    a principal's event types within its role's ceiling, so a mis-edited file can
    never entitle, say, an integration to `DirectiveIssued`.

Binding the self-asserted envelope to the verified signer
    - `producer` must be the principal's name, optionally followed by `/<instance>`
      (e.g. `executor/executor-eu-1`);
    - a principal of any role but `api` writes as itself: `actor` must be the service
      actor whose id is the principal's name;
    - only the `api` role may sign events whose actor is a human: it authenticates the
      human (token) and signs that identity into the event. It may also sign service
      actors it authenticated itself (alert sources posting to its webhooks), but never
      one named after a Conn service principal (executor, verifier, packager);
    - `DirectiveRefused.refused_by` must name the role that signed it;
    - kill-switch events live on `conn.control` with `incident_id` `_global`; nothing
      else does, and they appear nowhere else.

What a reader does NOT get from a signature, and re-checks itself
    A valid signature proves who wrote a record and that they may write its type; it
    does not prove the record is *right*. Every fold therefore keeps re-checking what
    it always did, whoever the signer: control verbs (`HoldDeclared`, `ResumeDirected`,
    `TakeoverRequested`, `TakeoverAccepted`) go through `conn_core.rules.check_control`
    inside the fold, so a hold request from an integration is honoured only on an open
    incident and a resume or takeover needs the human the rule names; the executor
    re-decides every `DirectiveIssued` against the log prefix before acting (even one
    written by another API replica); duplicate event ids change nothing.

Reason codes (dead-letter `dlq.reason`) of `UntrustedRecord`:
    unsigned, bad_signature, unknown_key, key_retired, wrong_topic, key_mismatch,
    not_entitled, producer_mismatch, actor_not_allowed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from conn_schemas.codec import MAX_RECORD_BYTES, UnreadableRecord, decode
from conn_schemas.events import EVENT_TYPES, GLOBAL_INCIDENT, DirectiveRefused, Event
from conn_schemas.values import Role

SIGNATURE_HEADER = "conn-sig"
KEY_ID_HEADER = "conn-kid"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


class SignerRole(StrEnum):
    """What kind of producer a principal is. Decides its ceiling of event types."""

    API = "api"
    EXECUTOR = "executor"
    VERIFIER = "verifier"
    PACKAGER = "packager"
    INTEGRATION = "integration"


CEILING: Mapping[SignerRole, frozenset[str]] = {
    # The directive-api: human intent (signed with the token-authenticated identity),
    # the API-side refusals, alert intake and the global kill switch (conn.control).
    # ApprovalRecorded / ApprovalDeclined: the two-person rule (issue 19), signed with
    # the token-authenticated approver's identity; no other role may write them.
    SignerRole.API: frozenset(
        {
            "IncidentOpened",
            "AuthorityDeclared",
            "AuthorityChangeProposed",
            "AuthorityChangeApproved",
            "DirectiveIssued",
            "DirectiveRefused",
            "HoldDeclared",
            "ResumeDirected",
            "TakeoverRequested",
            "TakeoverAccepted",
            "IncidentClosed",
            "AlertReceived",
            "KillSwitchEngaged",
            "KillSwitchReleased",
            "ApprovalRecorded",
            "ApprovalDeclined",
        }
    ),
    SignerRole.EXECUTOR: frozenset(
        {
            "DirectiveAccepted",
            "DirectiveRefused",
            "StateGathered",
            "StepStarted",
            "StepSucceeded",
            "StepFailed",
            "StepOutcomeUnknown",
            "IncidentRecordUpdated",
        }
    ),
    SignerRole.VERIFIER: frozenset({"VerificationSnapshot"}),
    SignerRole.PACKAGER: frozenset({"TakeoverPacketPublished"}),
    # Other services: facts and a request to stop; never directives, authority,
    # verification, acceptance or packets.
    SignerRole.INTEGRATION: frozenset({"AlertReceived", "IncidentRecordUpdated", "HoldDeclared"}),
}
"""The most each role may ever sign. A keyring may narrow it, never widen it."""

CONTROL_EVENT_TYPES = frozenset({"KillSwitchEngaged", "KillSwitchReleased"})
"""The only event types on `conn.control` (and only there)."""

CONN_SERVICE_ROLES = frozenset({SignerRole.EXECUTOR, SignerRole.VERIFIER, SignerRole.PACKAGER})

REFUSED_BY: Mapping[SignerRole, str] = {
    SignerRole.API: "directive-api",
    SignerRole.EXECUTOR: "executor",
}
"""`DirectiveRefused.refused_by` each role may claim."""


class Reason(StrEnum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    KEY_RETIRED = "key_retired"
    WRONG_TOPIC = "wrong_topic"
    KEY_MISMATCH = "key_mismatch"
    NOT_ENTITLED = "not_entitled"
    PRODUCER_MISMATCH = "producer_mismatch"
    ACTOR_NOT_ALLOWED = "actor_not_allowed"


class UntrustedRecord(UnreadableRecord):
    """A readable record whose signer is unknown, not proven, or not entitled to it.
    Dead-lettered with `reason` by the consumer-group owners, never folded."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason.value, detail)


class KeyringError(ValueError):
    """The keyring configuration is invalid (a clear message for start-up)."""


# --- the keyring file ---------------------------------------------------------------------

PrincipalName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class KeyEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: KeyId
    public_key: str = Field(
        description="Ed25519 public key: base64 of the raw 32 bytes, or a PEM "
        "SubjectPublicKeyInfo block (what `openssl pkey -pubout` prints)"
    )
    not_after: AwareDatetime | None = Field(
        default=None,
        description="Retired: records the broker appended after this time no longer verify "
        "(records before it keep verifying, so history stays readable)",
    )

    @field_validator("public_key")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_public_key(value)
        return value


class PrincipalEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: SignerRole
    event_types: tuple[str, ...] | None = Field(
        default=None, description="Narrows the role's ceiling; absent = the whole ceiling"
    )
    keys: tuple[KeyEntry, ...] = Field(min_length=1)
    description: str = ""


class KeyringFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    principals: dict[PrincipalName, PrincipalEntry]


def parse_public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    what = "not an Ed25519 public key (base64 of 32 bytes, or PEM)"
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):  # a PEM key of another algorithm
        raise ValueError(f"{what}: not an Ed25519 public key")
    return key


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256 of the raw public key, hex."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def new_key_id(principal: str, key: Ed25519PublicKey) -> str:
    """`<principal>-<first 12 hex of the key's fingerprint>`: stable, unique per key."""
    return f"{principal}-{fingerprint(key)[:12]}"


# --- the compiled keyring -------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    name: str
    role: SignerRole
    event_types: frozenset[str]
    """What this principal may sign: the keyring's narrowing, always within the ceiling."""


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    principal: Principal
    key: Ed25519PublicKey
    not_after: datetime | None


class Keyring:
    """The verified form of a keyring file: key id -> (principal, key)."""

    def __init__(self, source: KeyringFile) -> None:
        self.source = source
        self.principals: dict[str, Principal] = {}
        self.keys: dict[str, PublicKey] = {}
        seen_keys: dict[bytes, str] = {}
        for name, entry in source.principals.items():
            ceiling = CEILING[entry.role]
            wanted = frozenset(entry.event_types) if entry.event_types is not None else ceiling
            unknown = sorted(wanted - set(EVENT_TYPES))
            if unknown:
                raise KeyringError(f"principal {name!r}: unknown event types {unknown}")
            beyond = sorted(wanted - ceiling)
            if beyond:
                raise KeyringError(
                    f"principal {name!r} (role {entry.role.value}) may never sign {beyond}: "
                    f"the {entry.role.value} role's ceiling is {sorted(ceiling)}"
                )
            principal = Principal(name, entry.role, wanted & ceiling)
            self.principals[name] = principal
            for k in entry.keys:
                if k.id in self.keys:
                    raise KeyringError(f"key id {k.id!r} is listed twice")
                pub = parse_public_key(k.public_key)
                raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                if raw in seen_keys:
                    raise KeyringError(
                        f"key {k.id!r} of {name!r} is the same public key as {seen_keys[raw]!r}"
                    )
                seen_keys[raw] = k.id
                self.keys[k.id] = PublicKey(k.id, principal, pub, k.not_after)

    @classmethod
    def from_mapping(cls, data: object) -> Keyring:
        try:
            return cls(KeyringFile.model_validate(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise KeyringError(
                f"invalid keyring: {where}: {first['msg']} ({exc.error_count()} errors)"
            ) from exc

    def to_mapping(self) -> dict[str, Any]:
        body = self.source.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        return {"version": self.source.version, **body}

    def key_for(self, public: Ed25519PublicKey) -> PublicKey | None:
        """The keyring entry of this public key (a signer finds its own id this way)."""
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for entry in self.keys.values():
            other = entry.key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            if other == raw:
                return entry
        return None


# --- signing ------------------------------------------------------------------------------


Headers = Sequence[tuple[str, bytes]]


def sign(value: bytes, private_key: Ed25519PrivateKey, key_id: str) -> list[tuple[str, bytes]]:
    """The two headers that make `value` a signed record."""
    signature = private_key.sign(value)
    return [(SIGNATURE_HEADER, base64.b64encode(signature)), (KEY_ID_HEADER, key_id.encode())]


@dataclass(frozen=True)
class Trusted:
    """A record that verified: the event and who signed it."""

    event: Event
    principal: str
    role: SignerRole
    key_id: str


def _header(headers: Iterable[tuple[str, bytes | None]], name: str) -> bytes | None:
    found = [v for k, v in headers if k == name]
    if len(found) > 1:
        raise UntrustedRecord(Reason.BAD_SIGNATURE, f"header {name} appears {len(found)} times")
    if not found or found[0] is None:
        return None
    return found[0]


_B64 = re.compile(rb"\A[A-Za-z0-9+/]+={0,2}\Z")


def verify_signature(
    keyring: Keyring,
    value: bytes,
    headers: Iterable[tuple[str, bytes | None]],
    *,
    appended_at: datetime | None,
) -> PublicKey:
    """Check the signature headers over `value`. Returns the signing key's entry."""
    headers = list(headers)
    sig_b64 = _header(headers, SIGNATURE_HEADER)
    kid_raw = _header(headers, KEY_ID_HEADER)
    if sig_b64 is None and kid_raw is None:
        raise UntrustedRecord(Reason.UNSIGNED, f"no {SIGNATURE_HEADER}/{KEY_ID_HEADER} headers")
    if sig_b64 is None or kid_raw is None:
        missing = SIGNATURE_HEADER if sig_b64 is None else KEY_ID_HEADER
        raise UntrustedRecord(Reason.UNSIGNED, f"header {missing} is missing")
    try:
        kid = kid_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UntrustedRecord(Reason.UNKNOWN_KEY, "key id is not UTF-8") from None
    entry = keyring.keys.get(kid)
    if entry is None:
        raise UntrustedRecord(Reason.UNKNOWN_KEY, f"key id {kid[:140]!r} is not in the keyring")
    if entry.not_after is not None and (appended_at is None or appended_at > entry.not_after):
        when = appended_at.isoformat() if appended_at else "an unknown (producer-set) time"
        raise UntrustedRecord(
            Reason.KEY_RETIRED,
            f"key {kid!r} of {entry.principal.name} was retired at "
            f"{entry.not_after.isoformat()}; record appended at {when}",
        )
    if not _B64.match(sig_b64):
        raise UntrustedRecord(Reason.BAD_SIGNATURE, f"{SIGNATURE_HEADER} is not base64")
    try:
        signature = base64.b64decode(sig_b64, validate=True)
    except binascii.Error:
        raise UntrustedRecord(Reason.BAD_SIGNATURE, f"{SIGNATURE_HEADER} is not base64") from None
    if len(signature) != SIGNATURE_BYTES:
        raise UntrustedRecord(
            Reason.BAD_SIGNATURE, f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}"
        )
    try:
        entry.key.verify(signature, value)
    except InvalidSignature:
        raise UntrustedRecord(
            Reason.BAD_SIGNATURE,
            f"signature does not match the record's bytes under key {kid!r} "
            f"({entry.principal.name})",
        ) from None
    return entry


def check_entitled(principal: Principal, event: Event, keyring: Keyring) -> UntrustedRecord | None:
    """May `principal` sign `event`? None if yes, else the reason it may not."""
    etype = event.event_type
    if etype not in principal.event_types or etype not in CEILING[principal.role]:
        return UntrustedRecord(
            Reason.NOT_ENTITLED,
            f"{principal.name} (role {principal.role.value}) may not sign {etype}",
        )
    if isinstance(event, DirectiveRefused) and event.payload.refused_by != REFUSED_BY.get(
        principal.role
    ):
        return UntrustedRecord(
            Reason.NOT_ENTITLED,
            f"{principal.name} (role {principal.role.value}) may not sign a refusal "
            f"by {event.payload.refused_by}",
        )
    producer = event.producer
    if producer != principal.name and not producer.startswith(principal.name + "/"):
        return UntrustedRecord(
            Reason.PRODUCER_MISMATCH,
            f"producer {producer[:140]!r} is not the signer {principal.name!r}",
        )
    actor = event.actor
    if principal.role is SignerRole.API:
        if actor.kind == "service":
            other = keyring.principals.get(actor.id)
            if other is not None and other.role in CONN_SERVICE_ROLES:
                return UntrustedRecord(
                    Reason.ACTOR_NOT_ALLOWED,
                    f"{principal.name} may not sign as the {other.role.value} {actor.id!r}",
                )
        return None
    if actor.kind != "service" or actor.id != principal.name:
        return UntrustedRecord(
            Reason.ACTOR_NOT_ALLOWED,
            f"{principal.name} (role {principal.role.value}) may only write as itself, "
            f"not as the {actor.kind} {actor.id!r}",
        )
    if not set(actor.roles) <= {Role.INTEGRATION} or actor.team is not None:
        return UntrustedRecord(
            Reason.ACTOR_NOT_ALLOWED,
            f"{principal.name} may not claim roles {[r.value for r in actor.roles]} "
            f"or a team for itself",
        )
    return None


def open_record(
    keyring: Keyring,
    *,
    value: bytes | None,
    key: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
    on_control: bool,
    appended_at: datetime | None = None,
) -> Trusted:
    """Turn a consumed record into a trusted event, or raise.

    Raises `UntrustedRecord` (signature, signer, entitlement, binding) or
    `UnreadableRecord` (not a Conn event at all), each with a precise `reason`.
    `on_control`: the record was read from `conn.control`. `appended_at`: the
    broker's LogAppendTime, if the topic stamps it (needed for retired keys).
    The signature is checked before the value is parsed."""
    if value is None:
        raise UnreadableRecord("empty", "record has no value")
    if len(value) > MAX_RECORD_BYTES:
        raise UnreadableRecord("too_large", f"{len(value)} bytes > {MAX_RECORD_BYTES}")
    signer = verify_signature(keyring, value, headers, appended_at=appended_at)
    event = decode(value)
    is_global = event.incident_id == GLOBAL_INCIDENT
    is_control_type = event.event_type in CONTROL_EVENT_TYPES
    if not (on_control == is_global == is_control_type):
        where = "conn.control" if on_control else "conn.events"
        raise UntrustedRecord(
            Reason.WRONG_TOPIC,
            f"{event.event_type} of incident {event.incident_id!r} does not belong on {where}",
        )
    if key != event.incident_id.encode():
        shown = key[:140].decode(errors="replace") if key is not None else None
        raise UntrustedRecord(
            Reason.KEY_MISMATCH,
            f"record key {shown!r} is not the event's incident_id {event.incident_id!r}",
        )
    refusal = check_entitled(signer.principal, event, keyring)
    if refusal is not None:
        raise refusal
    return Trusted(event, signer.principal.name, signer.principal.role, signer.key_id)


# --- signing keys -------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (store it as a secret; never commit it)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyringError(f"not a readable PEM signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyringError("the signing key is not an Ed25519 key")
    return key
