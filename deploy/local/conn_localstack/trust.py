"""Development trust material for the local stack, generated into `.local/trust/`.

    .local/trust/keyring.yaml         public keys of the dev principals (configuration)
    .local/trust/keys/<name>.pem      their Ed25519 signing keys (0600)
    .local/trust/kafka-users.json     SCRAM passwords of every Kafka principal (0600)
    .local/trust/env/<name>.env       `set -a; . .local/trust/env/sre.env` to act as one

Everything here is for development only and lives in the ignored `.local/` directory:
nothing is ever committed. Production keys and passwords come from secrets (env vars
and mounted files, see README "Publishing to Conn from another service").

`make setup` generates it (setup.d/15-dev-keys.sh); `make up` makes sure it exists.
Generation is idempotent: existing keys and passwords are kept; a missing key is
rotated in (the old one stays listed), a missing principal is added.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conn_localstack.config import database_url, kafka_bootstrap, paths

if TYPE_CHECKING:
    from conn_runtime.acls import AclBinding
    from conn_runtime.settings import Topics

DEV_SIGNERS: dict[str, tuple[str, list[str] | None]] = {
    "directive-api": ("api", None),
    "executor": ("executor", None),
    "verifier": ("verifier", None),
    "packager": ("packager", None),
    "example-integration": ("integration", None),
}
"""Dev keyring principals: name -> (role, narrowed event types or None for the ceiling)."""

CONN_SERVICES = ("directive-api", "executor", "verifier", "packager")
INTEGRATIONS = ("example-integration",)
READERS = ("sre",)
SUPER_USERS = ("broker", "admin")
"""`broker`: the broker's own inter-broker identity; `admin`: topics and ACLs."""
CONTROLLER_USER = "controller"
"""The controller listener's identity (SASL/PLAIN: KRaft cannot use SCRAM there)."""

KAFKA_USERS = (*SUPER_USERS, *CONN_SERVICES, *INTEGRATIONS, *READERS)
SASL_MECHANISM = "SCRAM-SHA-512"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class DevTrust:
    root: Path

    @property
    def keyring_file(self) -> Path:
        return self.root / "keyring.yaml"

    @property
    def users_file(self) -> Path:
        return self.root / "kafka-users.json"

    def key_file(self, principal: str) -> Path:
        return self.root / "keys" / f"{principal}.pem"

    def env_file(self, principal: str) -> Path:
        return self.root / "env" / f"{principal}.env"

    def passwords(self) -> dict[str, str]:
        data = json.loads(self.users_file.read_text())
        return {str(k): str(v) for k, v in data.items()}

    def password(self, user: str) -> str:
        return self.passwords()[user]

    # -- what a process needs ----------------------------------------------------------------

    def kafka_env(self, user: str) -> dict[str, str]:
        """KAFKA_* variables that authenticate as `user` (SASL/SCRAM on loopback)."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.password(user),
        }

    def service_env(self, principal: str) -> dict[str, str]:
        """Everything a Conn process acting as `principal` needs: its Kafka identity,
        the keyring, and (for signers) its signing key."""
        env = {
            **self.kafka_env(principal),
            "CONN_KEYRING_FILE": str(self.keyring_file),
            "CONN_ENV": "development",  # this material is refused outside development
        }
        if principal in DEV_SIGNERS:
            env["CONN_SIGNING_KEY_FILE"] = str(self.key_file(principal))
        return env

    def client_options(self, user: str) -> dict[str, Any]:
        """aiokafka keyword arguments (without bootstrap_servers) authenticating as `user`."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": user,
            "sasl_plain_password": self.password(user),
        }

    # -- generating it -----------------------------------------------------------------------

    def ensure(self) -> list[str]:
        """Create whatever is missing. Returns what was created (for `make setup`)."""
        from conn_runtime.trust import read_keyring_file, write_keyring_file
        from conn_schemas.signing import (
            Keyring,
            generate_private_key,
            new_key_id,
            private_key_pem,
            public_key_b64,
        )

        created: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.root.chmod(0o700)
        users = self.passwords() if self.users_file.exists() else {}
        for user in (*KAFKA_USERS, CONTROLLER_USER):
            if user not in users:
                users[user] = secrets.token_urlsafe(24)
                created.append(f"kafka user {user}")
        _write_private(self.users_file, (json.dumps(users, indent=2) + "\n").encode())

        doc: dict[str, Any] = (
            read_keyring_file(self.keyring_file).to_mapping()
            if self.keyring_file.exists()
            else {"version": 1, "principals": {}}
        )
        principals = doc.setdefault("principals", {})
        for name, (role, types) in DEV_SIGNERS.items():
            key_file = self.key_file(name)
            entry = principals.get(name)
            if key_file.exists() and entry is not None:
                continue
            key = generate_private_key()
            _write_private(key_file, private_key_pem(key))
            if entry is None:
                entry = principals[name] = {"role": role, "keys": []}
                if types is not None:
                    entry["event_types"] = types
            entry["keys"].append(
                {
                    "id": new_key_id(name, key.public_key()),
                    "public_key": public_key_b64(key.public_key()),
                }
            )
            created.append(f"signing key {name}")
        write_keyring_file(self.keyring_file, Keyring.from_mapping(doc))
        for name in (*CONN_SERVICES, *INTEGRATIONS, *READERS, "admin"):
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(),
                "DATABASE_URL": database_url(),
                **self.service_env(name),
            }
            if name in DEV_SIGNERS:  # for producers outside Conn (examples/publish_event.py)
                env["CONN_PRINCIPAL"] = name
                env["CONN_SIGNING_KEY_ID"] = principals[name]["keys"][-1]["id"]
            text = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
            _write_private(self.env_file(name), text.encode())
        return created


def dev_acls(topics: Topics, group_prefix: str = "") -> list[AclBinding]:
    """The ACLs of the dev principals on `topics` (groups prefixed like the topics)."""
    from conn_runtime.acls import Groups, KafkaPrincipals, acl_bindings

    principals = KafkaPrincipals(integrations=INTEGRATIONS, readers=READERS)
    return acl_bindings(topics, principals, Groups(prefix=group_prefix))


def dev_trust() -> DevTrust:
    """The local stack's trust material (generated on first use)."""
    trust = DevTrust(paths().root / "trust")
    if not (trust.users_file.exists() and trust.keyring_file.exists()):
        trust.ensure()
    return trust


def main() -> int:
    """Generate the dev keys (make setup: deploy/local/setup.d/15-dev-keys.sh)."""
    trust = DevTrust(paths().root / "trust")
    created = trust.ensure()
    what = ", ".join(created) if created else "present"
    print(f"[setup] dev keys: {what} ({trust.root})")
    return 0
