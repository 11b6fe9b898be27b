"""`python -m conn_localstack.cli {up,down,status,logs}` (make up / down / status / logs).

up [components]      start (under the supervisor) and wait until healthy
down [components]    stop; without names: everything, and the supervisor
status               per component: state, pid, healthy, restarts, last exit
logs [component]     follow a component's log (default: the supervisor's and all)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys

from rich.console import Console
from rich.table import Table

from conn_localstack.procs import StackError, log_file
from conn_localstack.stack import components, stack_down, stack_status, stack_up
from conn_localstack.supervisor import NAME as SUPERVISOR
from conn_localstack.supervisor import supervisor_pid

console = Console()


def _echo(msg: str) -> None:
    console.print(msg, highlight=False, markup=False)


def _status(as_json: bool = False) -> int:
    rows = asyncio.run(stack_status())
    if as_json:
        print(json.dumps({"supervisor": supervisor_pid(), "components": rows}, default=str))
        return 0
    pid = supervisor_pid()
    title = (
        f"Conn local stack (supervisor pid {pid})" if pid else "Conn local stack (no supervisor)"
    )
    table = Table(title=title)
    for col in ("component", "state", "pid", "port", "healthy", "restarts", "last exit"):
        table.add_column(col)
    for r in rows:
        ok = bool(r["healthy"])
        detail = str(r.get("detail") or "")
        healthy = (
            "[green]yes[/green]" if ok else "[red]no[/red]" + (f" ({detail})" if detail else "")
        )
        restarts = int(r.get("restarts") or 0)  # type: ignore[call-overload]
        table.add_row(
            str(r["component"]),
            str(r.get("state") or "-"),
            str(r["pid"] or "-"),
            str(r["port"] or "-"),
            healthy,
            f"[yellow]{restarts}[/yellow]" if restarts else "0",
            str(r.get("last_exit") or "-"),
        )
    console.print(table)
    return 0


def _logs(names: list[str], lines: int, follow: bool) -> int:
    known = [c.name for c in components()] + [SUPERVISOR]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise StackError(f"unknown components: {unknown} (known: {', '.join(known)})")
    files = [log_file(n) for n in (names or known)]
    files = [f for f in files if f.exists()]
    if not files:
        raise StackError("no log yet (has `make up` run?)")
    tail = shutil.which("tail")
    if tail is None:
        raise StackError("`tail` not found")
    argv = [tail, "-n", str(lines), *(["-F"] if follow else []), *map(str, files)]
    sys.stdout.flush()
    os.execv(tail, argv)  # Ctrl-C ends it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conn-stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "logs", "supervise"])
    parser.add_argument("components", nargs="*", help="subset of components (default: all)")
    parser.add_argument("-n", "--lines", type=int, default=40, help="logs: lines to show first")
    parser.add_argument("--no-follow", action="store_true", help="logs: print and exit")
    parser.add_argument("--json", action="store_true", help="status: one JSON document")
    args = parser.parse_args(argv)
    # aiokafka logs every refused connection while we poll for health; keep the CLI quiet.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = args.components or None
    if args.command == "supervise":  # the supervisor itself (started by `up`)
        from conn_localstack.supervisor import main as supervise

        return supervise()
    try:
        if args.command == "up":
            asyncio.run(stack_up(names, echo=_echo))
            return _status()
        if args.command == "down":
            stack_down(names, echo=_echo)
            _echo("[down] done")
            return 0
        if args.command == "logs":
            return _logs(args.components, args.lines, not args.no_follow)
        return _status(args.json)
    except StackError as e:
        console.print(f"[{args.command}] error: {e}", style="red", highlight=False, markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
