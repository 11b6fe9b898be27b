"""The ledger's hash chain: each entry's hash covers its event and the previous hash.

`link(prev, event)` is SHA-256 over the previous hash and a canonical encoding
(sorted keys, no whitespace) of the event's wire form, so any edit, removal or
reordering of a record changes every later hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from conn_schemas.codec import to_raw
from conn_schemas.events import Envelope

GENESIS = "0" * 64


def canonical(raw: dict[str, Any]) -> bytes:
    return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, event: Envelope) -> str:
    return link_raw(prev_hash, to_raw(event))


def link_raw(prev_hash: str, raw: dict[str, Any]) -> str:
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical(raw))
    return digest.hexdigest()


def sha256_json(document: Any) -> str:
    """Content hash of any JSON-compatible document (packets, authority files)."""
    return hashlib.sha256(canonical(document)).hexdigest()
