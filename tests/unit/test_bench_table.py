"""The benchmark bookkeeping (no I/O but reading the committed files, no timing): medians
of repetitions, the busy-machine rule, the hop floor, and the README's table, which must
be exactly what bench/results/ says (generated, never typed by hand)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import table
from bench.common import Result, merge_median
from bench.fastpath import hop_floor

QUIET = {"loadavg_1m": 0.3, "cores": 2, "busy": False}
BUSY = {"loadavg_1m": 5.1, "cores": 2, "busy": True}


def _run(p50: float, base: float, n: int, before: dict[str, Any] = QUIET) -> Result:
    r = Result("fast_path")
    r.compare(f"gather_state: 202->StateGathered p50 ms, one commander (n={n})", p50, base)
    r.figures["label"] = f"run {n}"
    r.load_before, r.load_after, r.elapsed_seconds = before, QUIET, 10.0
    return r


def test_figures_are_the_median_of_the_repetitions_and_ratios_follow() -> None:
    merged = merge_median(
        "fast_path", [_run(9.0, 3.0, 20), _run(30.0, 2.0, 21), _run(7.0, 4.0, 19)]
    )
    [(key, value)] = [(k, v) for k, v in merged.figures.items() if k != "label"]
    assert key.startswith("gather_state: 202->StateGathered p50 ms")
    assert value == 9.0  # not the mean (15.3), not the last (7.0)
    assert merged.baseline[key] == 3.0
    assert merged.ratios[key] == 3.0
    assert merged.figures["label"] == "run 19"  # not a number: the last run's
    assert len(merged.runs) == 3 and all(r["load_before"] for r in merged.runs)
    assert merged.publishable


def test_one_busy_start_marks_the_result_and_keeps_it_unpublished() -> None:
    merged = merge_median("x", [_run(1, 1, 1), _run(1, 1, 1, before=BUSY), _run(1, 1, 1)])
    assert merged.loaded and not merged.publishable


def test_fewer_than_three_repetitions_or_a_quick_run_is_not_published() -> None:
    assert not merge_median("x", [_run(1, 1, 1), _run(1, 1, 1)]).publishable
    quick = [_run(1, 1, 1) for _ in range(3)]
    for r in quick:
        r.quick = True
    assert not merge_median("x", quick).publishable


def _doc(runs: list[Result]) -> dict[str, Any]:
    m = merge_median("fast_path", runs)
    return {
        "name": m.name,
        "measured_at": "2026-12-04T16:00:00+00:00",
        "machine": {"cores": 2},
        "figures": m.figures,
        "baseline": m.baseline,
        "ratios": m.ratios,
        "runs": m.runs,
        "quick": m.quick,
    }


def test_the_table_publishes_only_quiet_repeated_results_and_says_why_not() -> None:
    quiet = _doc([_run(9.0, 3.0, 20) for _ in range(3)])
    busy = {**_doc([_run(9.0, 3.0, 20, before=BUSY) for _ in range(3)]), "name": "api_intake"}
    legacy = {"name": "replay_rate", "machine": {"cores": 2}, "figures": {"x": 1.0}}
    out = table.render({"fast_path": quiet, "api_intake": busy, "replay_rate": legacy})
    row = next(line for line in out.splitlines() if line.startswith("| gather_state"))
    assert "| 9.00 |" in row and "3.00 (hop floor)" in row and "| 3x |" in row and "| 3 |" in row
    assert "API intake" not in out.split("Not published")[0]
    assert "`api_intake`: started on a busy machine" in out
    assert "`replay_rate`: no repetitions" in out


def test_nothing_publishable_says_so() -> None:
    out = table.render({"fast_path": _doc([_run(9.0, 3.0, 20, before=BUSY)])})
    assert out.startswith("No figures are published")


def test_open_loop_capacity_row_is_the_best_achieved_rate_and_its_p99() -> None:
    figures = {
        "offered 100/s: achieved/s": 98.0,
        "offered 100/s: p99 ms from schedule": 40.0,
        "offered 200/s: achieved/s": 150.0,
        "offered 200/s: p99 ms from schedule": 120.0,
        "offered 300/s: achieved/s": 140.0,
        "offered 300/s: p99 ms from schedule": 900.0,
    }
    assert table._capacity({"figures": figures}) == (150.0, 120.0)
    assert table._capacity({"figures": figures}, p99_below=100.0) == (98.0, 40.0)
    assert table._capacity({"figures": figures}, p99_below=10.0) == (None, None)


def test_open_loop_capacity_leaves_out_rates_the_generator_fell_behind_at() -> None:
    figures = {
        "offered 100/s: achieved/s": 98.0,
        "offered 100/s: p99 ms from schedule": 40.0,
        "offered 100/s: generator kept schedule": 1,
        "offered 200/s: achieved/s": 150.0,
        "offered 200/s: p99 ms from schedule": 120.0,
        "offered 200/s: generator kept schedule": 0,
    }
    assert table._capacity({"figures": figures}) == (98.0, 40.0)
    assert table._generator_behind({"figures": figures}) == ["offered 200/s"]


def test_hop_floor_is_the_sum_of_the_declared_hops() -> None:
    hops = {"kafka_rtt": 1.0, "kafka_ack": 0.5, "http": 0.7, "pg": 0.3}
    assert hop_floor("gather_state", hops) == 1.0 + 0.7
    assert hop_floor("restart_dependency_tier", hops) == 0.3 + 0.5 + 0.7 + 1.0


def test_the_readmes_tables_are_generated_from_bench_results() -> None:
    generated = table.render(table.load_docs())
    for readme in table.READMES:
        text = readme.read_text()
        assert table.splice(text, generated) == text, (
            f"{readme.name}'s performance table is not what bench/results/ says: "
            "run `python -m bench.table --write`"
        )
