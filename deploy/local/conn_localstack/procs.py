"""Background processes of the local stack: PID files in .local/run, logs in .local/logs.

`make up` runs them under the supervisor (`conn_localstack.supervisor`), which uses
`spawn` / `terminate` here and restarts a process that exits unexpectedly. The
direct helpers below remain for one-off use. Reusable by anyone adding a component:

    spec = ProcessSpec(name="simulator", argv=[sys.executable, "-m", "conn_simulator"],
                       port=18080, health_url="http://127.0.0.1:18080/healthz")
    await start_process(spec)      # idempotent; waits until healthy
    stop_process("simulator")      # SIGTERM, wait, SIGKILL the process group; idempotent

A process is "ours" only if the PID in .local/run/<name>.pid is alive, and its create time
and command line match what we recorded in .local/run/<name>.json at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from conn_localstack.config import paths, stack_env

HealthCheck = Callable[[], Awaitable[bool]]


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    health_url: str | None = None  # GET must answer 2xx
    health_check: HealthCheck | None = None  # overrides health_url / port probe
    cwd: Path | None = None
    startup_timeout: float = 60.0
    stop_timeout: float = 15.0
    stop_signal: int = signal.SIGTERM
    """PostgreSQL: SIGINT ("fast" shutdown; SIGTERM would wait for every client)."""
    signal_group: bool = True
    """Signal the whole process group (False: only the leader, which stops its children)."""
    user: str | None = None
    """Run as this OS user when we are root (PostgreSQL refuses to run as root)."""


def pid_file(name: str) -> Path:
    return paths().run / f"{name}.pid"


def meta_file(name: str) -> Path:
    return paths().run / f"{name}.json"


def log_file(name: str) -> Path:
    return paths().logs / f"{name}.log"


def log_tail(name: str, lines: int = 40) -> str:
    f = log_file(name)
    if not f.exists():
        return f"(no log at {f})"
    data = f.read_bytes()[-20000:].decode(errors="replace").splitlines()
    return "\n".join(data[-lines:])


def write_pid(
    name: str, pid: int, argv: Sequence[str] | None = None, stop_timeout: float = 15.0
) -> None:
    """Record a process as ours (also for processes started by other tools, e.g. pg_ctl)."""
    paths().ensure()
    proc = psutil.Process(pid)
    meta = {
        "pid": pid,
        "create_time": proc.create_time(),
        "argv": list(argv or proc.cmdline()),
        "stop_timeout": stop_timeout,
    }
    meta_file(name).write_text(json.dumps(meta))
    pid_file(name).write_text(f"{pid}\n")


def _clear(name: str) -> None:
    for f in (pid_file(name), meta_file(name)):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


def running_pid(name: str) -> int | None:
    """PID of our live process `name`, or None (stale PID files are ignored)."""
    try:
        pid = int(pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        meta = json.loads(meta_file(name).read_text())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(proc.create_time() - float(meta["create_time"])) > 1.0:
            return None
        if not _cmd_matches(proc, meta):
            return None
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        return None
    return pid


def _cmd_matches(proc: psutil.Process, meta: dict[str, object]) -> bool:
    argv = [str(a) for a in meta.get("argv") or []]  # type: ignore[attr-defined]
    if not argv:
        return False
    cmd = proc.cmdline()
    if cmd and os.path.basename(cmd[0]) == os.path.basename(argv[0]):
        return True
    # A process may retitle itself (faust's worker calls setproctitle whenever the
    # package is installed, and mutmut brings it): its executable still says what it is.
    with contextlib.suppress(psutil.Error, OSError):
        exe = shutil.which(argv[0]) or argv[0]
        return bool(os.path.realpath(exe) == os.path.realpath(proc.exe()))
    return False


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def check_health(spec: ProcessSpec) -> bool:
    try:
        if spec.health_check is not None:
            return await spec.health_check()
        if spec.health_url:
            import httpx

            async with httpx.AsyncClient(timeout=2.0) as client:
                r = await client.get(spec.health_url)
                return 200 <= r.status_code < 300
        if spec.port is not None:
            return await asyncio.to_thread(port_open, spec.port)
        return running_pid(spec.name) is not None
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False


async def wait_healthy(spec: ProcessSpec, pid: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.startup_timeout
    while True:
        if await check_health(spec):
            return
        if pid is not None and not psutil.pid_exists(pid):
            raise StackError(
                f"{spec.name} exited during startup; log {log_file(spec.name)}:\n"
                + log_tail(spec.name)
            )
        if loop.time() > deadline:
            raise StackError(
                f"{spec.name} not healthy after {spec.startup_timeout:.0f}s; "
                f"log {log_file(spec.name)}:\n" + log_tail(spec.name)
            )
        await asyncio.sleep(0.3)


def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start `spec` in its own session (process group), output appended to its log,
    and record it as ours (PID file + meta). The caller owns the returned child."""
    paths().ensure()
    env = {**os.environ, **stack_env(), **spec.env}
    extra: dict[str, object] = {}
    if spec.user and os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(spec.user)
        extra = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        env["HOME"] = pw.pw_dir
    with log_file(spec.name).open("ab") as log:
        log.write(f"\n=== {time.strftime('%F %T')} start {list(spec.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(spec.argv),
            cwd=str(spec.cwd) if spec.cwd else None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **extra,
        )
    with contextlib.suppress(psutil.Error):  # gone already: the caller sees it exit
        write_pid(spec.name, proc.pid, spec.argv, spec.stop_timeout)
    return proc  # type: ignore[no-any-return]


