"""The local stack's supervisor: one small process that owns everything `make up` starts.

`make up` starts it (detached, its own session) unless it already runs; it then
starts the components in order, each once the previous one is healthy, as its own
children. When a child exits unexpectedly it is restarted with bounded
exponential backoff and jitter (1 s doubling to 30 s); the exit (code or signal,
and when), each restart and the count are logged and kept in its state file, which
`make status` shows. A child that keeps exiting quickly is given up on after
`MAX_RAPID_EXITS` attempts (state "failed", say `make up <name>` to try again):
a crash loop is reported, not hidden. `make down` asks it to stop the children in
reverse order (each: its stop signal, a grace period, then SIGKILL of its process
group) and to exit; nothing is left behind.

Files (under the stack's directory, `CONN_LOCAL_DIR`, default `.local/`):
  run/supervisor.pid, run/supervisor.json   the supervisor itself (as every process)
  run/supervisor-state.json                 per component: pid, state, restarts, last exit
  run/supervisor.sock                       its control socket (JSON lines)
  logs/supervisor.log                       its log (JSON lines); logs/<component>.log

With `CONN_STACK_EXIT_WITH=<pid>` in its environment (the test session sets it) it
shuts the stack down when that process is gone, so a killed test run leaves no
private stack behind.

Run it in the foreground with `python -m conn_localstack.cli supervise` (for debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from conn_localstack.config import paths
from conn_localstack.procs import (
    ProcessSpec,
    StackError,
    describe_status,
    kill_group,
    log_file,
    log_tail,
    port_open,
    running_pid,
    spawn,
    terminate,
    write_pid,
)
from conn_runtime.resilience import Backoff

log = logging.getLogger("conn_localstack.supervisor")

NAME = "supervisor"
SUPERVISE = ["-m", "conn_localstack.cli", "supervise"]


def _restart_backoff() -> Backoff:
    """1 s doubling to 30 s; CONN_SUPERVISOR_BACKOFF="<initial>,<maximum>" overrides (tests)."""
    raw = os.environ.get("CONN_SUPERVISOR_BACKOFF", "")
    with contextlib.suppress(ValueError):
        initial, maximum = (float(x) for x in raw.split(","))
        return Backoff(initial=initial, maximum=maximum)
    return Backoff(initial=1.0, maximum=30.0)


RESTART_BACKOFF = _restart_backoff()
MAX_RAPID_EXITS = 6
"""Consecutive exits (each before the child had run `STABLE_AFTER` seconds) before giving up."""
STABLE_AFTER = 30.0
TICK = 0.25
EXIT_WITH_ENV = "CONN_STACK_EXIT_WITH"


def state_file() -> Path:
    return paths().run / "supervisor-state.json"


def socket_path() -> Path:
    p = paths().run / "supervisor.sock"
    if len(str(p)) > 100:  # sun_path limit: a short, stable path for long checkouts
        digest = hashlib.sha256(str(p).encode()).hexdigest()[:12]
        p = Path("/tmp") / f"conn-sup-{digest}.sock"
    return p


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StartFailed(StackError):
    pass


@dataclass
class ExitInfo:
    status: str  # "exit 1", "signal SIGKILL", "not healthy after 60s", "failed to start: ..."
    at: str
    during: str  # "run" | "start"

    def describe(self) -> str:
        when = self.at.split("T", 1)[-1].replace("+00:00", "Z")
        return f"{self.status} at {when}" + (" (starting)" if self.during == "start" else "")


@dataclass
class Child:
    name: str
    component: Any  # stack.Component (imported lazily: stack imports this module)
    state: str = "stopped"  # stopped|starting|running|backoff|stopping|failed|done
    popen: subprocess.Popen[bytes] | None = None
    spec: ProcessSpec | None = None
    restarts: int = 0
    rapid_exits: int = 0
    last_exit: ExitInfo | None = None
    since: float = field(default_factory=time.monotonic)
    next_start: float | None = None
    task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        if self.popen is not None and self.popen.poll() is None:
            return self.popen.pid
        return None

    def set_state(self, state: str) -> None:
        self.state = state
        self.since = time.monotonic()

    def as_json(self) -> dict[str, Any]:
        return {
            "component": self.name,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit.describe() if self.last_exit else None,
            "last_exit_status": self.last_exit.status if self.last_exit else None,
            "last_exit_at": self.last_exit.at if self.last_exit else None,
            "for_seconds": round(time.monotonic() - self.since, 1),
        }


class Supervisor:
    def __init__(self) -> None:
        from conn_localstack.stack import components

        self.components = components()
        self.children = {c.name: Child(c.name, c) for c in self.components}
        self.order = [c.name for c in self.components]
        self.ops = asyncio.Lock()
        self.shutdown = asyncio.Event()
        self._clients: set[asyncio.Task[Any]] = set()
        self._lock: Any = None
        self._dirty = True
        self._last_write = 0.0
        parent = os.environ.get(EXIT_WITH_ENV, "")
        self.parent = int(parent) if parent.isdigit() else None

    # -- lifecycle ------------------------------------------------------------------------

    async def main(self) -> None:
        paths().ensure()
        self._lock = _take_lock()
        if self._lock is None:
            log.error(
                "another supervisor runs for this stack; exiting", extra={"lock": str(lock_file())}
            )
            return
        sock = socket_path()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(sock))
        # The PID file last: a client that sees it can talk to the socket.
        write_pid(NAME, os.getpid(), [sys.executable, *SUPERVISE])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.shutdown.set)
        log.info("supervisor started", extra={"pid": os.getpid(), "socket": str(sock)})
        monitor = asyncio.create_task(self._monitor(), name="monitor")
        try:
            await self.shutdown.wait()
        finally:
            log.info("supervisor stopping the stack")
            server.close()
            for task in list(self._clients):  # a start in progress is abandoned, not awaited
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            async with self.ops:
                await self._stop(list(reversed(self.order)), echo=None)
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            self._write_state(force=True, running=False)
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            if running_pid(NAME) == os.getpid():  # ours (never another supervisor's)
                for suffix in (".pid", ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        (paths().run / f"{NAME}{suffix}").unlink()
            log.info("supervisor stopped")

    # -- the watch --------------------------------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            try:
                self._watch()
            except Exception:
                log.exception("supervisor watch failed; carrying on")
            await asyncio.sleep(TICK)

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.state == "running" and child.popen is not None:
                code = child.popen.poll()
                if code is not None:
                    self._exited(child, describe_status(code), during="run")
                elif now - child.since > STABLE_AFTER and child.rapid_exits:
                    child.rapid_exits = 0
        if self.parent is not None and not psutil.pid_exists(self.parent):
            log.warning("the process that owns this stack is gone; stopping")
            self.shutdown.set()
        self._write_state()

    def _exited(self, child: Child, status: str, *, during: str) -> None:
        if child.popen is not None:
            # What the dead leader left in its process group (e.g. PostgreSQL backends of a
            # killed postmaster, which would keep the new one from starting).
            kill_group(child.popen.pid)
        child.last_exit = ExitInfo(status, _now_iso(), during)
        child.rapid_exits += 1
        self._dirty = True
        self._note(child, f"exited unexpectedly ({child.last_exit.describe()})")
        if child.rapid_exits > MAX_RAPID_EXITS:
            child.set_state("failed")
            log.error(
                "giving up on a component that keeps exiting",
                extra={"component": child.name, "exits": child.rapid_exits, "last": status},
            )
            self._note(child, f"gave up after {child.rapid_exits} quick exits")
            return
        delay = RESTART_BACKOFF.delay(child.rapid_exits - 1)
        child.set_state("backoff")
        child.next_start = time.monotonic() + delay
        log.warning(
            "component exited; restarting it",
            extra={
                "component": child.name,
                "exit": status,
                "during": during,
                "restart_in_s": round(delay, 2),
                "restarts": child.restarts,
            },
        )
        child.task = asyncio.create_task(self._restart_later(child, delay))

    async def _restart_later(self, child: Child, delay: float) -> None:
        await asyncio.sleep(delay)
        child.restarts += 1
        self._dirty = True
        self._note(child, f"restart #{child.restarts}")
        try:
            await self._start_child(child, echo=None)
        except StackError as exc:
            self._exited(child, str(exc), during="start")
            return
        log.info("component restarted", extra={"component": child.name, "pid": child.pid})

    def _note(self, child: Child, text: str) -> None:
        """A marker line in the component's own log (what `make logs` shows)."""
        with contextlib.suppress(OSError), log_file(child.name).open("ab") as f:
            f.write(f"=== {time.strftime('%F %T')} supervisor: {text}\n".encode())

    # -- starting and stopping -------------------------------------------------------------

    async def _start_child(self, child: Child, echo: Callable[[str], None] | None) -> None:
        comp = child.component
        if comp.run is not None:  # a one-shot step (topics)
            child.set_state("starting")
            await comp.run()
            child.set_state("done")
            return
        if comp.stop_stray is not None and await asyncio.to_thread(comp.stop_stray):
            msg = f"{child.name}: stopped an instance this supervisor did not start"
            log.warning(msg, extra={"component": child.name})
            if echo:
                echo(f"[up] {msg}")
        if comp.prepare is not None:
            await asyncio.to_thread(comp.prepare)
        spec: ProcessSpec = comp.spec()
        if spec.port is not None and await asyncio.to_thread(port_open, spec.port):
            raise StartFailed(
                f"{child.name}: port {spec.port} is already in use by a process we did not start"
            )
        child.spec = spec
        child.popen = await asyncio.to_thread(spawn, spec)
        child.set_state("starting")
        self._dirty = True
        check = comp.started or comp.healthy
        deadline = time.monotonic() + spec.startup_timeout
        while True:
            code = child.popen.poll()
            if code is not None:
                raise StartFailed(f"{describe_status(code)} during start")
            if await _bounded(check()):
                break
            if time.monotonic() > deadline:
                await asyncio.to_thread(terminate, child.popen, spec)
                raise StartFailed(f"not healthy after {spec.startup_timeout:.0f}s")
            await asyncio.sleep(0.3)
        child.set_state("running")
        self._dirty = True

    async def _stop_child(self, child: Child) -> bool:
        if child.task is not None and not child.task.done():
            child.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await child.task
        child.task = None
        was = child.pid is not None
        if child.popen is not None and child.spec is not None:
            child.set_state("stopping")
            code = await asyncio.to_thread(terminate, child.popen, child.spec)
            self._note(child, f"stopped on request ({describe_status(code)})")
        child.popen = None
        child.rapid_exits = 0
        child.set_state("stopped")
        self._dirty = True
        return was

    async def _start(self, names: list[str], echo: Callable[[str], None]) -> dict[str, Any]:
        started: list[str] = []
        already: list[str] = []
        for name in self.order:
            if name not in names:
                continue
            child = self.children[name]
            if child.component.run is not None:
                echo(f"[up] {name}: ensuring")
            elif child.state in ("running", "starting") and child.pid is not None:
                already.append(name)
                echo(f"[up] {name}: already running (pid {child.pid})")
                continue
            else:
                if child.state in ("backoff", "failed"):
                    await self._stop_child(child)
                echo(f"[up] {name}: starting")
            try:
                await self._start_child(child, echo)
            except StackError as exc:
                child.last_exit = ExitInfo(str(exc), _now_iso(), "start")
                child.set_state("failed")
                if child.popen is not None and child.spec is not None:
                    await asyncio.to_thread(terminate, child.popen, child.spec)
                child.popen = None
                self._dirty = True
                tail = log_tail(name)
                raise StackError(f"{name}: {exc}; log {log_file(name)}:\n{tail}") from exc
            if child.component.run is None:
                started.append(name)
            pid = child.pid
            echo(f"[up] {name}: healthy" + (f" (pid {pid})" if pid else ""))
        return {"started": started, "already_running": already}

    async def _stop(self, names: list[str], echo: Callable[[str], None] | None) -> list[str]:
        stopped = []
        for name in reversed(self.order):
            if name not in names:
                continue
            child = self.children[name]
            if child.component.run is not None:
                child.set_state("stopped")
                continue
            if await self._stop_child(child):
                stopped.append(name)
                if echo:
                    echo(f"[down] {name}: stopped")
        return stopped

    # -- status -----------------------------------------------------------------------------

    def _write_state(self, *, force: bool = False, running: bool = True) -> None:
        now = time.monotonic()
        if not (force or self._dirty or now - self._last_write > 2.0):
            return
        doc = {
            "supervisor": {"pid": os.getpid(), "running": running, "written_at": _now_iso()},
            "components": [self.children[n].as_json() for n in self.order],
        }
        path = state_file()
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(path)
        self._dirty = False
        self._last_write = now

    async def _status(self) -> list[dict[str, Any]]:
        async def row(child: Child) -> dict[str, Any]:
            out = child.as_json()
            comp = child.component
            out["port"] = comp.port
            healthy, detail = await _health(comp, child)
            out["healthy"] = healthy
            out["detail"] = detail
            return out

        return list(await asyncio.gather(*(row(self.children[n]) for n in self.order)))

    # -- the control socket -----------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(doc: dict[str, Any]) -> None:
            writer.write(json.dumps(doc).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()

        def progress(line: str) -> None:
            writer.write(json.dumps({"progress": line}).encode() + b"\n")

        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)
        try:
            request = json.loads(await reader.readline() or b"{}")
            cmd = request.get("cmd")
            names = request.get("names") or list(self.order)
            unknown = sorted(set(names) - set(self.order))
            if unknown:
                await send({"ok": False, "error": f"unknown components: {unknown}"})
            elif cmd == "start":
                async with self.ops:
                    result = await self._start(names, progress)
                await send({"ok": True, "result": result})
            elif cmd == "stop":
                async with self.ops:
                    stopped = await self._stop(names, progress)
                await send({"ok": True, "result": {"stopped": stopped}})
            elif cmd == "status":
                await send({"ok": True, "result": await self._status()})
            elif cmd == "shutdown":
                await send({"ok": True, "result": {"pid": os.getpid()}})
                self.shutdown.set()
            else:
                await send({"ok": False, "error": f"unknown command {cmd!r}"})
        except StackError as exc:
            await send({"ok": False, "error": str(exc)})
        except Exception as exc:
            log.exception("control request failed")
            await send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()


