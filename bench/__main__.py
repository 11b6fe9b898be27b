"""`make bench` / `python -m bench [--quick] [name ...]`.

Runs each benchmark against the local Kafka and PostgreSQL (started if needed), prints
its figures beside the baseline measured in the same run, and writes
bench/results/<name>.json. Names: latency, containment, replay, intake, throughput, signing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import console, machine

BENCHMARKS: dict[str, str] = {
    "latency": "bench.latency",
    "containment": "bench.containment",
    "replay": "bench.replay",
    "intake": "bench.intake",
    "throughput": "bench.throughput",
    "signing": "bench.signing",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.names or list(BENCHMARKS)
    m = machine()
    console.print(f"[bold]Conn benchmarks[/bold] on {m['cores']} cores, Python {m['python']}")
    started = time.perf_counter()
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        run: Callable[..., Awaitable[Any]] = module.main
        console.rule(f"[bold]{name}[/bold]")
        t0 = time.perf_counter()
        try:
            result = asyncio.run(run(quick=args.quick))
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
            console.print(f"[red]{name} failed: {type(exc).__name__}: {exc}[/red]")
            console.print_exception(max_frames=8)
            failed.append(name)
            continue
        if result.elapsed_seconds is None:
            result.elapsed_seconds = round(time.perf_counter() - t0, 1)
        result.show()
        path = result.write()
        console.print(f"[dim]{name}: {result.elapsed_seconds:.0f}s, wrote {path}[/dim]")
    total = time.perf_counter() - started
    console.print(
        f"[bold]total {total / 60:.1f} min[/bold]" + (f", failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