def terminate(proc: subprocess.Popen[bytes], spec: ProcessSpec) -> int | None:
    """Stop a child we spawned: `spec.stop_signal`, wait `spec.stop_timeout`, then SIGKILL
    the whole group. Returns its exit status (negative: the signal)."""
    if proc.poll() is None:
        _signal_tree(proc.pid, spec.stop_signal, group=spec.signal_group)
        try:
            proc.wait(spec.stop_timeout)
        except subprocess.TimeoutExpired:
            _signal_tree(proc.pid, signal.SIGKILL, group=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    # Whatever the leader left behind in its group (never another process group).
    _signal_tree(proc.pid, signal.SIGKILL, group=True)
    _clear(spec.name)
    return proc.returncode


def kill_group(pid: int) -> None:
    """SIGKILL what is left in the process group `pid` led (we start every child as the
    leader of its own group, so this never reaches another process group)."""
    _signal_tree(pid, signal.SIGKILL, group=True)


def _signal_tree(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)  # our children lead their own group (start_new_session)
        else:
            os.kill(pid, sig)


def describe_status(code: int | None) -> str:
    """`-9` -> "signal SIGKILL", `1` -> "exit 1"."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def _spawn(spec: ProcessSpec) -> int:
    return spawn(spec).pid


async def start_process(spec: ProcessSpec, *, wait: bool = True) -> int:
    """Start `spec` in its own process group unless ours is already running. Returns the PID."""
    paths().ensure()
    pid = running_pid(spec.name)
    if pid is None:
        _clear(spec.name)
        if spec.port is not None and port_open(spec.port):
            raise StackError(
                f"{spec.name}: port {spec.port} is already in use by a process we did not start"
            )
        pid = _spawn(spec)
    if wait:
        try:
            await wait_healthy(spec, pid)
        except StackError:
            stop_process(spec.name)
            raise
    return pid


def stop_process(name: str, timeout: float | None = None) -> bool:
    """SIGTERM our process group `name`, wait, then SIGKILL. Idempotent. True if it was running."""
    pid = running_pid(name)
    if pid is None:
        _clear(name)
        return False
    if timeout is None:
        try:
            timeout = float(json.loads(meta_file(name).read_text()).get("stop_timeout", 15.0))
        except (OSError, ValueError):
            timeout = 15.0
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        _clear(name)
        return False
    # Only signal the group if the process leads it (we started it with start_new_session).
    group = pgid == pid
    procs = [psutil.Process(pid)]
    with contextlib.suppress(psutil.Error):
        procs += psutil.Process(pid).children(recursive=True)

    def _signal(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    _signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    if alive:
        _signal(signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
    _clear(name)
    return True
