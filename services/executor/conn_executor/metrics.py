"""Executor metrics (Prometheus), served at /metrics by the ops server."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DIRECTIVES = Counter(
    "conn_executor_directives_total",
    "Directives handled by the executor, by outcome and reason",
    ["outcome", "reason"],
)
"""outcome: accepted|refused|duplicate|redelivered|fenced|recovered."""

STEPS = Counter(
    "conn_executor_steps_total",
    "Consequential steps by result (succeeded|failed|timed_out|stopped|unknown)",
    ["action", "result"],
)
STEP_SECONDS = Histogram(
    "conn_executor_step_seconds",
    "Duration of one side effect (adapter call)",
    ["action"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONTAINMENT_SECONDS = Histogram(
    "conn_executor_containment_seconds",
    "From a hold/kill switch being thrown (event occurred_at) to the last side effect "
    "this executor started in its scope (0 when none started after it)",
    ["kind"],
    buckets=(0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SIDE_EFFECTS_AFTER_STOP = Counter(
    "conn_executor_side_effects_after_stop_total",
    "Side effects started after a stop (hold or kill switch) was thrown; must stay 0",
    ["kind"],
)
STOPS_ENFORCED = Counter(
    "conn_executor_stops_enforced_total",
    "Steps stopped right before their side effect (after StepStarted)",
    ["kind"],
)
RECOVERIES = Counter(
    "conn_executor_recoveries_total",
    "Unfinished claims found after a restart or rebalance, by what was done",
    ["result"],
)
RECHECKS = Counter(
    "conn_executor_rechecks_total",
    "Re-checks of a directive against its partition's latest record, right before a side "
    "effect (stage: before_accept | at_gate | after_gate), by outcome (ok or the refusal reason)",
    ["stage", "outcome"],
)
LOOKAHEAD_SECONDS = Histogram(
    "conn_executor_lookahead_seconds",
    "Reading an incident's partition ahead to its end (one look before a side effect)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

APPROVALS = Counter(
    "conn_executor_approvals_total",
    "Directives under the two-person rule by outcome (awaiting|approved|declined|cancelled)",
    ["outcome", "reason"],
)
TIME_TO_APPROVAL = Histogram(
    "conn_executor_time_to_approval_seconds",
    "From DirectiveIssued to the approval that completed its quorum (ledger timestamps)",
    ["action"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
