"""The CLI honours the API's load shedding: a 503 `overloaded` (or a 429) is repeated
after its Retry-After, a bounded number of times, telling the user; nothing else is
repeated (a 503 that may have done something is reported at once). The transport is
faked; sleeping is recorded, not done; the jitter draw is fixed at the top of its range
(Retry-After + 25 %) unless a test says otherwise."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conn_cli import main

OVERLOADED = {"error": {"code": "overloaded", "message": "at capacity", "detail": {}}}
UNKNOWN = {"error": {"code": "outcome_unknown", "message": "maybe appended", "detail": {}}}
LISTING = {"items": [], "next_after": None}


class FakeApi:
    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        self.answers = answers
        self.calls = 0
        self.slept: list[float] = []

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        status, body, headers = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return httpx.Response(
            status,
            content=json.dumps(body).encode(),
            headers=headers,
            request=httpx.Request(method, url),
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> FakeApi:
        api = FakeApi(answers)
        monkeypatch.setattr(main.httpx, "request", api.request)
        monkeypatch.setattr(main.time, "sleep", api.slept.append)
        monkeypatch.setattr(main.random, "uniform", lambda low, high: high)
        return api

    return install


def _list(env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(
        main.app, ["incident", "list", "--json"], env={"CONN_TOKEN": "t", **(env or {})}
    )


def test_a_shed_request_is_retried_after_retry_after_and_the_user_is_told(fake: Any) -> None:
    api = fake([(503, OVERLOADED, {"Retry-After": "2"}), (200, LISTING, {})])
    r = _list()
    assert r.exit_code == 0, r.output
    assert api.calls == 2
    assert api.slept == [2.5]  # Retry-After 2 s plus at most 25 % jitter
    assert "overloaded" in r.output and "1/3" in r.output


def test_a_shed_request_is_never_repeated_sooner_than_retry_after(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = fake([(503, OVERLOADED, {"Retry-After": "2"}), (200, LISTING, {})])
    monkeypatch.setattr(main.random, "uniform", lambda low, high: low)
    assert _list().exit_code == 0
    assert api.slept == [2.0]


def test_retries_are_bounded_and_the_failure_says_so(fake: Any) -> None:
    api = fake([(429, {"error": {"code": "too_many"}}, {"Retry-After": "5"})])
    r = _list({"CONN_CLI_RETRIES": "2"})
    assert r.exit_code == 1
    assert api.calls == 3
    assert api.slept == [6.25, 6.25]
    assert "still overloaded after 2 retries" in r.output


def test_an_absurd_retry_after_is_capped(fake: Any) -> None:
    api = fake([(503, OVERLOADED, {"Retry-After": "86400"}), (200, LISTING, {})])
    assert _list().exit_code == 0
    assert api.slept == [main.MAX_RETRY_WAIT_SECONDS * (1 + main.RETRY_JITTER)]


def test_a_503_that_may_have_done_something_is_not_repeated(fake: Any) -> None:
    api = fake([(503, UNKNOWN, {"Retry-After": "1"}), (200, LISTING, {})])
    r = _list()
    assert r.exit_code == 3
    assert api.calls == 1
    assert api.slept == []
