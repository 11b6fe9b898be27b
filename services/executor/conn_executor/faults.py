"""Test-only fault injection, OFF unless CONN_EXECUTOR_FAULT is set.

`CONN_EXECUTOR_FAULT="pause_after_side_effect=10"` makes the executor sleep 10 s
after a side effect and before appending its outcome, so a crash test can
SIGKILL it in exactly that window. Also: `pause_before_side_effect=N` (after
StepStarted, before the last stop check), `pause_before_gate=N` (after that check,
before the fenced gate: where a takeover can land unseen), `pause_after_gate=N` (after
the gate and the last look, right before the call: a process frozen at the moment of
acting), `slow_side_effect=N` (the adapter call takes N s longer, to exercise
timeouts). Several faults: comma-separated.
"""

from __future__ import annotations

from dataclasses import dataclass

KNOWN = (
    "pause_after_side_effect",
    "pause_before_side_effect",
    "pause_before_gate",
    "pause_after_gate",
    "slow_side_effect",
)


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Faults:
    pause_after_side_effect: float = 0.0
    pause_before_side_effect: float = 0.0
    pause_before_gate: float = 0.0
    pause_after_gate: float = 0.0
    slow_side_effect: float = 0.0

    @property
    def any(self) -> bool:
        return bool(
            self.pause_after_side_effect
            or self.pause_before_side_effect
            or self.pause_before_gate
            or self.pause_after_gate
            or self.slow_side_effect
        )


def parse_faults(spec: str | None) -> Faults:
    """Parse 'name=seconds[,name=seconds]'; unknown names or bad numbers are errors."""
    if not spec or not spec.strip():
        return Faults()
    values: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in KNOWN:
            raise FaultSpecError(
                f"unknown fault {item!r}; expected one of {', '.join(KNOWN)} as name=seconds"
            )
        try:
            seconds = float(raw)
        except ValueError as exc:
            raise FaultSpecError(f"fault {name}: {raw!r} is not a number of seconds") from exc
        if not 0 <= seconds <= 3600:
            raise FaultSpecError(f"fault {name}: {seconds} s is outside 0..3600")
        values[name] = seconds
    return Faults(**values)