async def _bounded(check: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(check, 5.0))
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False


async def _health(comp: Any, child: Child) -> tuple[bool, str]:
    """(healthy, detail): the component's health check, plus for a service whose ops
    server has /readyz the dependencies it is waiting for."""
    if comp.run is None and child.pid is None:
        return False, ""
    healthy = await _bounded(comp.healthy())
    detail = ""
    spec = child.spec
    url = spec.health_url if spec is not None else None
    if url and child.pid is not None:
        ready_url = url.rsplit("/", 1)[0] + "/readyz"
        with contextlib.suppress(Exception):
            import httpx

            async with httpx.AsyncClient(timeout=2.0) as http:
                resp = await http.get(ready_url)
            if resp.status_code == 503:
                body = resp.json()
                missing = body.get("missing") or body.get("error", {}).get("detail", {}).get(
                    "missing"
                )
                checks = body.get("checks") or body.get("error", {}).get("detail", {}).get(
                    "checks", {}
                )
                failing = [k for k, v in checks.items() if not v]
                healthy = False
                detail = (
                    f"waiting for {', '.join(missing)}"
                    if missing
                    else "not ready: " + (", ".join(failing) or "?")
                )
    return healthy, detail


# --- the client side (make up / down / status, tests) -------------------------------------


def lock_file() -> Path:
    return paths().run / "supervisor.lock"


