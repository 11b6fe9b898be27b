"""The test-only fault hook is off by default and rejects anything it does not know."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conn_executor.faults import Faults, FaultSpecError, parse_faults
from conn_executor.settings import ExecutorSettings


def test_off_by_default() -> None:
    assert parse_faults(None) == Faults()
    assert parse_faults("") == Faults()
    assert not ExecutorSettings().faults.any


def test_parses_known_faults() -> None:
    f = parse_faults("pause_after_side_effect=10, slow_side_effect=0.5")
    assert f.pause_after_side_effect == 10.0 and f.slow_side_effect == 0.5 and f.any


@pytest.mark.parametrize(
    "spec",
    ["explode=1", "pause_after_side_effect", "pause_after_side_effect=soon", "slow_side_effect=-1"],
)
def test_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_faults(spec)


def test_settings_reject_bad_fault_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONN_EXECUTOR_FAULT", "explode=1")
    with pytest.raises(ValidationError, match="unknown fault"):
        ExecutorSettings()
