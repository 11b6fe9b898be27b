"""`conn`: the commander's CLI for the directive API.

Config: CONN_API_URL (default http://127.0.0.1:18000), CONN_TOKEN (bearer token),
CONN_CLI_RETRIES (default 3: a request the API shed, 429 or 503 overloaded, is repeated
after its Retry-After plus up to 25 % jitter, at most this often, saying so on stderr);
`conn keys` and `conn replay` use CONN_KEYRING_FILE (and replay the KAFKA_* login).
Exit codes: 0 ok, 1 refused/conflict (4xx from the API), 2 usage/auth error,
3 API unreachable or failing (5xx).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

app = typer.Typer(
    help="Conn: direct incident remediation one bounded step at a time.", no_args_is_help=True
)
incident_app = typer.Typer(help="Open, show and list incidents.", no_args_is_help=True)
authority_app = typer.Typer(
    help="The authority boundary: declare (narrow-only during an incident), show, approve.",
    no_args_is_help=True,
)
direct_app: typer.Typer = typer.Typer(help="Direct one bounded action.", no_args_is_help=True)
kill_app = typer.Typer(help="Global kill switch (admin).", no_args_is_help=True)
alerts_app = typer.Typer(help="Post alerts (integrations).", no_args_is_help=True)
app.add_typer(incident_app, name="incident")
app.add_typer(authority_app, name="authority")
app.add_typer(direct_app, name="direct")
app.add_typer(kill_app, name="kill-switch")
app.add_typer(alerts_app, name="alerts")

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer")]


MAX_RETRY_WAIT_SECONDS = 30.0
RETRY_JITTER = 0.25
"""A repeat waits Retry-After plus up to this fraction more (never less than asked), so
the commanders an overload shed at the same moment do not all come back at once."""

HINTS = {
    "self_approval": "you issued this directive: a second person entitled by its approval "
    "rule must approve it (`conn approvals <incident>` lists who may)",
    "role_may_not_direct": "your role or team is not entitled to this",
}
"""What to do next, after the API's own message, for refusals a commander meets often."""


def retry_after(r: httpx.Response) -> float | None:
    """Seconds to wait before repeating a request the API shed, or None: not shed.

    Only a 429, or a 503 `overloaded` (answered before the API did anything), is
    repeated: any other 5xx may have done something already. Retry-After in seconds or
    as an HTTP date; missing or unreadable: 1 s; at most MAX_RETRY_WAIT_SECONDS."""
    if r.status_code == 503:
        try:
            code = r.json().get("error", {}).get("code")
        except (ValueError, AttributeError):
            return None
        if code != "overloaded":
            return None
    elif r.status_code != 429:
        return None
    value = r.headers.get("Retry-After", "").strip()
    wait = 1.0
    if value.isdigit():
        wait = float(value)
    elif value:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            when = email.utils.parsedate_to_datetime(value)
            wait = (when - datetime.now(UTC)).total_seconds()
    return min(max(wait, 0.0), MAX_RETRY_WAIT_SECONDS)


