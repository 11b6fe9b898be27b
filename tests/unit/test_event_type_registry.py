"""One list of event types, so a new type cannot be forgotten by the trust boundary.

Every "for every event type" safety test (tests/unit/test_signing.py, the security
tier's forgeries, tests/integration/test_trust_boundary.py) iterates
`conn_schemas.events.EVENT_TYPES` (through `builders.one_of_each`, which asserts it
exemplifies all of them). The decoder, though, accepts what the `Event` union names,
and an event model is a subclass of `Envelope`: the three must be the same set, or a
type the codec reads (and a fold could act on) would escape every forgery test and
every role's ceiling."""

from __future__ import annotations

from typing import Any, get_args

from conn_schemas import events as ev
from conn_schemas.signing import CEILING


def _concrete_envelopes(cls: type[Any]) -> set[type[Any]]:
    out: set[type[Any]] = set()
    for sub in cls.__subclasses__():
        if sub.model_fields["event_type"].default is not None:
            out.add(sub)
        out |= _concrete_envelopes(sub)
    return out


def _union_members() -> set[type[Any]]:
    union = get_args(ev.Event)[0]  # Annotated[Union[...], discriminator]
    return set(get_args(union))


def test_event_types_is_exactly_the_decoders_union() -> None:
    assert set(ev.EVENT_TYPES.values()) == _union_members()


def test_every_event_model_is_registered() -> None:
    registered = set(ev.EVENT_TYPES.values())
    missing = {c.__name__ for c in _concrete_envelopes(ev.Envelope)} - {
        c.__name__ for c in registered
    }
    assert not missing, f"event models outside EVENT_TYPES (and every trust test): {missing}"


def test_wire_names_are_the_registry_keys() -> None:
    for name, cls in ev.EVENT_TYPES.items():
        assert cls.model_fields["event_type"].default == name


def test_every_registered_type_has_a_signer() -> None:
    """A type no role may sign would be dead-lettered forever; a type outside the
    ceiling table would be one the keyring check was never written for."""
    assert set().union(*CEILING.values()) == set(ev.EVENT_TYPES)
