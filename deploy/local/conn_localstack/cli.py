"""`python -m conn_localstack.cli {up,down,status}` (make up / make down / make status)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from rich.console import Console
from rich.table import Table

from conn_localstack.procs import StackError
from conn_localstack.stack import stack_down, stack_status, stack_up

console = Console()


def _echo(msg: str) -> None:
    console.print(msg, highlight=False, markup=False)


def _status() -> int:
    rows = asyncio.run(stack_status())
    table = Table(title="Conn local stack")
    for col in ("component", "pid", "port", "healthy"):
        table.add_column(col)
    for r in rows:
        ok = bool(r["healthy"])
        table.add_row(
            str(r["component"]),
            str(r["pid"] or "-"),
            str(r["port"] or "-"),
            "[green]yes[/green]" if ok else "[red]no[/red]",
        )
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conn-stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("components", nargs="*", help="subset of components (default: all)")
    args = parser.parse_args(argv)
    # aiokafka logs every refused connection while we poll for health; keep the CLI quiet.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = args.components or None
    try:
        if args.command == "up":
            asyncio.run(stack_up(names, echo=_echo))
            return _status()
        if args.command == "down":
            stack_down(names, echo=_echo)
            _echo("[down] done")
            return 0
        return _status()
    except StackError as e:
        console.print(f"[{args.command}] error: {e}", style="red", highlight=False, markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
