"""The benchmark commander's re-send pauses (bench.harness): a shed request waits its
Retry-After (never less, bounded, jittered up); a refused one backs off exponentially
with jitter instead of re-sending every 20 ms. The random draw is injected."""

from __future__ import annotations

from bench.harness import RETRY_CAP_SECONDS, backoff, shed_wait


def lowest(a: float, b: float) -> float:
    return a


def highest(a: float, b: float) -> float:
    return b


def test_a_shed_request_waits_its_retry_after_plus_bounded_jitter() -> None:
    assert shed_wait("2", cap=5.0, rng=lowest) == 2.0
    assert shed_wait("2", cap=5.0, rng=highest) == 2.5
    assert shed_wait("3600", cap=5.0, rng=lowest) == 5.0  # bounded
    assert shed_wait(None, cap=5.0, rng=lowest) == 1.0  # missing: 1 s
    assert shed_wait("soon", cap=5.0, rng=lowest) == 1.0  # unreadable: 1 s


def test_refusals_back_off_exponentially_up_to_a_cap_with_jitter() -> None:
    ceilings = [backoff(a, rng=highest) for a in range(8)]
    assert ceilings[:4] == [0.02, 0.04, 0.08, 0.16]
    assert ceilings == sorted(ceilings)
    assert max(ceilings) == RETRY_CAP_SECONDS
    assert backoff(3, rng=lowest) == 0.08  # jitter: anywhere in [half, full]
