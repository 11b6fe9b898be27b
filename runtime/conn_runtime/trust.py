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

Decoding once per process: `trust_for` gives every reader of a process (its consumer
loops, the executor's look-ahead, the packager's read-back) one `Trust` with one
`VerifiedCache`, so a record two of them read is verified and decoded once. The cache
holds only successes, keyed by everything the outcome depends on (never the offset
alone): it saves work, it never decides anything.

Reading only a few fields of a record (the rule): a reader may look at a record's
Kafka metadata or a few fields *instead of* opening it only to pass over the record,
and only when opening it could not have changed what it does: the record is one it
would pass over whatever `Trust.open` said (a refusal is also "pass over" for that
reader, and it is not the reader that reports refusals: the consumer group that owns
the record dead-letters it). Anything that acts on a record, folds it or stores it
uses the event `Trust.open` returned: signature, signer, entitlement and the full
model, every time. Example: the executor's look-ahead skips records whose Kafka key is
not its incident's without opening them (a record of another incident is not its
business, and one whose key is not its own incident id would be refused as
`key_mismatch`). Every record the live pipeline does not pass over is folded in
full, so there is no case today where a few fields would do instead of the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conn_runtime.settings import KafkaSettings, Topics
from conn_schemas.signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
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


VERIFIED_CACHE_SIZE = 1024
"""Records a process keeps verified and decoded: far more than the records in flight
between its readers (a look-ahead reads a record shortly before the consumer loop does)."""

_SIGNATURE_HEADERS = (SIGNATURE_HEADER, KEY_ID_HEADER)

CacheKey = tuple[object, ...]


class VerifiedCache:
    """A bounded memo of `open_record`'s *successes*, shared by the readers of one
    process (its consumer loops and its look-ahead), so a record that two of them read
    is verified and decoded once.

    The key is the record's position AND every input of `open_record`: a SHA-256 of
    the value, the record key, the signature and key-id headers (each occurrence), the
    topic's kind (control or not) and the broker's append time. A hit therefore returns
    exactly what verifying and decoding those bytes under this keyring returned before;
    a different record at the same position (a forged one, a recreated topic, another
    signature or key) misses and is verified from scratch. Failures are never cached:
    an unreadable or untrusted record is opened, refused and reported every time.
    The events are frozen models, shared read-only by whoever gets them."""

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[CacheKey, Trusted] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(
        record: RecordLike,
        headers: Sequence[tuple[str, bytes | None]],
        *,
        on_control: bool,
        appended_at: datetime | None,
    ) -> CacheKey | None:
        value = record.value
        if value is None:
            return None
        signed = tuple(
            (name, None if v is None else bytes(v))
            for name, v in headers
            if name in _SIGNATURE_HEADERS
        )
        return (
            record.topic,
            record.partition,
            record.offset,
            hashlib.sha256(value).digest(),
            record.key,
            signed,
            on_control,
            appended_at,
        )

    def get(self, key: CacheKey) -> Trusted | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found

    def put(self, key: CacheKey, trusted: Trusted) -> None:
        self._entries[key] = trusted
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class Trust:
    """The keyring and the topic layout: all a reader needs to trust a record. With a
    `cache` (what `trust_for` gives every reader of the process), a
    record already verified and decoded by another reader of this process is not
    verified and decoded again (`VerifiedCache`: never a different record)."""

    keyring: Keyring
    topics: Topics
    cache: VerifiedCache | None = field(default=None, compare=False)

    def open(self, record: RecordLike) -> Trusted:
        """Decode and verify one consumed record: the ONE way a Conn process turns a
        record into an event. Raises `UnreadableRecord` (its subclass `UntrustedRecord`
        for signature/entitlement failures) with a precise reason."""
        headers = list(_headers(record.headers))
        on_control = record.topic == self.topics.control
        at = appended_at(record)
        cache = self.cache
        key = (
            None
            if cache is None
            else cache.key(record, headers, on_control=on_control, appended_at=at)
        )
        if key is not None and cache is not None:
            found = cache.get(key)
            if found is not None:
                return found
        trusted = open_record(
            self.keyring,
            value=record.value,
            key=record.key,
            headers=headers,
            on_control=on_control,
            appended_at=at,
        )
        if key is not None and cache is not None:
            cache.put(key, trusted)
        return trusted


_shared: dict[tuple[int, Topics], Trust] = {}


def trust_for(settings: KafkaSettings, *, shared: bool = True) -> Trust:
    """The process's trust for these settings: by default the one `Trust` (and its
    `VerifiedCache`) of every reader in this process that reads with the same keyring
    and topics (its consumer loops, the executor's look-ahead, the packager's
    read-back), so between them they verify and decode each record once.
    `shared=False`: a trust of its own, without a cache."""
    keyring = keyring_for(settings)
    if not shared:
        return Trust(keyring, settings.topics)
    key = (id(keyring), settings.topics)
    with _cache_lock:
        trust = _shared.get(key)
        if trust is None or trust.keyring is not keyring:
            trust = _shared[key] = Trust(keyring, settings.topics, VerifiedCache())
        return trust