class Client:
    def __init__(self) -> None:
        self.url = os.environ.get("CONN_API_URL", "http://127.0.0.1:18000").rstrip("/")
        self.token = os.environ.get("CONN_TOKEN", "")
        retries = os.environ.get("CONN_CLI_RETRIES", "3").strip()
        self.retries = min(int(retries), 10) if retries.isdigit() else 3

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        attempt = 0
        while True:
            try:
                r = httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)
            except httpx.HTTPError as exc:
                fail(f"cannot reach the Conn API at {self.url}: {exc}", 3)
            wait = retry_after(r)
            if wait is None or attempt >= self.retries:
                break
            attempt += 1
            wait += random.uniform(0.0, wait * RETRY_JITTER)
            err.print(
                f"[yellow]the Conn API is overloaded ({r.status_code}); nothing was done. "
                f"Retrying in {wait:.1f} s ({attempt}/{self.retries})[/]",
                highlight=False,
            )
            time.sleep(wait)
        try:
            body = r.json()
        except ValueError:
            body = {"error": {"code": "bad_response", "message": r.text[:300], "detail": None}}
        if r.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            code = error.get("code", str(r.status_code))
            message = error.get("message", r.text[:300])
            detail = error.get("detail")
            if r.status_code == 401:
                fail(f"unauthorized: {message} (set CONN_TOKEN)", 2)
            extra = ""
            if isinstance(detail, dict) and detail.get("correlation_id"):
                extra = f"\n  recorded as refusal {detail['correlation_id']}"
            if retry_after(r) is not None:
                extra = f"\n  still overloaded after {attempt} retries; try again later"
            if isinstance(code, str) and code in HINTS:
                extra += f"\n  {HINTS[code]}"
            fail(f"{r.status_code} {code}: {message}{extra}", 3 if r.status_code >= 500 else 1)
        return body


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def show(body: Any, as_json: bool, title: str | None = None) -> None:
    if as_json:
        out.print_json(json.dumps(body))
        return
    if isinstance(body, dict):
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for k, v in body.items():
            if isinstance(v, dict | list):
                v = json.dumps(v) if len(json.dumps(v)) < 120 else f"({len(v)} items)"
            table.add_row(str(k), "" if v is None else str(v))
        out.print(table)
    else:
        out.print(body)


def _post(path: str, body: dict[str, Any], as_json: bool, title: str, **kw: Any) -> None:
    show(Client().request("POST", path, json=body, **kw), as_json, title)


# --- incidents ------------------------------------------------------------------------


@incident_app.command("open")
def incident_open(
    title: Annotated[str, typer.Option(help="Incident title")],
    service: Annotated[str, typer.Option(help="Affected service")],
    severity: Annotated[str, typer.Option(help="sev1..sev5")] = "sev2",
    incident_id: Annotated[str | None, typer.Option("--id", help="Explicit incident id")] = None,
    as_json: JsonOpt = False,
) -> None:
    body: dict[str, Any] = {"title": title, "service": service, "severity": severity}
    if incident_id:
        body["incident_id"] = incident_id
    _post("/v1/incidents", body, as_json, "incident opened")


