"""Bearer-token authentication: opaque tokens stored as SHA-256 hashes, and
optionally JWTs verified against a configured JWKS (PyJWT).

A tokens file (YAML or JSON) looks like:

    development_only: true        # refused outside CONN_ENV=development
    tokens:
      - identity: alice
        sha256: <hex sha256 of the token>
        roles: [commander]
        team: incident-command
        kind: human               # or "service" (integrations)

No plaintext token is ever stored by the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conn_api.config import ApiSettings, ConfigError
from conn_schemas.values import Actor, Identifier, Role, Team

log = logging.getLogger(__name__)


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: Identifier
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: tuple[Role, ...] = ()
    team: Team | None = Field(default=None, description="A DNS-1123 label, like every team")
    kind: Literal["human", "service"] = "human"


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    development_only: bool = False
    tokens: list[TokenEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    id: str
    roles: tuple[Role, ...]
    team: str | None = None
    kind: Literal["human", "service"] = "human"
    via: str = "token"

    def actor(self) -> Actor:
        return Actor(kind=self.kind, id=self.id, roles=self.roles, team=self.team)

    def has(self, *roles: Role) -> bool:
        return bool(set(self.roles) & set(roles))


class AuthError(Exception):
    """No valid credentials (HTTP 401)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _load_entries(text: str, where: str) -> TokensFile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML/JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"tokens": data}
    try:
        return TokensFile.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}") from exc


@dataclass
class Authenticator:
    by_hash: dict[str, Identity] = field(default_factory=dict)
    jwks: jwt.PyJWKSet | None = None
    jwks_client: jwt.PyJWKClient | None = None
    settings: ApiSettings | None = None

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Authenticator:
        auth = cls(settings=settings)
        sources: list[tuple[str, str]] = []
        path = settings.tokens_path()
        if path is not None:
            try:
                sources.append((Path(path).read_text(), str(path)))
            except OSError as exc:
                raise ConfigError(f"cannot read tokens file {path}: {exc}") from exc
        if settings.conn_api_tokens:
            sources.append((settings.conn_api_tokens, "CONN_API_TOKENS"))
        for text, where in sources:
            parsed = _load_entries(text, where)
            if parsed.development_only and settings.conn_env != "development":
                raise ConfigError(
                    f"{where} holds development-only demo tokens; refused with "
                    f"CONN_ENV={settings.conn_env}"
                )
            for e in parsed.tokens:
                auth.by_hash[e.sha256] = Identity(e.identity, e.roles, e.team, e.kind)
        if settings.conn_api_jwks_file is not None:
            try:
                auth.jwks = jwt.PyJWKSet.from_json(Path(settings.conn_api_jwks_file).read_text())
            except (OSError, jwt.PyJWTError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot load JWKS {settings.conn_api_jwks_file}: {exc}") from exc
        if settings.conn_api_jwks_url:
            auth.jwks_client = jwt.PyJWKClient(settings.conn_api_jwks_url, cache_keys=True)
        return auth

    def authenticate(self, authorization: str | None) -> Identity:
        if not authorization:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("expected 'Authorization: Bearer <token>'")
        digest = hash_token(token)
        for known, identity in self.by_hash.items():
            if hmac.compare_digest(known, digest):
                return identity
        if token.count(".") == 2 and (self.jwks is not None or self.jwks_client is not None):
            return self._verify_jwt(token)
        raise AuthError("invalid token")

    async def authenticate_async(self, authorization: str | None) -> Identity:
        """`authenticate` on the event loop, except a JWT whose key may have to be
        fetched from CONN_API_JWKS_URL (blocking I/O): that one runs in a thread."""
        if self.jwks_client is not None and authorization and authorization.count(".") == 2:
            return await asyncio.to_thread(self.authenticate, authorization)
        return self.authenticate(authorization)

    def _verify_jwt(self, token: str) -> Identity:
        assert self.settings is not None
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            if self.jwks is not None:
                kid = header.get("kid")
                keys = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
                if not keys:
                    raise AuthError("JWT signed by an unknown key")
                key: Any = keys[0]
            else:
                assert self.jwks_client is not None
                key = self.jwks_client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "PS256"],
                audience=s.conn_api_jwt_audience,
                issuer=s.conn_api_jwt_issuer,
                options={
                    "require": ["exp", s.conn_api_jwt_identity_claim],
                    "verify_aud": s.conn_api_jwt_audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid JWT: {exc}") from exc
        raw_roles = claims.get(s.conn_api_jwt_roles_claim) or []
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        roles = tuple(Role(r) for r in raw_roles if r in {x.value for x in Role})
        team = claims.get(s.conn_api_jwt_team_claim)
        ident = str(claims[s.conn_api_jwt_identity_claim])
        try:
            actor = Actor(kind="human", id=ident, roles=roles, team=team)
        except ValidationError as exc:
            raise AuthError("JWT identity or team is not a valid name") from exc
        return Identity(actor.id, roles, actor.team, "human", via="jwt")
