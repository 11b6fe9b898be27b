"""The guided-remediation session of the demo, played through the real CLI and API.

A commander (alice) works the seed outage of the simulated checkout platform one
bounded step at a time; Conn executes, verifies and finally stops with a takeover
packet that a database-platform engineer (dana) accepts; dana's orders-db restart
then needs a second person (the two-person rule): priya, the database platform
lead, approves its exact decision packet. Every command is a real `conn` CLI
invocation against the directive API; the session waits for the
services' events to land in the ledger and prints them as they arrive.

`run_session` is used both by `make demo` (printed) and by the end-to-end test
(headless, asserting on the returned ledger).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.rule import Rule

ROOT = Path(__file__).resolve().parents[2]
DEV_TOKENS = ROOT / "deploy" / "local" / "tokens.dev.yaml"


class DemoError(RuntimeError):
    """The session could not continue; the message says what was expected."""


@dataclass
class SessionResult:
    incident_id: str
    ledger: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    packet: dict[str, Any] | None = None
    decision_packet: dict[str, Any] | None = None
    """The pending approval priya approved (with its decision packet and hash)."""

    def events(self) -> list[dict[str, Any]]:
        return [entry["event"] for entry in self.ledger]

    def types(self) -> list[str]:
        return [e["event_type"] for e in self.events()]


def load_tokens(path: Path = DEV_TOKENS) -> dict[str, str]:
    data = yaml.safe_load(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


class Bridge:
    """The commander's console: runs `conn` as a given person, follows the ledger."""

    def __init__(
        self, api_url: str, tokens: dict[str, str], console: Console, *, timeout: float = 90.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.tokens = tokens
        self.console = console
        self.timeout = timeout
        self.seen = 0
        self.http = httpx.Client(base_url=self.api_url, timeout=10)

    # -- running the CLI ---------------------------------------------------------------

    def conn(
        self, who: str, *args: str, expect_ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        shown = "conn " + " ".join(shlex.quote(a) for a in args)
        self.console.print(f"[bold cyan]{who}$[/bold cyan] {shown}")
        env = {
            **os.environ,
            "CONN_API_URL": self.api_url,
            "CONN_TOKEN": self.tokens[who],
            "COLUMNS": str(max(110, self.console.width)),
            "NO_COLOR": "1",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "conn_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            self.console.print(out, markup=False, highlight=False, soft_wrap=True)
        if expect_ok and proc.returncode != 0:
            raise DemoError(f"`{shown}` failed with exit code {proc.returncode}")
        if not expect_ok and proc.returncode == 0:
            raise DemoError(f"`{shown}` was expected to be refused, but succeeded")
        return proc

    # -- reading the ledger ------------------------------------------------------------

    def _get(self, who: str, path: str, **params: Any) -> Any:
        resp = self.http.get(
            path, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )
        if resp.status_code >= 400:
            raise DemoError(f"GET {path} -> {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def ledger(self, incident: str, after: int = 0) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._get("alice", f"/v1/incidents/{incident}/ledger", after=after, limit=1000)
            items.extend(page["items"])
            if page.get("next_after") is None:
                return items
            after = page["next_after"]

    def head(self, incident: str) -> int:
        entries = self.ledger(incident)
        return int(entries[-1]["sequence"]) if entries else 0

    def follow(
        self,
        incident: str,
        until: Callable[[dict[str, Any]], bool],
        what: str,
    ) -> dict[str, Any]:
        """Print ledger entries as they land until one satisfies `until`."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for entry in self.ledger(incident, after=self.seen):
                self.seen = int(entry["sequence"])
                self.console.print("   " + describe(entry), highlight=False)
                if until(entry["event"]):
                    return entry
            time.sleep(0.25)
        raise DemoError(f"timed out after {self.timeout:.0f}s waiting for {what}")

    def issued(self, incident: str) -> str:
        """The correlation id of the directive just issued (read back from the ledger)."""
        entry = self.follow(incident, _is("DirectiveIssued"), "the directive to be issued")
        return str(entry["event"]["correlation_id"])

    def packet(self, incident: str, who: str = "dana") -> dict[str, Any]:
        return dict(self._get(who, f"/v1/incidents/{incident}/packet"))

    def approvals(self, incident: str, who: str) -> list[dict[str, Any]]:
        return list(self._get(who, f"/v1/incidents/{incident}/approvals")["items"])


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def describe(entry: dict[str, Any]) -> str:
    """One readable line per ledger entry."""
    e = entry["event"]
    p = e.get("payload", {})
    kind = e["event_type"]
    text = kind
    if kind in ("DirectiveIssued", "DirectiveAccepted", "StepStarted", "StepSucceeded"):
        action = p.get("action", {})
        target = " ".join(
            str(action[k]) for k in ("flag", "rule", "pool", "tier", "region") if k in action
        )
        text = f"{kind:<22} {action.get('action', '')} {target}".rstrip()
    elif kind == "DirectiveRefused":
        text = f"{kind:<22} [red]{p['reason']}[/red]: {p['detail']}"
    elif kind == "VerificationSnapshot":
        regions = ", ".join(
            f"{r['region']} err={_num(r['readings'][-1]['error_rate'], '.3f')} "
            f"queue={_num(r['readings'][-1]['queue_depth'], '.0f')}"
            for r in p["regions"]
            if r["readings"]
        )
        text = f"{kind:<22} [bold]{p['verdict']}[/bold] ({regions})"
    elif kind == "StepOutcomeUnknown":
        text = f"{kind:<22} [yellow]outcome unknown[/yellow]: {p['reason']}"
    elif kind == "StepFailed":
        started = "never started: " if p.get("not_started") else ""
        text = f"{kind:<22} [red]{started}{p['error']}[/red]"
    elif kind in ("AuthorityDeclared", "AuthorityChangeProposed"):
        a = p["authority"]
        text = f"{kind:<22} {a['name']}@{a['version']} sha256 {p['content_sha256'][:12]}…"
    elif kind == "StateGathered":
        obs = p["observation"]
        text = (
            f"{kind:<22} {p['purpose']}: {len(obs['flags'])} flag rules, {len(obs['pools'])} pools,"
            f" {len(obs['tiers'])} tiers, {len(obs['metrics'])} regions"
        )
    elif kind == "TakeoverPacketPublished":
        text = f"{kind:<22} sha256 {p['packet_sha256'][:12]}… to {p['to_team'] or '(any team)'} ({p['trigger']})"
    elif kind in ("ApprovalRecorded", "ApprovalDeclined"):
        text = f"{kind:<22} decision packet {p['packet_sha256'][:12]}… for {e['correlation_id']}"
    elif kind in ("HoldDeclared", "TakeoverRequested", "TakeoverAccepted", "ResumeDirected"):
        text = f"{kind:<22} {p}"
    return f"[dim]#{entry['sequence']:<3}[/dim] {text} [dim]by {e['actor']['id']}[/dim]"


def _is(kind: str, correlation: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(event: dict[str, Any]) -> bool:
        return event["event_type"] == kind and (
            correlation is None or event.get("correlation_id") == correlation
        )

    return check


def run_session(
    api_url: str,
    *,
    console: Console | None = None,
    tokens: dict[str, str] | None = None,
    incident_id: str | None = None,
    timeout: float = 90.0,
    before_approval: Callable[[str], None] | None = None,
) -> SessionResult:
    """Play the seed-outage session. Raises DemoError if Conn does not behave as
    the scenario requires (the end-to-end test relies on that).

    `before_approval(correlation_id)` is called while dana's orders-db restart waits
    for its approver, right before priya approves it (the README's picture of the
    console is taken then); the session goes on when it returns."""
    console = console or Console()
    tokens = tokens or load_tokens()
    incident = incident_id or f"inc-{uuid.uuid4().hex[:6]}"
    bridge = Bridge(api_url, tokens, console, timeout=timeout)
    result = SessionResult(incident_id=incident)

    def step(title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{title}[/bold]", align="left"))

    step("1. The bridge opens an incident and declares its authority")
    bridge.conn(
        "alice",
        "incident",
        "open",
        "--id",
        incident,
        "--service",
        "checkout",
        "--severity",
        "sev1",
        "--title",
        "Checkout failing in us-east and eu-west",
    )
    bridge.conn("alice", "authority", "declare", incident, "--runbook", "checkout-authority")
    bridge.follow(incident, _is("AuthorityDeclared"), "the authority to be declared")

    step("2. Gather state (read-only)")
    bridge.conn("alice", "direct", "gather-state", incident, "--rationale", "what do we have?")
    gathered = bridge.issued(incident)
    bridge.follow(incident, _is("StateGathered", gathered), "the gathered state")

    step("3. Disable the canary rule in eu-west (expecting it enabled)")
    bridge.conn(
        "alice",
        "direct",
        "disable-flag-rule",
        incident,
        "--flag",
        "checkout-pricing",
        "--rule",
        "canary-10pct",
        "--region",
        "eu-west",
        "--expect-enabled",
        "--rationale",
        "stale canary routes eu-west to a dead pricing path",
    )
    disable = bridge.issued(incident)
    bridge.follow(incident, _is("VerificationSnapshot", disable), "verification of the flag step")

    step("4. Verify explicitly before the next step")
    bridge.conn("alice", "direct", "verify", incident)
    verify = bridge.issued(incident)
    bridge.follow(incident, _is("VerificationSnapshot", verify), "the explicit verification")

    step("5. Drain the cache-invalidation worker pool in us-east")
    bridge.conn(
        "alice",
        "direct",
        "drain-worker-pool",
        incident,
        "--pool",
        "cache-invalidation",
        "--region",
        "us-east",
        "--expect-serving",
        "--rationale",
        "invalidation storm floods pricing-cache",
    )
    drain = bridge.issued(incident)
    bridge.follow(incident, _is("VerificationSnapshot", drain), "verification of the drain")
    stale_base = bridge.head(incident) - 3

    step("6. Conn refuses what crosses the authority boundary")
    console.print("[dim]orders-db restarts are reserved to the database-platform team[/dim]")
    bridge.conn(
        "alice",
        "direct",
        "restart-dependency-tier",
        incident,
        "--tier",
        "orders-db",
        "--region",
        "eu-west",
        expect_ok=False,
    )
    bridge.follow(incident, _is("DirectiveRefused"), "the refusal to be recorded")

    step("7. ...and what is based on a stale picture")
    console.print(f"[dim]based on ledger position {stale_base}, before the last verification[/dim]")
    bridge.conn(
        "alice",
        "direct",
        "restart-dependency-tier",
        incident,
        "--tier",
        "pricing-cache",
        "--region",
        "us-east",
        "--based-on",
        str(stale_base),
        expect_ok=False,
    )
    bridge.follow(incident, _is("DirectiveRefused"), "the refusal to be recorded")

    step("8. Restart the pricing-cache tier in us-east")
    bridge.conn(
        "alice",
        "direct",
        "restart-dependency-tier",
        incident,
        "--tier",
        "pricing-cache",
        "--region",
        "us-east",
        "--expect-unhealthy",
        "--rationale",
        "pricing-cache serves stale entries",
    )
    restart = bridge.issued(incident)
    bridge.follow(incident, _is("VerificationSnapshot", restart), "verification of the restart")
    bridge.follow(incident, _is("TakeoverPacketPublished"), "the takeover packet for the hold")

    step("9. Mixed state: Conn holds. The commander hands over to database-platform")
    bridge.conn(
        "alice",
        "handoff",
        incident,
        "--to",
        "database-platform",
        "--detail",
        "eu-west still failing on orders-db",
    )
    bridge.follow(
        incident,
        lambda e: (
            e["event_type"] == "TakeoverPacketPublished" and e["payload"]["trigger"] == "handoff"
        ),
        "the handoff packet",
    )

    step("10. dana (database-platform) reads the packet and accepts the conn explicitly")
    packet = bridge.packet(incident)
    result.packet = packet
    sha = str(packet["packet_sha256"])
    console.print(f"[dim]accepting packet {sha} ({packet.get('trigger')} packet)[/dim]")
    bridge.conn("dana", "accept", incident, "--packet", sha)
    bridge.follow(incident, _is("TakeoverAccepted"), "the acceptance")

    step("11. dana directs the orders-db restart in eu-west: it needs a second person")
    console.print(
        "[dim]the runbook's two-person rule: orders-db restarts need an approver of the "
        "database-platform team who did not issue them[/dim]"
    )
    bridge.conn(
        "dana",
        "direct",
        "restart-dependency-tier",
        incident,
        "--tier",
        "orders-db",
        "--region",
        "eu-west",
        "--rationale",
        "replica lag in eu-west: restart the orders-db tier",
    )
    restart_db = bridge.issued(incident)
    console.print("[dim]recorded and waiting: nothing runs until it is approved[/dim]")

    step("12. priya, the database platform lead, reads the decision packet and approves it")
    bridge.conn("priya", "approvals", incident)
    pending = bridge.approvals(incident, "priya")
    waiting = next((a for a in pending if a["correlation_id"] == restart_db), None)
    if waiting is None:
        raise DemoError(f"directive {restart_db} is not waiting for approval")
    result.decision_packet = waiting
    if before_approval is not None:
        before_approval(restart_db)
    bridge.conn(
        "priya",
        "approve",
        incident,
        restart_db,
        "--packet",
        str(waiting["packet_sha256"]),
        "--detail",
        "replication healthy on the standby; go",
    )
    bridge.follow(incident, _is("ApprovalRecorded", restart_db), "the approval")
    bridge.follow(incident, _is("StepStarted", restart_db), "the approved step to run")
    verified = bridge.follow(
        incident, _is("VerificationSnapshot", restart_db), "verification of the orders-db restart"
    )
    if verified["event"]["payload"]["verdict"] != "recovered":
        # replica lag is outside Conn's reach: the fold holds again, with a packet
        bridge.follow(incident, _is("TakeoverPacketPublished"), "the takeover packet for the hold")

    step("13. The ledger")
    bridge.conn("alice", "ledger", incident, "--limit", "200")
    result.ledger = bridge.ledger(incident)
    result.refusals = [
        e["payload"] for e in result.events() if e["event_type"] == "DirectiveRefused"
    ]
    return result


if __name__ == "__main__":  # pragma: no cover - manual use
    run_session(os.environ.get("CONN_API_URL", "http://127.0.0.1:18000"))
