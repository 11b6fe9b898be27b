"""`conn direct undo`, the inverse actions, and the dry-run display.

Imported at the end of `conn_cli.main` (which owns the `direct` command group)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from conn_cli import main as cli


def show_dry_run(body: Any, as_json: bool) -> None:
    if as_json:
        cli.out.print_json(json.dumps(body))
        return
    cli.out.print(
        f"[bold]dry run[/]: {body.get('summary')} would be issued "
        f"(checked at position {body.get('checked_at_sequence')}); nothing was recorded "
        "and nothing changed"
    )
    preview = body.get("preview")
    if not preview:
        cli.out.print(body.get("detail", ""))
        return
    cli.out.print(
        f"target {preview['target']} ({preview['method'].replace('_', ' ')}): "
        + ("would change" if preview["would_change"] else "would NOT change")
    )
    if preview.get("changes"):
        table = Table(show_header=True)
        for column in ("field", "now", "after"):
            table.add_column(column)
        for c in preview["changes"]:
            table.add_row(c["path"], json.dumps(c["before"]), json.dumps(c["after"]))
        cli.out.print(table)
    if preview.get("detail"):
        cli.out.print(preview["detail"])


@cli.direct_app.command("undo")
def direct_undo(
    incident: str,
    correlation_id: Annotated[str, typer.Argument(help="The step to undo")],
    based_on: cli.BasedOn = None,
    rationale: cli.Rationale = "",
    idempotency_key: cli.IdemKey = None,
    as_json: cli.JsonOpt = False,
    dry_run: cli.DryRun = False,
) -> None:
    """Issue the inverse recorded before step CORRELATION_ID ran (the flag rule's previous
    state, the pool's previous size) as a new bounded directive: the same authority,
    one-step-at-a-time rule and verification apply. Refused if the step recorded no undo
    or is irreversible (a restart)."""
    client = cli.Client()
    if based_on is None:
        based_on = int(client.request("GET", f"/v1/incidents/{incident}")["sequence"])
    body = {"based_on_sequence": based_on, "rationale": rationale, "dry_run": dry_run}
    r = client.request(
        "POST",
        f"/v1/incidents/{incident}/directives/{correlation_id}/undo",
        json=body,
        headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
    )
    if dry_run:
        show_dry_run(r, as_json)
        return
    cli.show(r, as_json, "undo issued")


@cli.direct_app.command("enable-flag-rule")
def direct_enable_flag_rule(
    incident: str,
    flag: Annotated[str, typer.Option()],
    rule: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    based_on: cli.BasedOn = None,
    rationale: cli.Rationale = "",
    idempotency_key: cli.IdemKey = None,
    as_json: cli.JsonOpt = False,
    dry_run: cli.DryRun = False,
) -> None:
    """Enable a flag rule again (the inverse of disable-flag-rule; `undo` issues it)."""
    action = {"action": "enable_flag_rule", "flag": flag, "rule": rule, "region": region}
    cli._direct(incident, action, based_on, rationale, None, idempotency_key, as_json, dry_run)


@cli.direct_app.command("scale-worker-pool")
def direct_scale(
    incident: str,
    pool: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    replicas: Annotated[int, typer.Option(min=1, help="Exact size (1..1000)")],
    based_on: cli.BasedOn = None,
    rationale: cli.Rationale = "",
    idempotency_key: cli.IdemKey = None,
    as_json: cli.JsonOpt = False,
    dry_run: cli.DryRun = False,
) -> None:
    """Scale a worker pool to an exact size (the inverse of drain-worker-pool)."""
    action = {"action": "scale_worker_pool", "pool": pool, "region": region, "replicas": replicas}
    cli._direct(incident, action, based_on, rationale, None, idempotency_key, as_json, dry_run)
