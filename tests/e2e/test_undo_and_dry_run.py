"""Issue 19, items 3 and 4, through the whole stack (simulator, executor, verifier,
packager, directive API on a real broker and PostgreSQL):

- a dry run is decided like a directive (authentication, role, authority: refused the
  same way), asks the target for the exact change, appends nothing to the ledger and
  changes nothing: the simulator's side-effect counter and the ledger are the oracles;
- the executor records each step's inverse in StepStarted before acting; `undo` issues
  it as a directive of its own, which restores the recorded state on the target and is
  verified by the verifier like any other step; a restart is refused as irreversible.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from conn_cli.main import app as conn_cli
from conn_localstack.ephemeral import ROOT

pytestmark = pytest.mark.integration

TOKENS = yaml.safe_load((ROOT / "deploy" / "local" / "tokens.dev.yaml").read_text())

# The checkout boundary with lenient health criteria: this test is about the control
# plane (the undo's effect on the target and its verification), not about recovery.
RUNBOOK = """
name: undo-test
version: "1"
holder: {identity: alice, team: incident-command}
regions: [us-east, eu-west]
allowed:
  - action: gather_state
  - action: verify
  - action: disable_flag_rule
    targets: [checkout-pricing/canary-10pct]
  - action: enable_flag_rule
    targets: [checkout-pricing/canary-10pct]
  - action: drain_worker_pool
    targets: [cache-invalidation]
  - action: scale_worker_pool
    targets: [cache-invalidation]
  - action: restart_dependency_tier
    targets: [pricing-cache, orders-db]
reservations:
  - {action: restart_dependency_tier, target: orders-db, team: database-platform}
default_verification:
  settle_seconds: 1
  window_seconds: 1
  samples: 2
  max_error_rate: 1.0
  max_queue_depth: 100000
  max_reading_age_seconds: 15
  scope: step_regions