def _take_lock() -> Any:
    """The stack's one-supervisor lock (held for the supervisor's life), or None if another
    process holds it. Holding it is what makes a supervisor *the* supervisor of a stack."""
    paths().ensure()
    f = lock_file().open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _lock_holder() -> int | None:
    """PID written by the supervisor that holds the lock, if one does."""
    try:
        f = lock_file().open("r")
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: a supervisor runs
            text = f.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


def supervisor_pid() -> int | None:
    pid = running_pid(NAME)
    return pid if pid is not None else _lock_holder()


def request(
    cmd: str,
    names: Iterable[str] | None = None,
    *,
    echo: Callable[[str], None] | None = None,
    timeout: float = 600.0,
) -> Any:
    """Send one command to the running supervisor; progress lines go to `echo`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path()))
        doc = {"cmd": cmd, "names": list(names) if names is not None else None}
        sock.sendall(json.dumps(doc).encode() + b"\n")
        for line in _lines(sock):
            msg = json.loads(line)
            if "progress" in msg:
                if echo:
                    echo(str(msg["progress"]))
                continue
            if not msg.get("ok"):
                raise StackError(str(msg.get("error")))
            return msg.get("result")
    except OSError as exc:
        raise StackError(f"the stack's supervisor does not answer ({exc})") from exc
    finally:
        sock.close()
    raise StackError("the stack's supervisor closed the connection without an answer")


def _lines(sock: socket.socket) -> Iterator[bytes]:
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line


def answering() -> bool:
    if supervisor_pid() is None:
        return False
    try:
        request("status", timeout=10.0)
    except StackError:
        return False
    return True


def ensure_running(echo: Callable[[str], None] | None = None, timeout: float = 30.0) -> int:
    """Start the supervisor (detached) unless it already runs; returns its PID."""
    pid = supervisor_pid()
    if pid is not None:
        return pid
    paths().ensure()
    with log_file(NAME).open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *SUPERVISE],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[3]),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"the supervisor exited ({describe_status(proc.returncode)}); "
                f"log {log_file(NAME)}:\n{log_tail(NAME)}"
            )
        if socket_path().exists() and supervisor_pid() == proc.pid:
            if echo:
                echo(f"[up] supervisor: started (pid {proc.pid})")
            return proc.pid
        time.sleep(0.1)
    raise StackError(f"the supervisor did not come up in {timeout:.0f}s:\n{log_tail(NAME)}")


def stop_supervisor(timeout: float = 180.0) -> bool:
    """Ask the supervisor to stop the stack and exit; wait for it. True if it ran."""
    pid = supervisor_pid()
    if pid is None:
        return False
    try:
        request("shutdown", timeout=10.0)
    except StackError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout)
    return True


def read_state() -> dict[str, Any] | None:
    try:
        return dict(json.loads(state_file().read_text()))
    except (OSError, ValueError):
        return None


def main() -> int:
    from conn_runtime import logs

    logs.configure("supervisor")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if supervisor_pid() not in (None, os.getpid()):
        print("a supervisor already runs for this stack", file=sys.stderr)
        return 1
    asyncio.run(Supervisor().main())
    return 0
