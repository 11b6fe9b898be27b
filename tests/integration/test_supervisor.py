"""Issue 18, item 2: the local stack supervises what it starts. A component that is
SIGKILLed is restarted (with backoff), the restart is counted and `status` says why it
exited; a component that keeps exiting is given up on and reported, not restarted
forever; `down` leaves no process behind. Driven through the real CLI on a stack of
its own (temporary CONN_LOCAL_DIR, free ports)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from stack_cli import StackCli

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def _running(status: dict, name: str, not_pid: int | None = None) -> bool:
    row = status[name]
    return (
        row["state"] == "running"
        and row["healthy"]
        and row["pid"] is not None
        and row["pid"] != not_pid
    )


def test_supervisor_restarts_a_killed_component_and_says_why() -> None:
    with StackCli.temporary("supervised", COLUMNS="250") as stack:
        _kill_and_watch(stack)


def _kill_and_watch(stack: StackCli) -> None:
    try:
        stack.run("up", "postgres", "simulator")
        before = stack.status()
        supervisor = before["supervisor"]
        assert supervisor and psutil.pid_exists(supervisor)
        for name in ("postgres", "simulator"):
            assert _running(before, name), before[name]
            assert before[name]["restarts"] == 0 and before[name]["last_exit"] is None

        killed = {}
        for name in ("simulator", "postgres"):
            pid = int(before[name]["pid"])
            os.kill(pid, signal.SIGKILL)
            killed[name] = pid
            after = stack.wait(
                f"{name} restarted", lambda s, n=name, p=pid: _running(s, n, not_pid=p)
            )
            row = after[name]
            assert row["restarts"] == 1, row
            assert row["last_exit"].startswith("signal SIGKILL at "), row
            assert not psutil.pid_exists(pid)
            # the restart is logged where `make logs <name>` looks, and by the supervisor
            assert "exited unexpectedly (signal SIGKILL" in stack.log(name)
            assert "restart #1" in stack.log(name)
            logs = stack.run("logs", name, "--no-follow", "-n", "200")
            assert "supervisor: restart #1" in logs
        assert "component exited; restarting it" in stack.log("supervisor")
        # what `make status` prints: the restarts and the reason of the last exit, per row
        table = stack.run("status").splitlines()
        for name in ("postgres", "simulator"):
            (row_text,) = [line for line in table if f" {name} " in line]
            cells = [c.strip() for c in row_text.split("│")]
            assert "1" in cells and any(c.startswith("signal SIGKILL at ") for c in cells), table
        # the other component was not touched, and the supervisor is the same process
        final = stack.status()
        assert final["supervisor"] == supervisor
        # PostgreSQL really serves again (its killed postmaster's backends were cleaned up)
        assert final["postgres"]["healthy"]
    finally:
        stack.run("down", check=False)
    assert not psutil.pid_exists(supervisor)
    for pid in [*killed.values(), *(int(final[n]["pid"]) for n in ("postgres", "simulator"))]:
        assert not psutil.pid_exists(pid), f"pid {pid} survived down"


def test_a_crash_loop_is_reported_not_hidden() -> None:
    with StackCli.temporary(
        "crashy",
        CONN_LOCALSTACK_PLUGINS="crashy_plugin",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        CONN_SUPERVISOR_BACKOFF="0.05,0.2",
    ) as stack:
        _crash_loop(stack)


def _crash_loop(stack: StackCli) -> None:
    try:
        stack.run("up", "crashy")
        status = stack.wait("given up", lambda s: s["crashy"]["state"] == "failed", within=60)
        row = status["crashy"]
        assert row["pid"] is None
        assert row["last_exit"].startswith("exit 3 at "), row
        assert row["restarts"] >= 5, row
        assert "gave up after" in stack.log("crashy")
        assert "giving up on a component that keeps exiting" in stack.log("supervisor")
        # `up` tries again on request
        stack.run("up", "crashy")
        assert stack.status()["crashy"]["state"] in ("running", "backoff", "failed")
    finally:
        stack.run("down", check=False)
