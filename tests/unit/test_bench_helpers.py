"""Pure helpers of the benchmarks: percentiles, ratios, the containment arithmetic and
the synthetic event generator (no I/O, no timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# `bench/` is run as `python -m bench` from the repository root; make it importable here.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import gen
from bench.common import Result, percentiles, ratio
from bench.containment import SideEffect, containment, side_effect_starts
from bench.harness import Seen
from conn_readmodel.projection import IncidentProjection, Where, project
from conn_schemas.codec import decode


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    p = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p["n"] == 100
    assert p["p50_ms"] == 51.0 or p["p50_ms"] == 50.0
    assert p["p99_ms"] == 99.0
    assert p["max_ms"] == 100.0
    assert abs(p["mean_ms"] - 50.5) < 1e-9


def test_percentiles_of_nothing_is_empty() -> None:
    assert percentiles([]) == {"n": 0}


def test_ratio_needs_both_sides() -> None:
    assert ratio(10.0, 2.0) == 5.0
    assert ratio(None, 2.0) is None
    assert ratio(3.0, 0.0) is None


def test_result_compare_records_figure_baseline_and_ratio(tmp_path, monkeypatch) -> None:
    import bench.common as common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    r = Result("x")
    r.compare("p50 ms", 30.0, 3.0)
    r.compare("no baseline", 1.0, None)
    assert r.ratios == {"p50 ms": 10.0}
    doc = json.loads(r.write().read_text())
    assert doc["figures"]["p50 ms"] == 30.0 and doc["baseline"]["p50 ms"] == 3.0
    assert doc["machine"]["cores"] >= 1


def _seen(kind: str, inc: str, cid: str, occurred: str, **payload: object) -> Seen:
    return Seen(0.0, kind, inc, cid, occurred, dict(payload))


def test_side_effect_starts_excludes_steps_stopped_before_their_side_effect() -> None:
    outcomes = [
        _seen("StepSucceeded", "a", "c1", "2026-11-22T09:00:01+00:00", duration_ms=500.0),
        _seen(
            "StepFailed",
            "a",
            "c2",
            "2026-11-22T09:00:02+00:00",
            error="stopped before side effect: kill switch",
            duration_ms=0.0,
        ),
        _seen("StepFailed", "b", "c3", "2026-11-22T09:00:03+00:00", error="409", duration_ms=20.0),
        _seen("StepStarted", "b", "c4", "2026-11-22T09:00:03+00:00"),
    ]
    starts = side_effect_starts(outcomes)
    assert [s.correlation_id for s in starts] == ["c1", "c3"]
    first = starts[0]
    assert abs(first.started - (1795338001.0 - 0.5)) < 1e-6


def test_containment_counts_only_starts_in_scope_while_the_stop_is_in_force() -> None:
    starts = [
        SideEffect("a", "1", 99.0),  # before the stop: fine
        SideEffect("a", "2", 100.25),  # late, in scope
        SideEffect("b", "3", 100.5),  # late, other incident
        SideEffect("a", "4", 200.0),  # after the release: fine
    ]
    assert containment(starts, 100.0, 150.0, None) == (0.5, 2)
    assert containment(starts, 100.0, 150.0, "a") == (0.25, 1)
    assert containment(starts, 100.0, 150.0, "c") == (0.0, 0)


def test_generated_incidents_are_valid_distinct_and_fold_to_a_closed_incident() -> None:
    template = gen.template_bytes()
    a, b = gen.clone(template, 1), gen.clone(template, 2)
    ea, eb = [decode(v) for v in a], [decode(v) for v in b]
    assert {e.incident_id for e in ea} == {gen.incident_id(1)}
    assert not {e.event_id for e in ea} & {e.event_id for e in eb}
    assert all(e.causation_id is None or e.causation_id.startswith("00000001-") for e in ea)
    proj = IncidentProjection.new(gen.incident_id(1))
    packets = 0
    for i, event in enumerate(ea):
        rows = project(proj, event, Where("t", 0, i))
        packets += rows.packet is not None
    assert proj.state.closed and proj.state.sequence == len(template)
    assert packets >= 1  # the mixed verdict holds: a takeover packet is due


def test_records_yields_exactly_the_requested_count_keeping_incident_order() -> None:
    out = list(gen.records(1000))
    assert len(out) == 1000
    per_incident: dict[bytes, list[str]] = {}
    for key, value, signer in out:
        event = decode(value)
        per_incident.setdefault(key, []).append(event.event_type)
        assert signer == event.producer  # signed by its rightful producer
    first = next(iter(per_incident.values()))
    assert first[0] == "IncidentOpened" and first[1] == "AuthorityDeclared"
