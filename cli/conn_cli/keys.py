"""`conn keys`: the keyring of the signed log -- who may sign what, with which keys.

The keyring (CONN_KEYRING_FILE, or --keyring) holds public keys only; it is
configuration every Conn process loads. Signing keys (the secret half) are written once, to a file
only the owner can read (0600), and belong in a secret store -- never in git.

    conn keys list
    conn keys generate status-page --role integration --event-types AlertReceived,HoldDeclared
    conn keys add status-page --role integration --public-key status-page.pub.pem
    conn keys rotate executor            # a new key; the old one stays listed
    conn keys retire executor-1a2b3c4d5e6f --at now
    conn keys remove executor-1a2b3c4d5e6f

Rotation without downtime: `rotate` (both keys listed) -> deploy the keyring to every
process -> switch the producer to the new key -> `retire` the old key (history it
signed keeps verifying; nothing it signs after does) -> much later, `remove` it only
if no record it signed must verify any more (a removed key's records no longer do).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="Manage the keyring of the signed log.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

KeyringOpt = Annotated[
    Path | None,
    typer.Option("--keyring", help="Keyring file [env CONN_KEYRING_FILE]", show_default=False),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _keyring_path(path: Path | None) -> Path:
    chosen = path or (Path(p) if (p := os.environ.get("CONN_KEYRING_FILE")) else None)
    if chosen is None:
        _fail("no keyring: pass --keyring FILE or set CONN_KEYRING_FILE")
    return chosen


def _load(path: Path, *, create: bool = False) -> dict[str, Any]:
    from conn_runtime.trust import TrustConfigError, read_keyring_file

    if not path.exists():
        if create:
            return {"version": 1, "principals": {}}
        _fail(f"keyring {path} does not exist")
    try:
        return read_keyring_file(path).to_mapping()
    except TrustConfigError as exc:
        _fail(str(exc))


def _save(path: Path, doc: dict[str, Any]) -> None:
    from conn_runtime.trust import write_keyring_file
    from conn_schemas.signing import Keyring, KeyringError

    try:
        keyring = Keyring.from_mapping(doc)
    except KeyringError as exc:
        _fail(str(exc))
    write_keyring_file(path, keyring)


def _write_private(path: Path, data: bytes) -> None:
    if path.exists():
        _fail(f"{path} exists; refusing to overwrite a signing key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key(principal: str) -> tuple[Any, dict[str, str]]:
    from conn_schemas.signing import generate_private_key, new_key_id, public_key_b64

    key = generate_private_key()
    kid = new_key_id(principal, key.public_key())
    return key, {"id": kid, "public_key": public_key_b64(key.public_key())}


def _commit(
    path: Path, doc: dict[str, Any], key: Any, entry: dict[str, str], out: Path | None
) -> Path:
    """Check the keyring, write the signing key (0600, never over another), then the keyring."""
    from conn_schemas.signing import private_key_pem

    _check(doc)
    key_path = out or Path(f"{entry['id']}.pem")
    _write_private(key_path, private_key_pem(key))
    _save(path, doc)
    return key_path


def _event_types(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_time(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--at {text!r} is not an ISO 8601 time (or 'now')")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _status(key: dict[str, Any], now: datetime) -> str:
    not_after = key.get("not_after")
    if not not_after:
        return "active"
    when = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
    return f"retired {when:%Y-%m-%d %H:%M}Z" if when <= now else f"retires {when:%Y-%m-%d %H:%M}Z"


def _table(doc: dict[str, Any], title: str, only: str | None = None) -> Table:
    from conn_schemas.signing import CEILING, SignerRole, fingerprint, parse_public_key

    now = datetime.now(UTC)
    table = Table(title=title, title_justify="left")
    for col in ("principal", "role", "may sign", "key id", "status", "fingerprint (sha256)"):
        table.add_column(col, overflow="fold")
    for name, entry in sorted(doc.get("principals", {}).items()):
        if only is not None and name != only:
            continue
        role = SignerRole(entry["role"])
        types = entry.get("event_types")
        may = ", ".join(sorted(types if types is not None else CEILING[role]))
        for i, key in enumerate(entry["keys"]):
            table.add_row(
                name if i == 0 else "",
                role.value if i == 0 else "",
                may if i == 0 else "",
                key["id"],
                _status(key, now),
                fingerprint(parse_public_key(key["public_key"]))[:16],
            )
    return table


@keys_app.command("list")
def list_keys(
    keyring: KeyringOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the keyring as JSON")] = False,
) -> None:
    """List principals, what each may sign, and their keys."""
    path = _keyring_path(keyring)
    doc = _load(path)
    if as_json:
        out.print_json(json.dumps(doc))
        return
    out.print(_table(doc, f"keyring {path}"))


@keys_app.command("generate")
def generate(
    principal: Annotated[str, typer.Argument(help="Principal name, e.g. status-page")],
    role: Annotated[str, typer.Option(help="api, executor, verifier, packager, integration")],
    event_types: Annotated[
        str | None,
        typer.Option(help="Comma-separated; narrows the role's ceiling (default: all of it)"),
    ] = None,
    key_out: Annotated[
        Path | None, typer.Option(help="Where to write the signing key (default ./<key id>.pem)")
    ] = None,
    keyring: KeyringOpt = None,
) -> None:
    """Register a new principal with a freshly generated key pair."""
    from conn_schemas.signing import SignerRole

    path = _keyring_path(keyring)
    doc = _load(path, create=True)
    if principal in doc["principals"]:
        _fail(f"{principal} is already in the keyring; use `conn keys rotate {principal}`")
    try:
        signer_role = SignerRole(role)
    except ValueError:
        _fail(f"unknown role {role!r}: one of {', '.join(r.value for r in SignerRole)}")
    entry: dict[str, Any] = {"role": signer_role.value, "keys": []}
    if (types := _event_types(event_types)) is not None:
        entry["event_types"] = types
    key, key_entry = _new_key(principal)
    entry["keys"] = [key_entry]
    doc["principals"][principal] = entry
    key_path = _commit(path, doc, key, key_entry, key_out)
    out.print(_table(doc, f"added to {path}", only=principal))
    out.print(f"signing key: {key_path} (0600) -- store it as a secret; never commit it")


@keys_app.command("add")
def add(
    principal: Annotated[str, typer.Argument(help="Principal name")],
    public_key: Annotated[
        str, typer.Option(help="The principal's public key: a PEM file, or base64 of 32 bytes")
    ],
    role: Annotated[
        str | None, typer.Option(help="Role, for a new principal (api, ..., integration)")
    ] = None,
    event_types: Annotated[
        str | None, typer.Option(help="Comma-separated; narrows the role's ceiling")
    ] = None,
    keyring: KeyringOpt = None,
) -> None:
    """List a public key the principal generated itself (its signing key never leaves it),
    for a new principal (--role) or as an additional key of an existing one."""
    from conn_schemas.signing import new_key_id, parse_public_key, public_key_b64

    path = _keyring_path(keyring)
    doc = _load(path, create=True)
    text = Path(public_key).read_text() if Path(public_key).is_file() else public_key
    try:
        pub = parse_public_key(text)
    except ValueError as exc:
        _fail(str(exc))
    key = {"id": new_key_id(principal, pub), "public_key": public_key_b64(pub)}
    entry = doc["principals"].get(principal)
    if entry is None:
        if role is None:
            _fail(f"{principal} is a new principal: pass --role")
        entry = doc["principals"][principal] = {"role": role, "keys": []}
        if (types := _event_types(event_types)) is not None:
            entry["event_types"] = types
    elif role is not None and role != entry["role"]:
        _fail(f"{principal} has role {entry['role']}; a principal's role does not change")
    entry["keys"].append(key)
    _save(path, doc)
    out.print(_table(doc, f"keyring {path}", only=principal))


def _check(doc: dict[str, Any]) -> None:
    from conn_schemas.signing import Keyring, KeyringError

    try:
        Keyring.from_mapping(doc)
    except KeyringError as exc:
        _fail(str(exc))


@keys_app.command("rotate")
def rotate(
    principal: Annotated[str, typer.Argument(help="Principal whose key to rotate")],
    key_out: Annotated[Path | None, typer.Option(help="Where to write the new signing key")] = None,
    keyring: KeyringOpt = None,
) -> None:
    """Add a new key for a principal; its old keys stay listed (and keep verifying)."""
    path = _keyring_path(keyring)
    doc = _load(path)
    entry = doc["principals"].get(principal)
    if entry is None:
        _fail(f"{principal} is not in the keyring; use `conn keys generate`")
    key, key_entry = _new_key(principal)
    entry["keys"].append(key_entry)
    key_path = _commit(path, doc, key, key_entry, key_out)
    out.print(_table(doc, f"rotated in {path}", only=principal))
    out.print(
        f"new signing key: {key_path} (0600). Next: deploy the keyring everywhere, switch "
        f"{principal} to the new key, then `conn keys retire <old key id> --at now`."
    )


def _find_key(doc: dict[str, Any], key_id: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    for name, entry in doc["principals"].items():
        for key in entry["keys"]:
            if key["id"] == key_id:
                return name, entry, key
    _fail(f"no key {key_id!r} in the keyring")


@keys_app.command("retire")
def retire(
    key_id: Annotated[str, typer.Argument(help="Key id (see `conn keys list`)")],
    at: Annotated[str, typer.Option(help="ISO 8601 time, or 'now'")] = "now",
    keyring: KeyringOpt = None,
) -> None:
    """Retire a key: records the broker appended before `--at` keep verifying, later
    ones do not (conn.events and conn.control are stamped with LogAppendTime)."""
    path = _keyring_path(keyring)
    doc = _load(path)
    name, _, key = _find_key(doc, key_id)
    key["not_after"] = _parse_time(at).isoformat()
    _save(path, doc)
    out.print(_table(doc, f"keyring {path}", only=name))


@keys_app.command("remove")
def remove(
    key_id: Annotated[str, typer.Argument(help="Key id (see `conn keys list`)")],
    keyring: KeyringOpt = None,
) -> None:
    """Remove a key (e.g. a leaked one): NOTHING it signed verifies any more, history
    included -- `conn replay` will report those records. Prefer `retire` for rotation."""
    path = _keyring_path(keyring)
    doc = _load(path)
    name, entry, key = _find_key(doc, key_id)
    if len(entry["keys"]) == 1:
        _fail(f"{key_id} is the only key of {name}: rotate first (a principal needs a key)")
    entry["keys"].remove(key)
    _save(path, doc)
    out.print(_table(doc, f"keyring {path}", only=name))
