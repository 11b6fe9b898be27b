"""`python -m bench.table`: the README's figures table from bench/results/*.json."""

from __future__ import annotations

import json
from typing import Any

from bench.common import RESULTS

ROWS: list[tuple[str, str, str]] = [
    (
        "directive_latency",
        "restart: 202->StepSucceeded p50 ms",
        "Directive latency, consequential → StepSucceeded p50 (ms)",
    ),
    (
        "directive_latency",
        "restart: 202->StepSucceeded p95 ms",
        "Directive latency, consequential → StepSucceeded p95 (ms)",
    ),
    (
        "directive_latency",
        "restart: 202->StepSucceeded p99 ms",
        "Directive latency, consequential → StepSucceeded p99 (ms)",
    ),
    (
        "directive_latency",
        "restart: 202->VerificationSnapshot p50 ms",
        "Directive latency, consequential → VerificationSnapshot p50 (ms)",
    ),
    (
        "directive_latency",
        "restart: 202->VerificationSnapshot p95 ms",
        "Directive latency, consequential → VerificationSnapshot p95 (ms)",
    ),
    (
        "directive_latency",
        "restart: 202->VerificationSnapshot p99 ms",
        "Directive latency, consequential → VerificationSnapshot p99 (ms)",
    ),
    (
        "directive_latency",
        "non-consequential: 202->outcome p50 ms",
        "Directive latency, non-consequential → outcome p50 (ms)",
    ),
    (
        "directive_latency",
        "non-consequential: 202->outcome p95 ms",
        "Directive latency, non-consequential → outcome p95 (ms)",
    ),
    (
        "directive_latency",
        "non-consequential: 202->outcome p99 ms",
        "Directive latency, non-consequential → outcome p99 (ms)",
    ),
    (
        "containment_latency",
        "kill_switch: accepted->last side effect p50 ms",
        "Kill switch containment p50 (ms)",
    ),
    (
        "containment_latency",
        "kill_switch: accepted->last side effect p99 ms",
        "Kill switch containment p99 (ms)",
    ),
    ("containment_latency", "hold: accepted->last side effect p50 ms", "Hold containment p50 (ms)"),
    ("containment_latency", "hold: accepted->last side effect p99 ms", "Hold containment p99 (ms)"),
    (
        "containment_latency",
        "kill_switch: side effects started after acceptance",
        "Side effects after kill switch",
    ),
    (
        "containment_latency",
        "hold: side effects started after acceptance",
        "Side effects after hold",
    ),
    (
        "replay_rate",
        "chain verification events/s (verify_chain)",
        "Replay: chain verification (events/s)",
    ),
    (
        "replay_rate",
        "replay read+decode+projection, no DB, events/s",
        "Replay: read+decode+projection (events/s)",
    ),
    (
        "replay_rate",
        "full read-model rebuild events/s",
        "Replay: full read-model rebuild (events/s)",
    ),
    ("replay_rate", "chain verification peak RSS MB", "Replay: chain verification peak RSS (MB)"),
    ("replay_rate", "full read-model rebuild peak RSS MB", "Replay: rebuild peak RSS (MB)"),
    ("api_intake", "directives accepted (202) per second", "API intake (202/s)"),
    ("api_intake", "latency p99 ms", "API intake p99 (ms)"),
    ("throughput", "1 executor(s): directives/s", "Throughput, 1 executor (directives/s)"),
    ("throughput", "2 executor(s): directives/s", "Throughput, 2 executors (directives/s)"),
    ("throughput", "4 executor(s): directives/s", "Throughput, 4 executors (directives/s)"),
    ("signing_cost", "produce side: per event", "Signed log: encode + sign per event (µs)"),
    ("signing_cost", "read side: per event", "Signed log: verify + decode per event (µs)"),
    (
        "signing_cost",
        "Kafka read + verify + decode",
        "Signed log: read + verify + decode through Kafka (events/s)",
    ),
]


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _find(doc: dict[str, Any], section: str, prefix: str) -> tuple[str | None, Any]:
    for key, value in doc.get(section, {}).items():
        if key.startswith(prefix):
            return key, value
    return None, None


def render() -> str:
    docs = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    lines = ["| figure | conn | baseline (same run) | ratio | n |", "|---|---:|---:|---:|---|"]
    cores = when = None
    for name, prefix, label in ROWS:
        doc = docs.get(name)
        if doc is None:
            continue
        cores = doc["machine"]["cores"]
        when = max(when or "", doc["measured_at"])
        key, ours = _find(doc, "figures", prefix)
        base = doc["baseline"].get(key) if key else None
        r = doc["ratios"].get(key) if key else None
        n = key.split("(n=")[-1].rstrip(")") if key and "(n=" in key else ""
        lines.append(
            f"| {label} | {_fmt(ours)} | {_fmt(base)} | {f'{r:.3g}x' if r else ''} | {n} |"
        )
    lines.append("")
    lines.append(
        f"{cores} cores; last measured {when} (UTC). Baselines: raw aiokafka round trip "
        "(latency, containment), raw aiokafka consumption (replay), minimal FastAPI + "
        "PostgreSQL endpoint (intake), closed-loop raw aiokafka clients (throughput), the "
        "same events unsigned (signed log)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
