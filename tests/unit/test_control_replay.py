"""A genuine `conn.control` record replayed byte for byte changes nothing.

Issue 12 audit: signatures keep forged records out, but a replay of a GENUINE
record carries a valid signature. On `conn.events` the fold ignores an `event_id`
seen before; the kill switch's fold on `conn.control` did not, so whoever can write
`conn.control` (the API's broker login, if leaked) could re-publish an old, genuinely
signed KillSwitchReleased and release a kill switch engaged since, in every
executor's and the API's memory. Checked on the pure fold and through `IncidentFolds`
(what the executor and the API feed records to), with records that verify."""

from __future__ import annotations

from builders import History
from trust_support import Keys

from conn_core.fold import evolve_control
from conn_core.state import ControlState
from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Consumed, Position
from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.signing import SignerRole, open_record


def _signed_by_the_api(event: ev.Envelope, keys: Keys) -> ev.Envelope:
    """The record as the API writes it, opened the way every reader opens it."""
    event = event.model_copy(update={"producer": "directive-api"})
    value = encode(event)
    trusted = open_record(
        keys.keyring,
        value=value,
        key=event.incident_id.encode(),
        headers=keys.headers(value, "directive-api"),
        on_control=True,
    )
    assert trusted.role is SignerRole.API
    return trusted.event


def test_a_replayed_release_does_not_release_a_later_engage() -> None:
    keys = Keys.fresh()
    h = History()
    engage1 = _signed_by_the_api(h.kill_switch(True), keys)
    release = _signed_by_the_api(h.kill_switch(False), keys)
    engage2 = _signed_by_the_api(h.kill_switch(True), keys)
    control = ControlState()
    for event in (engage1, release, engage2):
        evolve_control(control, event)
    assert control.kill_switch
    evolve_control(control, release)  # the same record, re-published
    assert control.kill_switch
    assert control.duplicate_events == 1
    evolve_control(control, engage1)  # a replayed engage changes nothing either
    assert control.kill_switch and control.duplicate_events == 2


def test_through_the_services_folds_at_a_new_offset() -> None:
    keys = Keys.fresh()
    h = History()
    records = [
        _signed_by_the_api(h.kill_switch(True), keys),
        _signed_by_the_api(h.kill_switch(False), keys),
        _signed_by_the_api(h.kill_switch(True), keys),
    ]
    records.append(records[1])  # the old release, appended again by an attacker
    folds = IncidentFolds()
    for offset, event in enumerate(records):
        folded = folds.apply(Consumed(event, Position("conn.control", 0, offset), False))
        assert folded, "a new offset is never a redelivery"
    assert folds.control.kill_switch, "a replayed KillSwitchReleased released the kill switch"
