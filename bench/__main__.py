"""`make bench` / `python -m bench [--quick] [--reps N] [name ...]`.

Runs each benchmark against the local Kafka and PostgreSQL (started if needed) `--reps`
times (default 3), recording the machine's load average before and after each
repetition, prints the median of every figure beside the baseline (or hop floor)
measured in the same run, and writes bench/results/<name>.json with every repetition.
A repetition started on a busy machine (1-min load average > 0.5 x cores) marks the
result as from a loaded machine; `python -m bench.table` never publishes such a result,
a quick one, or one of fewer than 3 repetitions.
Names: fastpath, capacity, latency, containment, replay, intake, throughput, signing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.common import MIN_REPETITIONS, console, load_snapshot, machine, merge_median, settle

BENCHMARKS: dict[str, str] = {
    "fastpath": "bench.fastpath",
    "capacity": "bench.capacity",
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
    parser.add_argument(
        "--reps",
        type=int,
        default=MIN_REPETITIONS,
        help=f"repetitions per benchmark; figures are their median (published: >= "
        f"{MIN_REPETITIONS})",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # The benchmarks run on the local development stack with its development trust
    # material (.local/trust), which settings refuse outside CONN_ENV=development.
    os.environ.setdefault("CONN_ENV", "development")
    names = args.names or list(BENCHMARKS)
    m = machine()
    console.print(f"[bold]Conn benchmarks[/bold] on {m['cores']} cores, Python {m['python']}")
    started = time.perf_counter()
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        run: Callable[..., Coroutine[Any, Any, Any]] = module.main
        console.rule(f"[bold]{name}[/bold]")
        runs: list[Any] = []
        try:
            for rep in range(args.reps):
                runs.append(run_once(name, run, quick=args.quick, rep=rep, reps=args.reps))
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
            console.print(f"[red]{name} failed: {type(exc).__name__}: {exc}[/red]")
            console.print_exception(max_frames=8)
            failed.append(name)
            continue
        result = merge_median(runs[0].name, runs)
        result.show()
        path = result.write()
        console.print(
            f"[dim]{name}: {result.elapsed_seconds or 0:.0f}s, {len(runs)} repetition(s), "
            f"wrote {path}[/dim]"
        )
    total = time.perf_counter() - started
    console.print(
        f"[bold]total {total / 60:.1f} min[/bold]" + (f", failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


def run_once(
    name: str, run: Callable[..., Coroutine[Any, Any, Any]], *, quick: bool, rep: int, reps: int
) -> Any:
    """One repetition, with the load average before and after it."""
    before = settle()
    busy = " [yellow](busy machine: will not be published)[/yellow]" if before["busy"] else ""
    console.print(
        f"[dim]{name} {rep + 1}/{reps}: load average {before['loadavg_1m']} on "
        f"{before['cores']} cores[/dim]{busy}"
    )
    t0 = time.perf_counter()
    result: Any = asyncio.run(run(quick=quick))
    if result.elapsed_seconds is None:
        result.elapsed_seconds = round(time.perf_counter() - t0, 1)
    result.load_before, result.load_after = before, load_snapshot()
    result.quick = quick
    return result


if __name__ == "__main__":
    raise SystemExit(main())
