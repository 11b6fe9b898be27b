"""The signed log's rules (conn_schemas.signing), pure: keyring, sign, verify, bindings.

The oracle for who may sign what is DESIGN.md, written out in tests/trust_support.py."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import ALICE, one_of_each
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_support import (
    OWNER,
    PRINCIPAL_OF_ROLE,
    Keys,
    forgeries,
    may_sign,
    restamp,
)

from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord, encode
from conn_schemas.signing import (
    CEILING,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    Keyring,
    KeyringError,
    SignerRole,
    UntrustedRecord,
    generate_private_key,
    new_key_id,
    open_record,
    parse_public_key,
    private_key_pem,
    public_key_b64,
    sign,
)
from conn_schemas.values import Actor, Role

EVENTS = {e.event_type: e for e in one_of_each()}
KEYS = Keys.fresh()
KEYRING = KEYS.keyring


def stamped(event_type: str) -> ev.Envelope:
    role = OWNER[event_type]
    return restamp(EVENTS[event_type], PRINCIPAL_OF_ROLE[role], role)


def open_as(
    event: ev.Envelope,
    principal: str | None,
    *,
    keys: Keys = KEYS,
    key: bytes | None = None,
    appended_at: datetime | None = None,
) -> str:
    value = encode(event)
    headers = keys.headers(value, principal) if principal else []
    trusted = open_record(
        keys.keyring,
        value=value,
        key=event.incident_id.encode() if key is None else key,
        headers=headers,
        on_control=event.incident_id == ev.GLOBAL_INCIDENT,
        appended_at=appended_at,
    )
    assert trusted.event == event
    return trusted.principal


def reason_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(UnreadableRecord) as info:
        call()
    return info.value.reason


# --- the ceiling is DESIGN.md's -------------------------------------------------------------


@pytest.mark.parametrize("role", list(SignerRole), ids=str)
def test_each_roles_ceiling_is_what_design_md_entitles(role: SignerRole) -> None:
    assert {t for t in ev.EVENT_TYPES if may_sign(role, t)} == CEILING[role]


def test_every_event_type_has_a_producer_and_the_ceiling_names_only_known_types() -> None:
    assert set().union(*CEILING.values()) == set(ev.EVENT_TYPES)


# --- every event type: the rightful signer verifies, nobody else does --------------------------


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_the_entitled_principal_signs_and_every_reader_trusts_it(event_type: str) -> None:
    role = OWNER[event_type]
    assert open_as(stamped(event_type), PRINCIPAL_OF_ROLE[role]) == PRINCIPAL_OF_ROLE[role]


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_every_forgery_of_every_event_type_is_refused_with_its_reason(event_type: str) -> None:
    event = stamped(event_type)
    seen = set()
    retired_at = datetime(2026, 11, 1, tzinfo=UTC)
    keys = KEYS.with_retired(retired_at)  # every principal also lists a rotated-out key
    keyring = keys.keyring
    for forgery in forgeries(event, keys):
        seen.add(forgery.reason)
        for appended_at in (None, retired_at + timedelta(milliseconds=1)):
            with pytest.raises(UntrustedRecord) as info:
                open_record(
                    keyring,
                    value=forgery.value,
                    key=forgery.key,
                    headers=forgery.headers,
                    on_control=event.incident_id == ev.GLOBAL_INCIDENT,
                    appended_at=appended_at,
                )
            assert info.value.reason == forgery.reason, forgery.name
    assert {
        "unsigned",
        "unknown_key",
        "bad_signature",
        "key_mismatch",
        "not_entitled",
        "key_retired",
    } <= seen


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_altered_bytes_never_verify(data: st.DataObject) -> None:
    event = stamped(data.draw(st.sampled_from(sorted(ev.EVENT_TYPES))))
    value = encode(event)
    headers = KEYS.headers(value, PRINCIPAL_OF_ROLE[OWNER[event.event_type]])
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
    i = data.draw(st.integers(0, len(value) - 1))
    if kind == "flip":
        bit = data.draw(st.integers(0, 7))
        altered = value[:i] + bytes([value[i] ^ (1 << bit)]) + value[i + 1 :]
    elif kind == "insert":
        altered = value[:i] + data.draw(st.binary(min_size=1, max_size=8)) + value[i:]
    elif kind == "delete":
        altered = value[:i] + value[i + 1 :]
    else:
        altered = data.draw(st.binary(max_size=2000).filter(lambda b: b != value))
    with pytest.raises(UntrustedRecord) as info:
        open_record(
            KEYRING,
            value=altered,
            key=event.incident_id.encode(),
            headers=headers,
            on_control=event.incident_id == ev.GLOBAL_INCIDENT,
        )
    assert info.value.reason == "bad_signature"


@given(signature=st.binary(max_size=100))
def test_arbitrary_signatures_never_verify(signature: bytes) -> None:
    event = stamped("DirectiveIssued")
    value = encode(event)
    headers = [
        (SIGNATURE_HEADER, base64.b64encode(signature)),
        (KEY_ID_HEADER, KEYS.key_ids["directive-api"].encode()),
    ]
    reason = reason_of(
        lambda: open_record(
            KEYRING, value=value, key=event.incident_id.encode(), headers=headers, on_control=False
        )
    )
    assert reason == "bad_signature"


# --- headers -----------------------------------------------------------------------------------


def _open(event: ev.Envelope, headers: list[tuple[str, bytes]]) -> object:
    return lambda: open_record(
        KEYRING,
        value=encode(event),
        key=event.incident_id.encode(),
        headers=headers,
        on_control=False,
    )


def test_a_record_missing_one_header_is_unsigned() -> None:
    event = stamped("DirectiveIssued")
    sig, kid = KEYS.headers(encode(event), "directive-api")
    assert reason_of(_open(event, [sig])) == "unsigned"
    assert reason_of(_open(event, [kid])) == "unsigned"


def test_duplicated_signature_headers_are_refused() -> None:
    event = stamped("DirectiveIssued")
    good = KEYS.headers(encode(event), "directive-api")
    bad = sign(b"other", KEYS.private["directive-api"], KEYS.key_ids["directive-api"])
    assert reason_of(_open(event, [*good, bad[0]])) == "bad_signature"
    assert reason_of(_open(event, [bad[1], *good])) == "bad_signature"


def test_a_signature_that_is_not_base64_is_refused() -> None:
    event = stamped("DirectiveIssued")
    kid = KEYS.headers(encode(event), "directive-api")[1]
    assert reason_of(_open(event, [(SIGNATURE_HEADER, b"!!not base64!!"), kid])) == (
        "bad_signature"
    )


def test_an_unsigned_unreadable_record_is_refused_as_unsigned_before_parsing() -> None:
    with pytest.raises(UntrustedRecord, match="unsigned"):
        open_record(KEYRING, value=b"{not json", key=b"x", headers=[], on_control=False)


def test_a_signed_record_that_is_not_an_event_is_unreadable() -> None:
    value = b'{"event_type": "Nope"}'
    with pytest.raises(UnreadableRecord) as info:
        open_record(
            KEYRING,
            value=value,
            key=b"x",
            headers=KEYS.headers(value, "directive-api"),
            on_control=False,
        )
    assert info.value.reason == "unknown_event_type"


# --- bindings: the envelope names the signer ----------------------------------------------------


def test_producer_must_name_the_signer_or_one_of_its_instances() -> None:
    event = stamped("StepStarted")
    assert open_as(event.model_copy(update={"producer": "executor/executor-eu-1"}), "executor")
    for wrong in ("executor2", "directive-api", "executorx/1"):
        forged = event.model_copy(update={"producer": wrong})
        assert reason_of(lambda f=forged: open_as(f, "executor")) == "producer_mismatch"
    # An empty producer breaks the input policy before the binding is even checked.
    forged = event.model_copy(update={"producer": ""})
    assert reason_of(lambda f=forged: open_as(f, "executor")) == "invalid"


def test_a_service_writes_only_as_itself() -> None:
    event = stamped("StepStarted")
    for actor in (ALICE, Actor.service("verifier"), Actor.service("directive-api")):
        forged = event.model_copy(update={"actor": actor})
        assert reason_of(lambda f=forged: open_as(f, "executor")) == "actor_not_allowed"
    boosted = event.model_copy(
        update={"actor": Actor(kind="service", id="executor", roles=(Role.ADMIN,))}
    )
    assert reason_of(lambda: open_as(boosted, "executor")) == "actor_not_allowed"


def test_only_the_api_signs_a_human_and_never_as_a_conn_service() -> None:
    hold = stamped("HoldDeclared")
    assert hold.actor.kind == "human"
    assert open_as(hold, "directive-api") == "directive-api"
    as_integration = hold.model_copy(update={"producer": "example-integration"})
    assert reason_of(lambda: open_as(as_integration, "example-integration")) == "actor_not_allowed"
    alert = stamped("AlertReceived")
    for service in ("executor", "verifier", "packager"):
        forged = alert.model_copy(update={"actor": Actor.service(service)})
        assert reason_of(lambda f=forged: open_as(f, "directive-api")) == "actor_not_allowed"
    webhook = alert.model_copy(update={"actor": Actor.service("pagerduty")})
    assert open_as(webhook, "directive-api") == "directive-api"


def test_a_refusal_names_the_role_that_signed_it() -> None:
    refusal = stamped("DirectiveRefused")
    assert isinstance(refusal, ev.DirectiveRefused)
    assert refusal.payload.refused_by == "executor"
    claims_api = refusal.model_copy(
        update={"payload": refusal.payload.model_copy(update={"refused_by": "directive-api"})}
    )
    assert reason_of(lambda: open_as(claims_api, "executor")) == "not_entitled"
    api_refusal = restamp(EVENTS["DirectiveRefused"], "directive-api", SignerRole.API)
    api_refusal = api_refusal.model_copy(update={"actor": ALICE})
    assert open_as(api_refusal, "directive-api") == "directive-api"


def test_an_integration_may_request_a_hold_as_itself() -> None:
    hold = restamp(EVENTS["HoldDeclared"], "example-integration", SignerRole.INTEGRATION)
    assert open_as(hold, "example-integration") == "example-integration"


def test_kill_switch_events_belong_on_conn_control_only() -> None:
    engaged = stamped("KillSwitchEngaged")
    value = encode(engaged)
    headers = KEYS.headers(value, "directive-api")
    with pytest.raises(UntrustedRecord, match="wrong_topic"):
        open_record(KEYRING, value=value, key=b"_global", headers=headers, on_control=False)
    hold = stamped("HoldDeclared")
    hvalue = encode(hold)
    with pytest.raises(UntrustedRecord, match="wrong_topic"):
        open_record(
            KEYRING,
            value=hvalue,
            key=hold.incident_id.encode(),
            headers=KEYS.headers(hvalue, "directive-api"),
            on_control=True,
        )


# --- the keyring -------------------------------------------------------------------------------


def test_a_keyring_may_narrow_a_role_but_never_widen_it() -> None:
    keys = Keys.fresh()
    keys.add("alerts-only", SignerRole.INTEGRATION, ["AlertReceived"])
    hold = restamp(EVENTS["HoldDeclared"], "alerts-only", SignerRole.INTEGRATION)
    assert reason_of(lambda: open_as(hold, "alerts-only", keys=keys)) == "not_entitled"
    alert = restamp(EVENTS["AlertReceived"], "alerts-only", SignerRole.INTEGRATION)
    assert open_as(alert, "alerts-only", keys=keys) == "alerts-only"

    for widened in (["DirectiveIssued"], ["AuthorityDeclared"], ["VerificationSnapshot"]):
        bad = Keys.fresh()
        bad.add("greedy", SignerRole.INTEGRATION, widened)
        with pytest.raises(KeyringError, match="may never sign"):
            _ = bad.keyring
    unknown = Keys.fresh()
    unknown.add("typo", SignerRole.INTEGRATION, ["AlertRecieved"])
    with pytest.raises(KeyringError, match="unknown event types"):
        _ = unknown.keyring


def test_a_keyring_refuses_a_key_listed_twice() -> None:
    keys = Keys.fresh()
    doc = keys.doc["principals"]
    assert isinstance(doc, dict)
    doc["copycat"] = {"role": "integration", "keys": list(doc["executor"]["keys"])}
    with pytest.raises(KeyringError, match="listed twice"):
        _ = keys.keyring
    doc["copycat"]["keys"] = [{**doc["executor"]["keys"][0], "id": "copycat-1"}]
    with pytest.raises(KeyringError, match="same public key"):
        _ = keys.keyring


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"principals": {"x": {"role": "god", "keys": [{"id": "k", "public_key": "AA=="}]}}},
        {"principals": {"x": {"role": "api", "keys": []}}},
        {"principals": {"x": {"role": "api", "keys": [{"id": "k", "public_key": "AA=="}]}}},
        {"principals": {"Bad Name": {"role": "api", "keys": []}}},
        {"version": 2, "principals": {}},
    ],
)
def test_an_invalid_keyring_is_a_clear_error(doc: object) -> None:
    with pytest.raises(KeyringError, match="invalid keyring"):
        Keyring.from_mapping(doc)


def test_public_keys_parse_from_raw_base64_and_pem() -> None:
    key = generate_private_key().public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert public_key_b64(parse_public_key(pem)) == public_key_b64(key)
    assert public_key_b64(parse_public_key(public_key_b64(key))) == public_key_b64(key)


def test_the_keyring_round_trips_through_its_mapping() -> None:
    again = Keyring.from_mapping(KEYRING.to_mapping())
    assert again.to_mapping() == KEYRING.to_mapping()
    assert set(again.keys) == set(KEYRING.keys)


# --- rotation and retirement -------------------------------------------------------------------


def test_rotation_old_listed_key_verifies_and_a_removed_key_does_not() -> None:
    keys = Keys.fresh()
    old_key, old_kid = keys.private["executor"], keys.key_ids["executor"]
    keys.add("executor", SignerRole.EXECUTOR)  # rotate: a second key, the old one kept
    event = stamped("StepStarted")
    value = encode(event)
    signed_old = sign(value, old_key, old_kid)
    signed_new = keys.headers(value, "executor")

    def verify(headers: list[tuple[str, bytes]], keyring: Keyring) -> str:
        return open_record(
            keyring, value=value, key=event.incident_id.encode(), headers=headers, on_control=False
        ).key_id

    assert verify(signed_old, keys.keyring) == old_kid
    assert verify(signed_new, keys.keyring) == keys.key_ids["executor"]
    # The old key is removed from the keyring: its records no longer verify.
    principals = keys.doc["principals"]
    assert isinstance(principals, dict)
    principals["executor"]["keys"] = [
        k for k in principals["executor"]["keys"] if k["id"] != old_kid
    ]
    with pytest.raises(UntrustedRecord, match="unknown_key"):
        verify(signed_old, keys.keyring)
    assert verify(signed_new, keys.keyring) == keys.key_ids["executor"]


def test_a_retired_key_keeps_history_and_refuses_what_is_appended_after() -> None:
    keys = Keys.fresh()
    retired_at = datetime(2026, 11, 1, tzinfo=UTC)
    principals = keys.doc["principals"]
    assert isinstance(principals, dict)
    principals["executor"]["keys"][0]["not_after"] = retired_at.isoformat()
    event = stamped("StepStarted")
    before = retired_at - timedelta(seconds=1)
    assert open_as(event, "executor", keys=keys, appended_at=before) == "executor"
    after = retired_at + timedelta(seconds=1)
    assert reason_of(lambda: open_as(event, "executor", keys=keys, appended_at=after)) == (
        "key_retired"
    )
    # No broker-stamped time (a CreateTime topic): a producer could claim any time.
    assert reason_of(lambda: open_as(event, "executor", keys=keys)) == "key_retired"


# --- interop: a non-Python producer ------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_a_record_signed_with_openssl_verifies(tmp_path: Path) -> None:
    """The README's recipe: sign the exact bytes with `openssl pkeyutl -sign -rawin`."""
    key = generate_private_key()
    (tmp_path / "key.pem").write_bytes(private_key_pem(key))
    keys = Keys.fresh()
    principals = keys.doc["principals"]
    assert isinstance(principals, dict)
    kid = new_key_id("example-integration", key.public_key())
    principals["example-integration"]["keys"].append(
        {"id": kid, "public_key": public_key_b64(key.public_key())}
    )
    event = restamp(EVENTS["AlertReceived"], "example-integration", SignerRole.INTEGRATION)
    # Serialised by "another language": indented, keys in a different order.
    value = __import__("json").dumps(encode_dict(event), indent=2, sort_keys=True).encode() + b"\n"
    (tmp_path / "value.json").write_bytes(value)
    signature = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", "key.pem", "-in", "value.json"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    headers = [(SIGNATURE_HEADER, base64.b64encode(signature)), (KEY_ID_HEADER, kid.encode())]
    trusted = open_record(
        keys.keyring,
        value=value,
        key=event.incident_id.encode(),
        headers=headers,
        on_control=False,
    )
    assert trusted.principal == "example-integration"
    assert trusted.event == event


def encode_dict(event: ev.Envelope) -> dict[str, object]:
    from conn_schemas.codec import to_raw

    return to_raw(event)


def test_the_role_table_in_schemas_readme_is_the_ceiling() -> None:
    readme = (Path(__file__).resolve().parents[2] / "schemas" / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and "`" in cells[0][1:]:
            role = cells[0].split("`")[1]
            rows[role] = {t.strip() for t in cells[1].split(",")}
    assert rows == {role.value: set(types) for role, types in CEILING.items()}
