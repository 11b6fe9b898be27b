"""Forgeries of every event type written straight to `conn.events` by a client with
broker access: signed by an unknown key, or by a real principal's key that is not
entitled to the type. DESIGN.md: "Unsigned or unentitled records are dead-lettered,
never folded." Checked on the real API's fold (nothing changes) and with the readers'
own verification of the records as they sit on the topic (the reason they are
dead-lettered with). The dead-letter topic itself is checked by the chaos suite, which
runs the dead-lettering services."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from security_support import RawWriter, as_, raw_records, sign_with
from unit.builders import one_of_each  # templates of well-formed payloads (data only)

from conn_schemas.codec import UnreadableRecord, encode
from conn_schemas.signing import generate_private_key
from conn_schemas.values import Actor

ENTITLED = {
    "verifier": {"VerificationSnapshot"},
}
"""What the forging principal may write (DESIGN.md: only verifiers produce snapshots)."""


async def test_forgeries_of_every_event_type_are_dead_lettered(
    api: Any, kafka_bootstrap: str, conn_topics: Any, trust: Any
) -> None:
    inc = await api.open_incident()
    view = api.app.state.runtime.view
    before = view.state(inc)
    seq, holder = before.sequence, before.holder
    types_before = [e.event.event_type for e in view.ledger(inc)]
    stranger = generate_private_key()
    verifier_key = trust.keys.private["verifier"]
    verifier_kid = trust.keys.key_ids["verifier"]
    writer = RawWriter(kafka_bootstrap, trust.kafka_options("verifier"))
    sent: dict[bytes, str] = {}
    for template in one_of_each():
        etype = template.event_type
        if etype.startswith("KillSwitch"):
            continue  # global records; conn.control is another topic
        event = template.model_copy(
            update={
                "event_id": uuid.uuid4(),
                "incident_id": inc,
                "correlation_id": f"forged-{uuid.uuid4().hex[:8]}",
                "producer": "verifier",
                "actor": Actor.service("verifier"),
            }
        )
        value = encode(event)
        if etype in ENTITLED["verifier"]:
            headers = sign_with(value, stranger, "verifier-forged")
            sent[value] = "unknown_key"
        else:
            headers = sign_with(value, verifier_key, verifier_kid)
            sent[value] = "not_entitled"
        await writer.send(conn_topics.events, inc.encode(), value, headers)

    # The API's fold reads past them: a genuine hold by the holder, appended after the
    # forgeries on the same partition, is answered only once folded.
    r = await api.client.post(
        f"/v1/incidents/{inc}/hold", json={"detail": "after the forgeries"}, headers=as_("alice")
    )
    assert r.status_code == 200, r.text
    after = view.state(inc)
    types = [e.event.event_type for e in view.ledger(inc)]
    assert types == [*types_before, "HoldDeclared"], types
    assert after.sequence == seq + 1 and after.holder == holder
    assert not after.directives and not after.closed

    # Every forgery is on the topic, and the one verification path every consumer uses
    # (executor, verifier, packager, the API's fold, `conn replay`) refuses each with
    # its reason: what goes to conn.deadletter.
    reader = trust.reader(kafka_bootstrap, conn_topics)
    found: dict[bytes, str] = {}
    for record in await raw_records(
        kafka_bootstrap, conn_topics.events, trust.kafka_options("sre")
    ):
        if record.value in sent:
            with pytest.raises(UnreadableRecord) as refused:
                reader.open(record)
            found[record.value] = refused.value.reason
    assert set(found) == set(sent), f"{len(sent) - len(found)} forgeries not on the topic"
    wrong = {sent[v]: found[v] for v in sent if found[v] != sent[v]}
    assert not wrong, wrong
