"""The ledger hash chain as the projection computes it."""

from __future__ import annotations

import pytest
from packager.packager_scenario import mixed_state

from conn_core.chain import GENESIS, link, link_raw
from conn_readmodel.projection import IncidentProjection, Where, project


def test_projection_chain_links_each_entry_to_the_previous() -> None:
    events = mixed_state().events
    proj = IncidentProjection.new("inc-mixed")
    prev = GENESIS
    for i, e in enumerate(events):
        rows = project(proj, e, Where("t", 0, i))
        assert rows.ledger["prev_hash"] == prev
        assert rows.ledger["hash"] == link(prev, e) == link_raw(prev, rows.ledger["raw"])
        assert rows.ledger["sequence"] == i + 1
        prev = rows.ledger["hash"]


@pytest.mark.parametrize("index", [0, 3, 7])
def test_editing_removing_or_reordering_changes_the_head(index: int) -> None:
    events = mixed_state().events

    def head(evs):  # type: ignore[no-untyped-def]
        h = GENESIS
        for e in evs:
            h = link(h, e)
        return h

    original = head(events)
    removed = events[:index] + events[index + 1 :]
    assert head(removed) != original
    swapped = list(events)
    swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
    assert head(swapped) != original
    edited = list(events)
    edited[index] = edited[index].model_copy(update={"producer": "forged"})
    assert head(edited) != original
