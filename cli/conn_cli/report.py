"""`conn report`: the fleet SLIs over every incident (GET /v1/fleet/report).

Definitions: README, "Fleet SLIs" (computed by conn_core.fleet from the ledger alone;
`conn replay --fleet-report` recomputes the same report from the topic)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from conn_core import fleet

FORMATS = ("table", "json", "markdown")


def tables(report: dict[str, Any]) -> list[Table]:
    """The report as rich tables: totals, refusals by reason, trend per ISO week."""
    window = report["window"]
    totals = Table(
        title=f"Conn fleet report ({window['since'] or 'beginning'} to {window['until'] or 'now'})",
        title_justify="left",
    )
    totals.add_column("SLI", style="bold")
    totals.add_column("value", justify="right")
    for label, value in fleet.iter_rows(report["totals"]):
        totals.add_row(label, value)
    out = [totals]
    caught = report["totals"]["caught_by_reason"]
    if caught:
        reasons = Table(title="Caught before acting, by reason", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("refusals", justify="right")
        for reason, n in caught.items():
            reasons.add_row(reason, str(n))
        out.append(reasons)
    if report["weeks"]:
        trend = Table(title="Trend per ISO week", title_justify="left")
        trend.add_column("week")
        for _, key, _ in fleet.ROWS:
            trend.add_column(fleet.SHORT[key], justify="right")
        for week in report["weeks"]:
            trend.add_row(
                week["week"], *(value for _, value in fleet.iter_rows(week, compact=True))
            )
        out.append(trend)
    return out


def render(report: dict[str, Any], fmt: str, console: Console) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(fleet.render_markdown(report))
    else:
        for table in tables(report):
            console.print(table)


def report(
    since: Annotated[
        str | None, typer.Option(help="Incidents started at/after this ISO date or time (UTC)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Incidents started before this ISO date or time (UTC)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or markdown")] = "table",
) -> None:
    """Fleet SLIs over all incidents, with a trend per ISO week."""
    from conn_cli.main import Client, fail, out

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}", 2)
    try:
        fleet.window(since, until)  # a clear usage error before any request
    except ValueError as exc:
        fail(str(exc), 2)
    params = {k: v for k, v in (("since", since), ("until", until)) if v}
    render(Client().request("GET", "/v1/fleet/report", params=params), fmt, out)