@incident_app.command("show")
def incident_show(incident: str, as_json: JsonOpt = False) -> None:
    s = Client().request("GET", f"/v1/incidents/{incident}")
    if as_json:
        show(s, True)
        return
    t = Table(title=f"{s['incident_id']}: {s['title']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    holder = s.get("holder") or {}
    hold = s.get("hold")
    rows = [
        ("status", s["status"]),
        ("service", s["service"]),
        ("ledger position", str(s["sequence"])),
        ("holder", f"{holder.get('identity', '-')} ({holder.get('team') or '-'})"),
        (
            "authority",
            f"{s['authority']['name']}@{s['authority']['version']}" if s.get("authority") else "-",
        ),
        ("hold", f"{hold['reason']}: {hold['detail']}" if hold else "-"),
        ("kill switch", "ENGAGED" if s["kill_switch"]["engaged"] else "off"),
        ("open step", s.get("open_step") or "-"),
        ("last verdict", s.get("last_verdict") or "-"),
        ("takeover requested to", s.get("takeover_requested_to") or "-"),
    ]
    for region, h in (s.get("health") or {}).items():
        rows.append(
            (
                f"health {region}",
                f"err {h['error_rate']:.3f} queue {h['queue_depth']:.0f} (age {h['age_seconds']:.0f}s)",
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    if s.get("directives"):
        d = Table(title="directives")
        for col in ("correlation", "action", "actor", "status", "verdict"):
            d.add_column(col)
        for x in s["directives"]:
            d.add_row(
                x["correlation_id"][:8], x["summary"], x["actor"], x["status"], x["verdict"] or ""
            )
        out.print(d)


@incident_app.command("list")
def incident_list(
    status: Annotated[str | None, typer.Option(help="open|on_hold|closed")] = None,
    as_json: JsonOpt = False,
) -> None:
    body = Client().request("GET", "/v1/incidents", params={"status": status} if status else {})
    if as_json:
        show(body, True)
        return
    t = Table(title="incidents")
    for col in ("incident", "status", "service", "holder", "position", "title"):
        t.add_column(col)
    for i in body["items"]:
        t.add_row(
            i["incident_id"],
            i["status"],
            i["service"],
            i["holder"] or "-",
            str(i["sequence"]),
            i["title"],
        )
    out.print(t)


@authority_app.command("declare")
def authority_declare(
    incident: str,
    runbook: Annotated[
        str | None, typer.Option(help="Runbook name in the API's runbooks dir")
    ] = None,
    file: Annotated[
        typer.FileText | None,
        typer.Option(help="Local authority YAML file (accepted only by a development API)"),
    ] = None,
    detail: Annotated[str, typer.Option(help="Why (shown to the approver)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Declare the boundary. During an incident a change may only narrow it; a wider
    one is recorded as a proposal that a second commander or admin must approve."""
    if (runbook is None) == (file is None):
        fail("give exactly one of --runbook or --file", 2)
    body: dict[str, Any] = {"runbook": runbook} if runbook else {}
    if file is not None:
        body = {"content": file.read(), "source_file": getattr(file, "name", "file")}
    body["detail"] = detail
    answer = Client().request("POST", f"/v1/incidents/{incident}/authority", json=body)
    if as_json:
        show(answer, True)
        return
    if answer.get("status") == "proposed":
        show(
            {k: v for k, v in answer.items() if k != "widenings"},
            False,
            "authority change PROPOSED (it widens the boundary)",
        )
        for line in answer.get("widenings", []):
            out.print(f"  - {line}", highlight=False)
        out.print(
            f"It takes effect when a second commander or admin who does not hold the conn "
            f"approves it: conn authority approve {incident} {answer['proposal_id']} "
            f"--sha256 {answer['content_sha256']}",
            highlight=False,
        )
        return
    show(answer, False, "authority declared")


@authority_app.command("show")
def authority_show(incident: str, as_json: JsonOpt = False) -> None:
    """The authority in force (name, version, sha256, file) and proposed changes."""
    body = Client().request("GET", f"/v1/incidents/{incident}/authority")
    a = body.get("authority")
    if as_json or a is None:
        show(body, as_json, "authority")
        return
    show({k: v for k, v in a.items() if k != "proposals"}, False, "authority in force")
    if a.get("proposals"):
        t = Table(title="proposed changes")
        for col in ("proposal", "by", "version", "sha256", "approved by", "applied", "widens"):
            t.add_column(col)
        for p in a["proposals"]:
            t.add_row(
                p["proposal_id"],
                p["proposed_by"],
                f"{p['name']}@{p['version']}",
                p["sha256"][:12] + "…",
                p["approved_by"] or "-",
                "yes" if p["applied"] else "no",
                "; ".join(p["widenings"][:3]) + (" …" if len(p["widenings"]) > 3 else ""),
            )
        out.print(t)


@authority_app.command("approve")
def authority_approve(
    incident: str,
    proposal_id: str,
    sha256: Annotated[
        str, typer.Option("--sha256", help="The proposed file's sha256 you reviewed (required)")
    ],
    detail: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve a proposed wider boundary (you must neither hold the conn nor have
    proposed it); the approval and the declaration are recorded in the ledger."""
    _post(
        f"/v1/incidents/{incident}/authority/proposals/{proposal_id}/approve",
        {"content_sha256": sha256, "detail": detail},
        as_json,
        "authority change approved and declared",
    )


# --- directives -----------------------------------------------------------------------

BasedOn = Annotated[
    int | None, typer.Option("--based-on", help="Ledger position (default: the current one)")
]
Rationale = Annotated[str, typer.Option(help="For humans; never parsed")]
IdemKey = Annotated[str | None, typer.Option("--idempotency-key", help="Default: a fresh key")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Check it against the authority and ask the target for the exact change it "
        "would make (server-side dry run where supported, a computed diff otherwise); "
        "records nothing in the ledger and changes nothing",
    ),
]


def _direct(
    incident: str,
    action: dict[str, Any],
    based_on: int | None,
    rationale: str,
    expectation: dict[str, Any] | None,
    idem: str | None,
    as_json: bool,
    dry_run: bool = False,
) -> None:
    client = Client()
    if based_on is None:
        based_on = int(client.request("GET", f"/v1/incidents/{incident}")["sequence"])
    body: dict[str, Any] = {"action": action, "based_on_sequence": based_on, "rationale": rationale}
    if expectation is not None:
        body["expectation"] = expectation
    if dry_run:
        from conn_cli.undo import show_dry_run

        show_dry_run(
            client.request("POST", f"/v1/incidents/{incident}/directives/dry-run", json=body),
            as_json,
        )
        return
    r = client.request(
        "POST",
        f"/v1/incidents/{incident}/directives",
        json=body,
        headers={"Idempotency-Key": idem or str(uuid.uuid4())},
    )
    show(r, as_json, "directive issued")


@direct_app.command("gather-state")
def direct_gather(
    incident: str,
    region: Annotated[list[str] | None, typer.Option(help="Region (repeatable)")] = None,
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
) -> None:
    _direct(
        incident,
        {"action": "gather_state", "regions": region or []},
        based_on,
        rationale,
        None,
        idempotency_key,
        as_json,
    )


@direct_app.command("verify")
def direct_verify(
    incident: str,
    region: Annotated[list[str] | None, typer.Option(help="Region (repeatable)")] = None,
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
) -> None:
    _direct(
        incident,
        {"action": "verify", "regions": region or []},
        based_on,
        rationale,
        None,
        idempotency_key,
        as_json,
    )


@direct_app.command("disable-flag-rule")
def direct_disable_flag_rule(
    incident: str,
    flag: Annotated[str, typer.Option()],
    rule: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    expect_enabled: Annotated[
        bool | None,
        typer.Option("--expect-enabled/--expect-disabled", help="What you expect to observe first"),
    ] = None,
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
    dry_run: DryRun = False,
) -> None:
    exp = None
    if expect_enabled is not None:
        exp = {
            "kind": "flag_rule",
            "flag": flag,
            "rule": rule,
            "region": region,
            "enabled": expect_enabled,
        }
    action = {"action": "disable_flag_rule", "flag": flag, "rule": rule, "region": region}
    _direct(incident, action, based_on, rationale, exp, idempotency_key, as_json, dry_run)


@direct_app.command("drain-worker-pool")
def direct_drain(
    incident: str,
    pool: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    expect_serving: Annotated[
        bool | None, typer.Option("--expect-serving/--expect-drained", help="Expected first")
    ] = None,
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
    dry_run: DryRun = False,
) -> None:
    exp = None
    if expect_serving is not None:
        exp = {"kind": "worker_pool", "pool": pool, "region": region, "drained": not expect_serving}
    action = {"action": "drain_worker_pool", "pool": pool, "region": region}
    _direct(incident, action, based_on, rationale, exp, idempotency_key, as_json, dry_run)


@direct_app.command("restart-dependency-tier")
def direct_restart(
    incident: str,
    tier: Annotated[str, typer.Option()],
    region: Annotated[str, typer.Option()],
    expect_healthy: Annotated[
        bool | None, typer.Option("--expect-healthy/--expect-unhealthy", help="Expected first")
    ] = None,
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
    dry_run: DryRun = False,
) -> None:
    exp = None
    if expect_healthy is not None:
        exp = {"kind": "tier", "tier": tier, "region": region, "healthy": expect_healthy}
    action = {"action": "restart_dependency_tier", "tier": tier, "region": region}
    _direct(incident, action, based_on, rationale, exp, idempotency_key, as_json, dry_run)


@direct_app.command("update-incident-record")
def direct_note(
    incident: str,
    note: Annotated[str, typer.Option(help="The note to post (redacted on delivery)")],
    based_on: BasedOn = None,
    rationale: Rationale = "",
    idempotency_key: IdemKey = None,
    as_json: JsonOpt = False,
) -> None:
    _direct(
        incident,
        {"action": "update_incident_record", "note": note},
        based_on,
        rationale,
        None,
        idempotency_key,
        as_json,
    )


# --- control verbs --------------------------------------------------------------------


@app.command()
def hold(
    incident: str, detail: Annotated[str, typer.Option()] = "", as_json: JsonOpt = False
) -> None:
    """Stop new side effects for INCIDENT now."""
    _post(f"/v1/incidents/{incident}/hold", {"detail": detail}, as_json, "hold declared")


@app.command()
def resume(
    incident: str, detail: Annotated[str, typer.Option()] = "", as_json: JsonOpt = False
) -> None:
    """Lift the hold (holder of the conn only)."""
    _post(f"/v1/incidents/{incident}/resume", {"detail": detail}, as_json, "resumed")


@app.command()
def handoff(
    incident: str,
    to_team: Annotated[str, typer.Option("--to", help="Team to hand over to")],
    detail: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Request a takeover by a named team."""
    _post(
        f"/v1/incidents/{incident}/handoff",
        {"to_team": to_team, "detail": detail},
        as_json,
        "takeover requested",
    )


@app.command()
def accept(
    incident: str,
    packet: Annotated[
        str,
        typer.Option(
            help="The exact sha256 of the packet you read (`conn packet INC`); required: "
            "nothing is accepted implicitly"
        ),
    ],
    team: Annotated[str | None, typer.Option(help="Default: your team")] = None,
    detail: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Accept the takeover packet explicitly, by its exact hash: the conn moves to you.
    Refused if a newer packet exists or is due (read it, then accept that one)."""
    body: dict[str, Any] = {"detail": detail, "packet_sha256": packet}
    if team:
        body["team"] = team
    _post(f"/v1/incidents/{incident}/takeover", body, as_json, "takeover accepted")


@app.command()
def close(
    incident: str, resolution: Annotated[str, typer.Option()], as_json: JsonOpt = False
) -> None:
    """Close the incident."""
    _post(f"/v1/incidents/{incident}/close", {"resolution": resolution}, as_json, "closed")


@kill_app.command("on")
def kill_on(reason: Annotated[str, typer.Option()], as_json: JsonOpt = False) -> None:
    """Engage the global kill switch."""
    _post("/v1/kill-switch/engage", {"reason": reason}, as_json, "kill switch ENGAGED")


@kill_app.command("off")
def kill_off(reason: Annotated[str, typer.Option()], as_json: JsonOpt = False) -> None:
    """Release the global kill switch."""
    _post("/v1/kill-switch/release", {"reason": reason}, as_json, "kill switch released")


@kill_app.command("status")
def kill_status(as_json: JsonOpt = False) -> None:
    show(Client().request("GET", "/v1/control"), as_json, "kill switch")


# --- reads ----------------------------------------------------------------------------


def _ledger_table(items: list[dict[str, Any]]) -> Table:
    t = Table(title="ledger")
    for col in ("seq", "time", "event", "actor", "correlation", "summary"):
        t.add_column(col)
    for i in items:
        e = i["event"]
        p = e.get("payload", {})
        summary = p.get("reason") or p.get("verdict") or ""
        if isinstance(p.get("action"), dict):
            summary = " ".join(str(v) for v in p["action"].values()) + (
                f" [{summary}]" if summary else ""
            )
        t.add_row(
            str(i["sequence"]),
            e["occurred_at"][11:19],
            e["event_type"],
            e["actor"]["id"],
            (e.get("correlation_id") or "")[:8],
            str(summary)[:60],
        )
    return t


@app.command()
def ledger(
    incident: str,
    after: Annotated[int, typer.Option(help="Entries after this position")] = 0,
    limit: Annotated[int, typer.Option()] = 100,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Filter (repeatable)")
    ] = None,
    correlation: Annotated[str | None, typer.Option(help="Filter by correlation id")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the incident's ledger (paginated)."""
    params: dict[str, Any] = {"after": after, "limit": limit}
    if event_type:
        params["event_type"] = event_type
    if correlation:
        params["correlation_id"] = correlation
    body = Client().request("GET", f"/v1/incidents/{incident}/ledger", params=params)
    if as_json:
        show(body, True)
        return
    out.print(_ledger_table(body["items"]))
    if body.get("next_after"):
        out.print(f"more: --after {body['next_after']}")


@app.command()
def watch(
    incident: str,
    interval: Annotated[float, typer.Option(help="Poll interval, seconds")] = 1.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many polls")] = None,
) -> None:
    """Follow the ledger live (Ctrl-C to stop)."""
    client = Client()
    after = 0
    polls = 0
    try:
        while count is None or polls < count:
            body = client.request(
                "GET", f"/v1/incidents/{incident}/ledger", params={"after": after, "limit": 500}
            )
            if body["items"]:
                out.print(_ledger_table(body["items"]))
                after = body["items"][-1]["sequence"]
            polls += 1
            if body.get("next_after"):
                continue
            if count is None or polls < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def packet(incident: str, as_json: JsonOpt = False) -> None:
    """Show the latest takeover packet (its content too, when the packager has it)."""
    body = Client().request("GET", f"/v1/incidents/{incident}/packet")
    if as_json or not isinstance(body, dict):
        show(body, as_json, "takeover packet")
        return
    skip = {"packet", "markdown", "published_event"}
    show({k: v for k, v in body.items() if k not in skip}, False, "takeover packet")
    if body.get("markdown"):
        out.print(Markdown(str(body["markdown"])))
    elif body.get("packet") is None:
        out.print("(packet content not available from the packager's read model yet)")
    if body.get("current") is False and body.get("takeover_pending"):
        out.print(
            "[bold yellow]not current:[/] the incident changed since this packet; a newer "
            "one is due — read it again before accepting"
        )
    elif body.get("current") is False:
        out.print(
            "[bold]superseded:[/] the incident moved on since this packet (no takeover is "
            "pending now)"
        )
    else:
        out.print(f"accept it with: conn accept {incident} --packet {body['packet_sha256']}")


@app.command("decision-packet")
def decision_packet(incident: str, correlation_id: str, as_json: JsonOpt = False) -> None:
    """Evidence, preconditions, risk, rollback hint and verification for a directive."""
    body = Client().request(
        "GET", f"/v1/incidents/{incident}/directives/{correlation_id}/decision-packet"
    )
    if as_json:
        show(body, True)
        return
    out.print(f"[bold]{body['directive']['summary']}[/] ({body['status']})")
    t = Table(title="preconditions")
    t.add_column("condition")
    t.add_column("status")
    for p in body["preconditions"]:
        t.add_row(p["condition"], p["status"])
    out.print(t)
    out.print(f"rollback: {body['rollback_hint']}")
    show(body["risk"], False, "risk")
    if body.get("verification_criteria"):
        show(body["verification_criteria"], False, "verification criteria")


# --- the two-person rule -----------------------------------------------------------------


@app.command()
def approvals(
    incident: str,
    include_done: Annotated[
        bool, typer.Option("--all", help="Also approved-and-run, declined and cancelled ones")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Directives waiting for approvers (two-person rule), with the decision packet's hash."""
    body = Client().request(
        "GET",
        f"/v1/incidents/{incident}/approvals",
        params={"include_done": "true" if include_done else "false"},
    )
    if as_json:
        show(body, True)
        return
    items = body.get("items", [])
    if not items:
        out.print("no directive is waiting for approval")
        return
    t = Table(title=f"approvals of {incident}")
    for col in (
        "correlation id",
        "step",
        "by",
        "status",
        "approvals",
        "needs",
        "expires",
        "packet",
    ):
        t.add_column(col)
    for i in items:
        p = i["packet"]
        rule = p["rule"]
        who = " / ".join([*rule.get("roles", []), *rule.get("teams", [])]) or "anyone"
        votes = ", ".join(
            f"{v['approver']} {'✓' if v['decision'] == 'approved' else '✗'}" for v in i["votes"]
        )
        t.add_row(
            i["correlation_id"],
            p["summary"],
            p["issued_by"],
            i["status"],
            f"{i['counted']}/{i['required']}" + (f" ({votes})" if votes else ""),
            who,
            p["expires_at"],
            i["packet_sha256"],
        )
    out.print(t)
    for i in items:
        p = i["packet"]
        out.print(f"[bold]{i['correlation_id']}[/bold] {p['summary']} — risk {p['risk']}")
        for line in p["risk_notes"]:
            out.print(f"  risk: {line}")
        for line in p["preconditions"]:
            out.print(f"  precondition: {line}")
        for e in p["evidence"]:
            out.print(
                f"  evidence {e['region']}: error rate {e['error_rate']}, queue "
                f"{e['queue_depth']} (at {e['observed_at']})"
            )
        v = p["verification"]
        out.print(
            f"  verified by: error rate <= {v['max_error_rate']}, queue <= "
            f"{v['max_queue_depth']} ({v['scope']})"
        )
        out.print(f"  undo: {p['undo'] or 'not recorded'}")


PacketOpt = Annotated[
    str,
    typer.Option("--packet", help="The decision packet's sha256 you reviewed (conn approvals)"),
]


@app.command()
def approve(
    incident: str,
    correlation_id: str,
    packet: PacketOpt,
    detail: Annotated[str, typer.Option()] = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve one directive's exact decision packet (never your own directive)."""
    _post(
        f"/v1/incidents/{incident}/approvals/{correlation_id}",
        {"decision": "approve", "packet_sha256": packet, "detail": detail},
        as_json,
        "approval recorded",
    )


@app.command()
def decline(
    incident: str,
    correlation_id: str,
    packet: PacketOpt,
    reason: Annotated[str, typer.Option(help="Why (required)")],
    as_json: JsonOpt = False,
) -> None:
    """Decline a directive waiting for approval: it never runs (any decline blocks)."""
    _post(
        f"/v1/incidents/{incident}/approvals/{correlation_id}",
        {"decision": "decline", "packet_sha256": packet, "detail": reason},
        as_json,
        "approval declined",
    )


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Show who your token authenticates as."""
    show(Client().request("GET", "/v1/me"), as_json, "identity")


@alerts_app.command("alertmanager")
def alerts_alertmanager(
    file: Annotated[
        typer.FileText, typer.Argument(help="Alertmanager webhook JSON ('-' for stdin)")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Post an Alertmanager webhook payload (as an integration identity)."""
    try:
        body = json.loads(file.read())
    except ValueError as exc:
        fail(f"not JSON: {exc}", 2)
    _post("/v1/alerts/alertmanager", body, as_json, "alerts")


def _mount_keys() -> None:
    from conn_cli.keys import keys_app

    app.add_typer(keys_app, name="keys")


_mount_keys()


def _mount_report() -> None:
    from conn_cli.report import report

    app.command("report")(report)


_mount_report()


def _mount_replay() -> None:
    from conn_readmodel.replay import app as replay_app

    app.add_typer(replay_app, name="replay")


_mount_replay()


if __name__ == "__main__":
    app()


# Undo, the inverse actions and the dry-run display live in their own module; importing it
# registers `conn direct undo`, `enable-flag-rule` and `scale-worker-pool`.
import conn_cli.undo  # noqa: E402, F401
