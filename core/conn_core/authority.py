"""Reading a runbook/authority file (YAML text) into an `AuthorityBoundary`.

Pure: the caller reads the file. The content hash recorded in the log is the
SHA-256 of the exact bytes, so an SRE can tell which version was in force.
"""

from __future__ import annotations

import hashlib

import yaml
from pydantic import ValidationError

from conn_schemas.values import AuthorityBoundary


class AuthorityFileError(ValueError):
    """The file is not a valid authority declaration; the message says where."""


def parse_authority(content: bytes, *, holder: str | None = None) -> tuple[AuthorityBoundary, str]:
    """Parse YAML bytes; `holder` overrides who holds the conn (the declaring commander)."""
    digest = hashlib.sha256(content).hexdigest()
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise AuthorityFileError(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AuthorityFileError("the authority file must be a YAML mapping")
    if holder is not None:
        data = {**data, "holder": {**(data.get("holder") or {}), "identity": holder}}
    try:
        return AuthorityBoundary.model_validate(data), digest
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AuthorityFileError(f"{where}: {first['msg']} ({exc.error_count()} errors)") from exc
