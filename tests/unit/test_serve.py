"""The one entry point of every service (`conn_runtime.service.serve`): a bad setting is one
line and exit code 2 (never a traceback), a socket that cannot be opened exit code 1, a
clean stop exit code 0; `build` runs inside the event loop (aiokafka clients need one)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conn_runtime import logs
from conn_runtime.service import GC_THRESHOLDS, describe_config_error, serve
from conn_runtime.settings import ServiceSettings
from conn_runtime.trust import TrustConfigError


class _Part(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONN_TEST_SERVE_", extra="ignore")

    port: int = Field(default=1, ge=0, le=65535)


class _Settings(ServiceSettings):
    part: _Part = Field(default_factory=_Part)


@pytest.fixture(autouse=True)
def _no_log_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JSON log set-up in the test process, and no handler left by an earlier test (one
    may write to a stream that test captured and closed)."""
    monkeypatch.setattr(logs, "configure", lambda name: None)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


class _Stops:
    """A service that returns at once, remembering that it ran inside a loop."""

    ran_in_loop = False

    async def run(self, stop: asyncio.Event) -> None:
        type(self).ran_in_loop = asyncio.get_running_loop() is not None


def test_a_clean_stop_returns_and_build_runs_in_the_loop() -> None:
    def build() -> _Stops:
        asyncio.get_running_loop()  # raises outside a running loop
        return _Stops()

    serve("test", build)
    assert _Stops.ran_in_loop


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def test_every_service_runs_on_uvloop_with_the_collector_tuned(restored_gc: None) -> None:
    """uvloop was pinned but never used: `serve` made its loop with `asyncio.run`, and
    uvicorn's `loop="auto"` does not apply inside a loop made by its caller."""
    seen: list[tuple[asyncio.AbstractEventLoop, tuple[int, int, int]]] = []

    class Probe:
        async def run(self, stop: asyncio.Event) -> None:
            seen.append((asyncio.get_running_loop(), gc.get_threshold()))

    serve("test", Probe)
    ((loop, thresholds),) = seen
    assert isinstance(loop, uvloop.Loop), type(loop)
    assert thresholds == GC_THRESHOLDS
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


def test_a_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONN_TEST_SERVE_PORT", "not-a-port")

    def build() -> _Stops:
        _Settings()
        return _Stops()

    with pytest.raises(SystemExit) as exit_:
        serve("test", build)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("conn-test: invalid configuration: _Part.port: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_trust_error_while_starting_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    class NoKey:
        async def run(self, stop: asyncio.Event) -> None:
            raise TrustConfigError("CONN_SIGNING_KEY_FILE is not set")

    with pytest.raises(SystemExit) as exit_:
        serve("test", NoKey)
    assert exit_.value.code == 2
    assert "conn-test: invalid configuration: CONN_SIGNING_KEY_FILE is not set" in (
        capsys.readouterr().err
    )


def test_a_port_that_cannot_be_opened_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    class PortTaken:
        async def run(self, stop: asyncio.Event) -> None:
            raise OSError(98, "address already in use")

    with pytest.raises(SystemExit) as exit_:
        serve("test", PortTaken)
    assert exit_.value.code == 1
    assert "conn-test: cannot start" in capsys.readouterr().err


def test_every_bad_setting_is_named_on_one_line() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        _Part(port=-1)
    assert describe_config_error(caught.value).startswith("_Part.port: ")
    assert describe_config_error(ValueError("two\nlines")) == "two lines"


def test_service_settings_read_each_part_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONN_TEST_SERVE_PORT", "7")
    assert _Settings().part.port == 7
    assert _Settings(part=_Part(port=9)).part.port == 9
