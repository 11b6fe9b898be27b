"""The API's load-shedding decision (conn_api.middleware), pure: what is shed, why, and
what never is. No server, no clock."""

from __future__ import annotations

import pytest

from conn_api.middleware import Capacity, is_stop, shed_reason, sustained_lag


@pytest.mark.parametrize(
    ("in_flight", "limit", "lag", "max_lag", "expected"),
    [
        (0, 64, 0.0, 0.1, None),
        (63, 64, 0.05, 0.1, None),
        (64, 64, 0.0, 0.1, "in_flight"),
        (65, 64, 0.0, None, "in_flight"),
        (1, 64, 0.1, 0.1, None),  # at the limit: still taken
        (1, 64, 0.11, 0.1, "loop_lag"),
        (1, 64, 30.0, None, None),  # lag shedding off
        (64, 64, 5.0, 0.1, "in_flight"),
    ],
)
def test_shed_reason(
    in_flight: int, limit: int, lag: float, max_lag: float | None, expected: str | None
) -> None:
    assert (
        shed_reason(in_flight=in_flight, limit=limit, loop_lag=lag, max_loop_lag=max_lag)
        == expected
    )


def test_the_sustained_lag_is_what_every_recent_wake_up_suffered() -> None:
    assert sustained_lag([]) == 0.0
    assert sustained_lag([0.002, 0.9, 0.003]) == 0.002  # one slow callback does not shed
    assert sustained_lag([0.4, 0.5, 0.3, 0.6]) == 0.3  # a saturated loop does
    assert sustained_lag([-0.001]) == 0.0  # a clock that woke early is no lag


@pytest.mark.parametrize(
    "path",
    [
        "/v1/kill-switch/engage",
        "/v1/incidents/inc-1/hold",
        "/v1/incidents/inc-1/close",
        "/v1/incidents/inc-1/takeover",
    ],
)
def test_the_stops_are_never_shed(path: str) -> None:
    assert is_stop("POST", path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/incidents/inc-1/directives"),
        ("POST", "/v1/kill-switch/release"),
        ("POST", "/v1/incidents/inc-1/resume"),
        ("POST", "/v1/incidents"),
        ("GET", "/v1/incidents/inc-1/hold"),
        ("POST", "/v1/alerts/hold"),
    ],
)
def test_everything_else_may_be_shed(method: str, path: str) -> None:
    assert not is_stop(method, path)


def test_a_capacity_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="in-flight"):
        Capacity(limit=0)
    with pytest.raises(ValueError, match="loop-lag"):
        Capacity(limit=1, max_loop_lag=0.0)