takeover_teams: [database-platform]
"""

SIM_AUTH = {"Authorization": "Bearer sim-admin-token"}


def request(api: str, who: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
    return httpx.request(method, api + path, json=body, headers=headers, timeout=30)


def call(api: str, who: str, method: str, path: str, body: Any = None) -> Any:
    r = request(api, who, method, path, body)
    assert r.status_code < 300, r.text
    return r.json()


def ledger(api: str, incident: str) -> list[dict[str, Any]]:
    return [
        e["event"]
        for e in call(api, "olive", "GET", f"/v1/incidents/{incident}/ledger?limit=1000")["items"]
    ]


def snapshot_of(api: str, incident: str, cid: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        events = ledger(api, incident)
        for e in events:
            if (
                e["event_type"] == "VerificationSnapshot"
                and e["payload"]["step_correlation_id"] == cid
            ):
                return e
        assert time.monotonic() < deadline, (
            f"no verification of {cid}: {[e['event_type'] for e in events]}"
        )
        time.sleep(0.3)


def sequence(api: str, incident: str) -> int:
    return int(call(api, "olive", "GET", f"/v1/incidents/{incident}")["sequence"])


def pool(sim: str, name: str, region: str) -> tuple[int, int]:
    d = httpx.get(
        f"{sim}/apis/apps/v1/namespaces/{region}/deployments/{name}", headers=SIM_AUTH, timeout=10
    ).json()
    return int(d["spec"]["replicas"]), int(d["status"]["readyReplicas"])


def rule_enabled(sim: str) -> bool:
    f = httpx.get(
        f"{sim}/api/admin/projects/default/features/checkout-pricing", headers=SIM_AUTH, timeout=10
    ).json()
    (env,) = [e for e in f["environments"] if e["name"] == "eu-west"]
    (s,) = [s for s in env["strategies"] if (s.get("title") or s["name"]) == "canary-10pct"]
    return not s.get("disabled", False)


def cli(api: str, who: str, *args: str) -> Any:
    """`conn ...` as `who` (the same commands a commander types)."""
    return CliRunner().invoke(
        conn_cli,
        list(args),
        env={"CONN_API_URL": api, "CONN_TOKEN": TOKENS[who], "COLUMNS": "250"},
    )


def test_dry_run_touches_nothing_and_undo_restores_and_is_verified(pipeline: Any) -> None:
    p = pipeline("seed_outage")
    api, sim = p.api.url, p.simulator.url
    inc = call(api, "alice", "POST", "/v1/incidents", {"title": "t", "service": "checkout"})[
        "incident_id"
    ]
    call(api, "alice", "POST", f"/v1/incidents/{inc}/authority", {"content": RUNBOOK})
    disable = {
        "action": "disable_flag_rule",
        "flag": "checkout-pricing",
        "rule": "canary-10pct",
        "region": "eu-west",
    }
    drain = {"action": "drain_worker_pool", "pool": "cache-invalidation", "region": "us-east"}
    restart = {"action": "restart_dependency_tier", "tier": "pricing-cache", "region": "us-east"}
    orders = {"action": "restart_dependency_tier", "tier": "orders-db", "region": "eu-west"}

    # --- dry run: the exact change, nothing recorded, nothing changed -----------------
    before_log, before_effects = ledger(api, inc), p.side_effects()
    dry = f"/v1/incidents/{inc}/directives/dry-run"
    seq = sequence(api, inc)
    flag = call(api, "alice", "POST", dry, {"action": disable, "based_on_sequence": seq})
    assert flag["dry_run"] and flag["recorded"] is False
    assert flag["preview"]["method"] == "computed_diff" and flag["preview"]["would_change"]
    assert flag["preview"]["changes"] == [{"path": "/disabled", "before": False, "after": True}]
    rollout = call(api, "alice", "POST", dry, {"action": restart, "based_on_sequence": seq})
    assert rollout["preview"]["method"] == "server_dry_run" and rollout["preview"]["would_change"]
    scale = call(api, "alice", "POST", dry, {"action": drain, "based_on_sequence": seq})
    assert {"path": "spec.replicas", "before": 6, "after": 0} in scale["preview"]["changes"]
    # ...refused exactly as the directive would be, and not recorded either:
    r = request(api, "alice", "POST", dry, {"action": orders, "based_on_sequence": seq})
    assert r.status_code == 403 and r.json()["error"]["code"] == "reserved_to_team", r.text
    r = request(api, "olive", "POST", dry, {"action": drain, "based_on_sequence": seq})
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_may_not_direct", r.text
    r = request(api, None, "POST", dry, {"action": drain, "based_on_sequence": seq})
    assert r.status_code == 401
    r = request(api, "alice", "POST", dry, {"action": {"action": "drain_worker_pool"}})
    assert r.status_code == 422
    # ...and from the command line (`conn direct ... --dry-run`):
    out = cli(
        api, "alice", "direct", "drain-worker-pool", inc, "--pool", "cache-invalidation",
        "--region", "us-east", "--dry-run", "--json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["recorded"] is False and shown["preview"]["method"] == "server_dry_run"
    assert {"path": "spec.replicas", "before": 6, "after": 0} in shown["preview"]["changes"]
    assert p.side_effects() == before_effects, "a dry run caused a side effect"
    assert ledger(api, inc) == before_log, "a dry run wrote to the ledger"
    assert pool(sim, "cache-invalidation", "us-east") == (6, 6)
    assert rule_enabled(sim) is True

    # --- the undo is recorded before acting -------------------------------------------
    issued = call(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives",
        {"action": drain, "based_on_sequence": sequence(api, inc)},
    )
    cid = issued["correlation_id"]
    snap = snapshot_of(api, inc, cid)
    assert snap["payload"]["verdict"] == "recovered", snap["payload"]["detail"]
    assert pool(sim, "cache-invalidation", "us-east") == (0, 0)
    events = ledger(api, inc)
    (started,) = [
        e for e in events if e["event_type"] == "StepStarted" and e["correlation_id"] == cid
    ]
    undo = started["payload"]["undo"]
    assert undo["reversible"] and undo["previous_replicas"] == 6
    assert undo["inverse"] == {
        "action": "scale_worker_pool",
        "pool": "cache-invalidation",
        "region": "us-east",
        "replicas": 6,
    }
    side_effect_at = events.index(started)
    assert all(e["event_type"] != "StepSucceeded" for e in events[:side_effect_at])

    # --- undo: a directive of its own, restoring the recorded state, verified -----------
    undone = call(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives/{cid}/undo",
        {"based_on_sequence": sequence(api, inc)},
    )
    assert undone["status"] == "issued" and undone["undoes"] == cid
    assert undone["action"]["action"] == "scale_worker_pool"
    ucid = undone["correlation_id"]
    assert ucid != cid
    usnap = snapshot_of(api, inc, ucid)
    (check,) = usnap["payload"]["control_plane"]
    assert check["matches"], check
    assert usnap["payload"]["verdict"] == "recovered", usnap["payload"]["detail"]
    assert pool(sim, "cache-invalidation", "us-east") == (6, 6)
    assert p.side_effects().get(cid) == 1 and p.side_effects().get(ucid) == 1
    issued_undo = [
        e
        for e in ledger(api, inc)
        if e["event_type"] == "DirectiveIssued" and e["correlation_id"] == ucid
    ]
    assert issued_undo and issued_undo[0]["actor"]["id"] == "alice"
    assert f"undo of step {cid}" in issued_undo[0]["payload"]["rationale"]

    # --- what cannot be undone is refused clearly ---------------------------------------
    r = request(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives/{cid}/undo",
        {"based_on_sequence": sequence(api, inc)},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_undone", r.text
    # --- the same for a flag rule: disabled, then enabled again by its undo ------------
    fcid = call(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives",
        {"action": disable, "based_on_sequence": sequence(api, inc)},
    )["correlation_id"]
    assert snapshot_of(api, inc, fcid)["payload"]["verdict"] == "recovered"
    assert rule_enabled(sim) is False
    out = cli(api, "alice", "direct", "undo", inc, fcid, "--json")  # `conn direct undo`
    assert out.exit_code == 0, out.output
    fundo = json.loads(out.output)
    assert fundo["action"] == {**disable, "action": "enable_flag_rule"}
    fsnap = snapshot_of(api, inc, fundo["correlation_id"])
    (fcheck,) = fsnap["payload"]["control_plane"]
    assert fcheck["matches"] and fcheck["observed"] == "enabled", fcheck
    assert fsnap["payload"]["verdict"] == "recovered", fsnap["payload"]["detail"]
    assert rule_enabled(sim) is True

    r = request(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives/no-such-step/undo",
        {"based_on_sequence": sequence(api, inc)},
    )
    assert r.status_code == 404
    rcid = call(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives",
        {"action": restart, "based_on_sequence": sequence(api, inc)},
    )["correlation_id"]
    snapshot_of(api, inc, rcid)
    r = request(
        api,
        "alice",
        "POST",
        f"/v1/incidents/{inc}/directives/{rcid}/undo",
        {"based_on_sequence": sequence(api, inc)},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "irreversible", r.text
    out = cli(api, "alice", "direct", "undo", inc, rcid)
    assert out.exit_code == 1 and "409 irreversible" in out.output, out.output
    detail = call(api, "olive", "GET", f"/v1/incidents/{inc}/directives/{rcid}")["undo"]
    assert detail["reversible"] is False and detail["previous_generation"] == 0
