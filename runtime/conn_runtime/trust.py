"""The signed log in the runtime: the keyring and signing key a process loads from its
configuration, and THE function every reader uses to turn a consumed record into a
trusted event (`Trust.open`).

The rules themselves live once, in the contract (`conn_schemas.signing`); this module
only finds the files and adapts Kafka records to them.

Configuration (environment, via `KafkaSettings`):

    CONN_KEYRING_FILE        keyring (YAML or JSON); every Conn process needs it
    CONN_SIGNING_KEY_FILE    this process's Ed25519 signing key (PEM, PKCS#8); every
                             process that appends needs it
    CONN_SIGNING_KEY_ID      optional: the key's id; by default found in the keyring by
                             the key's public half
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conn_runtime.settings import KafkaSettings, Topics
from conn_schemas.signing import (
    Keyring,
    KeyringError,
    Principal,
    SignerRole,
    Trusted,
    load_private_key,
    open_record,
    sign,
)

LOG_APPEND_TIME = 1
"""Kafka's timestamp type when the broker, not the producer, stamped the record."""


class TrustConfigError(ValueError):
    """The keyring or signing key is missing or wrong: a clear start-up error."""


# --- the keyring file ---------------------------------------------------------------------------

_cache: dict[tuple[str, int, int], Keyring] = {}
_cache_lock = threading.Lock()


def read_keyring_file(path: Path) -> Keyring:
    """Parse and check a keyring file (YAML or JSON). Cached per (path, mtime, size)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise TrustConfigError(f"cannot read the keyring {path}: {exc.strerror}") from exc
    cache_key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    try:
        text = path.read_text()
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise TrustConfigError(f"cannot parse the keyring {path}: {exc}") from exc
    try:
        keyring = Keyring.from_mapping(data)
    except KeyringError as exc:
        raise TrustConfigError(f"{path}: {exc}") from exc
    with _cache_lock:
        _cache[cache_key] = keyring
    return keyring


def write_keyring_file(path: Path, keyring: Keyring) -> None:
    """Write a keyring (YAML), atomically. Public keys only: it is configuration."""
    body = yaml.safe_dump(keyring.to_mapping(), sort_keys=False)
    header = (
        "# Conn keyring: principal -> role -> permitted event types -> public keys.\n"
        "# Public keys only; managed with `conn keys`. See README, 'Publishing to Conn'.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(header + body)
    os.replace(tmp, path)


def keyring_for(settings: KafkaSettings) -> Keyring:
    if settings.conn_keyring_file is None:
        raise TrustConfigError(
            "CONN_KEYRING_FILE is not set: every Conn process verifies the log against a "
            "keyring (`make setup` writes a development one to .local/trust/keyring.yaml)"
        )
    return read_keyring_file(settings.conn_keyring_file)


# --- signing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """This process's signing identity: its principal, key id and signing key."""

    principal: Principal
    key_id: str
    private_key: Ed25519PrivateKey

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        return sign(value, self.private_key, self.key_id)


def signer_for(settings: KafkaSettings, *, expect_role: SignerRole | None = None) -> Signer:
    """Load the process's signing key and find it in the keyring (start-up checks)."""
    path = settings.conn_signing_key_file
    if path is None:
        raise TrustConfigError(
            "CONN_SIGNING_KEY_FILE is not set: every record a Conn process appends is "
            "signed with its own key (production: mount it from a secret)"
        )
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise TrustConfigError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    try:
        private = load_private_key(pem)
    except KeyringError as exc:
        raise TrustConfigError(f"{path}: {exc}") from exc
    keyring = keyring_for(settings)
    entry = keyring.key_for(private.public_key())
    if entry is None:
        raise TrustConfigError(
            f"the signing key {path} is not in the keyring {settings.conn_keyring_file}: "
            "add its public key (`conn keys list` shows what is there)"
        )
    if settings.conn_signing_key_id and settings.conn_signing_key_id != entry.key_id:
        raise TrustConfigError(
            f"CONN_SIGNING_KEY_ID={settings.conn_signing_key_id} but the keyring lists this "
            f"key as {entry.key_id}"
        )
    if entry.not_after is not None and entry.not_after <= datetime.now(UTC):
        raise TrustConfigError(
            f"the signing key {entry.key_id} was retired at {entry.not_after.isoformat()}: "
            "rotate to a new key (`conn keys rotate`)"
        )
    role = entry.principal.role
    if expect_role is not None and role is not expect_role:
        raise TrustConfigError(
            f"the signing key {entry.key_id} belongs to {entry.principal.name} (role "
            f"{role.value}); this process needs a key of role {expect_role.value}"
        )
    return Signer(entry.principal, entry.key_id, private)


# --- reading ------------------------------------------------------------------------------------


class RecordLike(Protocol):
    """What `Trust.open` needs of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def timestamp_type(self) -> int: ...


@dataclass(frozen=True)
class RawRecord:
    """A record from somewhere other than aiokafka (faust, a test), in aiokafka's shape."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = -1
    """Milliseconds since the epoch."""
    timestamp_type: int = 0


def _headers(headers: object) -> Iterable[tuple[str, bytes | None]]:
    """aiokafka gives a sequence of (name, value) pairs; faust may give a mapping."""
    if headers is None:
        return ()
    pairs: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers  # type: ignore[assignment]
    return [(str(k), v) for k, v in pairs]


def appended_at(record: RecordLike) -> datetime | None:
    """The broker's append time, when the topic stamps it (LogAppendTime)."""
    ts = record.timestamp
    if record.timestamp_type == LOG_APPEND_TIME and ts is not None and ts >= 0:
        return datetime.fromtimestamp(ts / 1000, UTC)
    return None


@dataclass(frozen=True)
class Trust:
    """The keyring and the topic layout: all a reader needs to trust a record."""

    keyring: Keyring
    topics: Topics

    def open(self, record: RecordLike) -> Trusted:
        """Decode and verify one consumed record: the ONE way a Conn process turns a
        record into an event. Raises `UnreadableRecord` (its subclass `UntrustedRecord`
        for signature/entitlement failures) with a precise reason."""
        return open_record(
            self.keyring,
            value=record.value,
            key=record.key,
            headers=_headers(record.headers),
            on_control=record.topic == self.topics.control,
            appended_at=appended_at(record),
        )


def trust_for(settings: KafkaSettings) -> Trust:
    return Trust(keyring_for(settings), settings.topics)
