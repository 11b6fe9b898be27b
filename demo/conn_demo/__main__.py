"""`make demo`: start the local stack and play the guided-remediation demo.

Everything runs for real: Kafka (KRaft), PostgreSQL, the simulated checkout
platform on the seed outage, and the four services; the commander session goes
through the `conn` CLI and the directive API.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule

from conn_demo.session import DemoError, load_tokens, run_session
from conn_localstack.config import port, stack_env
from conn_localstack.stack import stack_up
from conn_localstack.trust import dev_trust


def main() -> int:
    console = Console(width=max(110, Console().width))
    console.print(
        Panel.fit(
            "[bold]Conn — guided incident remediation[/bold]\n"
            "Checkout is failing in us-east and eu-west after a bad cache-invalidation sequence\n"
            "and a stale canary flag rule. alice holds the conn and directs one bounded step at a\n"
            "time; Conn executes exactly that, verifies it, and stops with a takeover packet\n"
            "when the next move would be a guess.",
            title="make demo",
        )
    )
    console.print(Rule("[bold]0. Starting the local stack[/bold]", align="left"))
    try:
        asyncio.run(stack_up(echo=lambda line: console.print(f"   {line}", highlight=False)))
    except Exception as exc:  # noqa: BLE001 - one clear line, then the logs to read
        console.print(f"[red]could not start the local stack:[/red] {exc}")
        console.print("see .local/logs/ and `make status`")
        return 1

    sim = f"http://127.0.0.1:{port('CONN_SIMULATOR_PORT')}"
    api = f"http://127.0.0.1:{port('CONN_API_PORT')}"
    httpx.post(
        f"{sim}/sim/reset", json={"scenario": "seed_outage", "seed": 7, "speed": 60}, timeout=10
    ).raise_for_status()
    console.print(f"   simulator reset to the seed outage ({sim}); directive API at {api}")

    tokens = load_tokens()
    incident_id = f"inc-{uuid.uuid4().hex[:6]}"
    page = f"{api}/console/incidents/{incident_id}"
    console.print(
        Panel(
            f"Watch it live in a browser: [bold]{page}[/bold]\n"
            f"Sign in with a demo token (deploy/local/tokens.dev.yaml), e.g. olive, an observer:\n"
            f"  {tokens['olive']}\n"
            f"or dana (database-platform), who takes the conn at the end: {tokens['dana']}\n"
            f"or priya (database platform lead), who approves dana's orders-db restart:\n"
            f"  {tokens['priya']}\n"
            "The page shows every ledger entry as it lands; the incident list is at "
            f"{api}/console/",
            title="the bridge console",
        )
    )
    if sys.stdin.isatty() and not os.environ.get("CONN_DEMO_NO_WAIT"):
        console.input("   Open the page now if you like, then press [bold]Enter[/bold] to start ")

    try:
        result = run_session(api, console=console, tokens=tokens, incident_id=incident_id)
    except DemoError as exc:
        console.print(f"\n[red bold]The demo stopped:[/red bold] {exc}")
        console.print("Logs: .local/logs/   Stack: `make status`   Stop: `make down`")
        return 1

    incident = result.incident_id
    console.print(Rule("[bold]14. The takeover packet, as dana reads it[/bold]", align="left"))
    _cli(console, "dana", "packet", incident)
    console.print(
        Rule(
            "[bold]15. The two-person rule in the ledger: priya's approval, then the step[/bold]",
            align="left",
        )
    )
    _cli(console, "priya", "approvals", incident, "--all")
    console.print(
        Rule("[bold]16. The post-incident timeline (from the topic alone)[/bold]", align="left")
    )
    _cli(console, "alice", "replay", "--export-timeline", incident, "--format", "md", "-q")

    console.print(
        Panel(
            f"The incident is [bold]{incident}[/bold]; dana (database-platform) now holds the conn.\n"
            f"The bridge console: {page}\n\n"
            "Continue by hand with the CLI:\n"
            f"  export CONN_API_URL={api}\n"
            f"  export CONN_TOKEN={tokens['dana']}   # dana; alice's is in deploy/local/tokens.dev.yaml\n"
            f"  .venv/bin/conn incident show {incident}\n"
            f"  .venv/bin/conn watch {incident}\n"
            f"  .venv/bin/conn direct gather-state {incident}\n"
            f"  .venv/bin/conn approvals {incident}   # steps waiting for a second person\n"
            "  set -a; . .local/trust/env/sre.env; set +a   # read the log as the SRE principal\n"
            "  .venv/bin/conn replay            # verify signatures and the chain, rebuild the read model\n"
            "  .venv/bin/conn report --format markdown   # the fleet SLIs (README, Fleet SLIs)\n\n"
            "Stop the stack: make down    (data stays in .local/; `make clean` deletes it)",
            title="what next",
        )
    )
    console.print(
        Rule(
            "[bold]17. The fleet report: is Conn doing its job? (all incidents)[/bold]",
            align="left",
        )
    )
    _cli(console, "olive", "report")
    return 0


def _cli(console: Console, who: str, *args: str) -> None:
    # stack_env(): KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL of this stack's ports (`conn replay`
    # needs them when CONN_*_PORT are not the defaults); the caller's environment wins.
    # `conn replay` reads the log itself: as the local stack's read-only SRE principal,
    # verifying every record against the dev keyring.
    env = {
        **stack_env(),
        **os.environ,
        **dev_trust().service_env("sre"),
        "CONN_TOKEN": load_tokens()[who],
        "COLUMNS": str(console.width),
    }
    env.setdefault("CONN_API_URL", f"http://127.0.0.1:{port('CONN_API_PORT')}")
    console.print(f"[bold cyan]{who}$[/bold cyan] conn {' '.join(args)}")
    proc = subprocess.run(
        [sys.executable, "-m", "conn_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    console.print(
        (proc.stdout + proc.stderr).rstrip(), markup=False, highlight=False, soft_wrap=True
    )


if __name__ == "__main__":
    sys.exit(main())
