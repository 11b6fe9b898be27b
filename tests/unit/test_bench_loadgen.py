"""The open-loop load generator's bookkeeping (bench.loadgen, bench.capacity): refused
gathers are re-sent within a per-directive and an overall budget (so refusals cannot
multiply the offered load), a step whose sends left late is flagged as the generator's,
not the system's, and each worker's incidents sit on its own partitions."""

from __future__ import annotations

from bench.capacity import split_incidents
from bench.loadgen import LATE_SECONDS, ReSendBudget, kept_schedule, late
from conn_runtime.partitioning import partition_for


def test_re_sends_stop_at_the_per_directive_cap() -> None:
    budget = ReSendBudget(per_directive=3, share=100.0)
    budget.sent = 1
    assert [budget.allow(a) for a in range(5)] == [True, True, True, False, False]


def test_re_sends_in_all_stay_within_a_share_of_the_directives_sent() -> None:
    budget = ReSendBudget(per_directive=3, share=0.1)
    budget.sent = 100
    allowed = sum(budget.allow(0) for _ in range(1000))
    assert allowed == 11  # 0.1 x 100, plus the first one
    budget.sent = 200
    assert budget.allow(0)


def test_a_step_with_more_than_one_percent_late_sends_did_not_keep_its_schedule() -> None:
    on_time = [0.001] * 99
    assert late([*on_time, LATE_SECONDS * 2]) == 1
    assert kept_schedule([*on_time, LATE_SECONDS * 2])
    assert not kept_schedule([*on_time, LATE_SECONDS * 2, LATE_SECONDS * 2])
    assert kept_schedule([])


def test_each_worker_gets_its_own_incidents_on_its_own_partitions() -> None:
    shares = split_incidents(3, 10, 6)
    assert [len(s) for s in shares] == [10, 10, 10]
    assert len({i for s in shares for i in s}) == 30
    for w, share in enumerate(shares):
        assert all(partition_for(i, 6) % 3 == w for i in share)


def test_shedding_not_by_the_middleware_is_put_down_to_the_backlog() -> None:
    from bench.capacity import record_shedding
    from bench.common import Result

    result = Result("x")
    before = {"all": 10.0, "in_flight": 2.0, "loop lag ms": 1.0}
    after = {"all": 40.0, "in_flight": 5.0, "loop_lag": 4.0, "loop lag ms": 3.0}
    record_shedding(result, "r", before, after)
    assert result.figures["r: API shed by in_flight"] == 3
    assert result.figures["r: API shed by loop_lag"] == 4
    assert result.figures["r: API shed by backlog"] == 23
