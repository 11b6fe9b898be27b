"""Views of the fold: the bridge state (conn_core.bridge), directives and decision
packets (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conn_api.responses import (
    AuthorityView,
    DirectiveView,
    HealthReading,
    IncidentView,
    KillSwitchView,
)
from conn_api.view import LedgerEntry
from conn_core.bridge import authority_in_force, bridge_state, bridge_summary
from conn_core.state import ControlState, DirectiveRecord, DirectiveStatus, IncidentState
from conn_schemas.bridge import BridgeSummary
from conn_schemas.events import StateGathered, StepOutcomeUnknown, VerificationSnapshot
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    DisableFlagRule,
    DrainWorkerPool,
    GatherState,
    RestartDependencyTier,
    UpdateIncidentRecord,
    Verify,
    action_regions,
    action_target,
    describe_action,
    describe_expectation,
)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def directive_json(d: DirectiveRecord) -> dict[str, Any]:
    return {
        "correlation_id": d.correlation_id,
        "action": d.action.model_dump(mode="json"),
        "summary": describe_action(d.action),
        "actor": d.actor_id,
        "issued_sequence": d.issued_sequence,
        "based_on_sequence": d.based_on_sequence,
        "consequential": d.consequential,
        "expectation": d.expectation.model_dump(mode="json") if d.expectation else None,
        "status": d.status.value,
        "refusal": d.refusal.value if d.refusal else None,
        "refusal_detail": d.refusal_detail,
        "verdict": d.verdict.value if d.verdict else None,
        "started_at": _iso(d.started_at),
        "finished_at": _iso(d.finished_at),
        "not_started": d.not_started,
        "undo": d.undo.model_dump(mode="json") if d.undo else None,
    }


def authority_json(s: IncidentState) -> dict[str, Any] | None:
    """The authority in force (the bridge's AuthorityInForce: name, version, content
    hash, holder) with its file, regions and the changes proposed to it that wait for
    (or got) a second person's approval."""
    in_force = authority_in_force(s)
    if s.authority is None or in_force is None:
        return None
    return {
        **in_force.model_dump(mode="json"),
        "source_file": s.authority_source,
        "regions": list(s.authority.regions),
        "proposals": [
            {
                "proposal_id": p.proposal_id,
                "name": p.authority.name,
                "version": p.authority.version,
                "sha256": p.content_sha256,
                "source_file": p.source_file,
                "proposed_by": p.proposer,
                "proposed_sequence": p.proposed_sequence,
                "widenings": list(p.widenings),
                "approved_by": p.approved_by,
                "applied": p.applied,
                "current": p.base_sha256 == s.authority_sha256,
            }
            for p in s.authority_proposals.values()
        ],
        "ignored_records": s.ignored_authority,
    }


def summary_view(s: IncidentState) -> BridgeSummary:
    """One line of the incident list: the contract's BridgeSummary."""
    return bridge_summary(s)


def incident_view(
    s: IncidentState, control: ControlState, head: LedgerEntry | None, now: datetime | None = None
) -> IncidentView:
    """The bridge state (conn_core.bridge, the contract's BridgeState) plus what only the
    API shows: the kill switch, health with ages relative to now, every directive."""
    now = now or datetime.now(UTC)
    bridge = bridge_state(s, head.hash if head is not None else None)
    authority = authority_json(s)
    return IncidentView(
        **{
            **dict(bridge),
            "authority": AuthorityView.model_validate(authority) if authority else None,
        },
        kill_switch=KillSwitchView(engaged=control.kill_switch, reason=control.reason),
        health={
            region: HealthReading(
                error_rate=r.error_rate,
                queue_depth=r.queue_depth,
                request_rate=r.request_rate,
                observed_at=_iso(r.observed_at),
                age_seconds=round(r.age_seconds(now), 3),
            )
            for region, r in sorted(s.last_readings.items())
        },
        consequential_steps=s.consequential_steps,
        drained_pools={k: sorted(v) for k, v in s.drained_pools.items()},
        unverified_changes=[
            DirectiveView.model_validate(directive_json(d)) for d in s.unverified_changes()
        ],
        refusals={k.value: v for k, v in s.refusals.items()},
        directives=[DirectiveView.model_validate(directive_json(d)) for d in s.directives.values()],
    )


def rollback_hint(record: DirectiveRecord) -> str:
    a = record.action
    if isinstance(a, DisableFlagRule):
        return (
            f"re-enable rule {a.rule} of flag {a.flag} in {a.region} (a new directive; "
            "only if verification shows the rule was not the cause)"
        )
    if isinstance(a, DrainWorkerPool):
        return f"scale pool {a.pool} in {a.region} back to its previous replica count"
    if isinstance(a, RestartDependencyTier):
        return (
            f"a restart of {a.tier} in {a.region} cannot be undone; if it fails, hold and hand "
            "over to the owning team"
        )
    if isinstance(a, UpdateIncidentRecord):
        return "post a correcting note (record entries are never edited)"
    return "read-only: nothing to roll back"


def _preconditions(
    s: IncidentState, record: DirectiveRecord, gathered: LedgerEntry | None
) -> list[dict[str, Any]]:
    obs = None
    if gathered is not None and isinstance(gathered.event, StateGathered | StepOutcomeUnknown):
        obs = gathered.event.payload.observation
    out: list[dict[str, Any]] = []

    def add(text: str, met: bool | None) -> None:
        status = "unknown" if met is None else ("met" if met else "not_met")
        out.append({"condition": text, "status": status})

    if record.expectation is not None:
        out.append(
            {
                "condition": "commander expects: " + describe_expectation(record.expectation),
                "status": "checked by the executor before acting",
            }
        )
    a = record.action
    if isinstance(a, DisableFlagRule):
        found = [
            f
            for f in (obs.flags if obs else ())
            if (f.flag, f.rule, f.region) == (a.flag, a.rule, a.region)
        ]
        add(
            f"rule {a.rule} of {a.flag} is enabled in {a.region}",
            found[0].enabled if found else None,
        )
    elif isinstance(a, DrainWorkerPool):
        pools = [p for p in (obs.pools if obs else ()) if (p.pool, p.region) == (a.pool, a.region)]
        add(
            f"pool {a.pool} in {a.region} is fully serving (desired = ready > 0)",
            (pools[0].desired_replicas > 0 and pools[0].ready_replicas == pools[0].desired_replicas)
            if pools
            else None,
        )
    elif isinstance(a, RestartDependencyTier):
        tiers = [t for t in (obs.tiers if obs else ()) if (t.tier, t.region) == (a.tier, a.region)]
        add(
            f"tier {a.tier} in {a.region} is not already restarting",
            (not tiers[0].restarting) if tiers else None,
        )
    if record.consequential:
        add(
            "the previous consequential step is verified",
            s.open_step in (None, record.correlation_id),
        )
    add("the incident is not on hold", s.hold is None)
    return out


def decision_packet(
    s: IncidentState,
    record: DirectiveRecord,
    ledger: list[LedgerEntry],
    control: ControlState,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    gathered = next(
        (e for e in reversed(ledger) if isinstance(e.event, StateGathered | StepOutcomeUnknown)),
        None,
    )
    snapshot = next(
        (e for e in reversed(ledger) if isinstance(e.event, VerificationSnapshot)), None
    )
    authority = s.authority
    a = record.action
    target = action_target(a)
    regions = action_regions(a)
    risk: dict[str, Any] = {
        "consequential": a.action in CONSEQUENTIAL_ACTIONS,
        "read_only": isinstance(a, GatherState | Verify),
        "target": target,
        "regions": list(regions),
    }
    verification: dict[str, Any] | None = None
    if authority is not None:
        limits = authority.blast_radius
        risk["authority"] = f"{authority.name}@{authority.version}"
        risk["blast_radius"] = {
            "limits": limits.model_dump(mode="json"),
            "consequential_steps_taken": s.consequential_steps,
            "drained_pools": {k: sorted(v) for k, v in s.drained_pools.items()},
            "restarts": {f"{t}/{r}": n for (t, r), n in s.restarts.items()},
        }
        risk["reservations"] = [
            r.model_dump(mode="json")
            for r in authority.reservations
            if r.action == a.action and r.target == target
        ]
        verification = authority.criteria_for(a.action).model_dump(mode="json")
    evidence: dict[str, Any] = {"last_gathered": None, "last_verification": None, "health": {}}
    if gathered is not None:
        evidence["last_gathered"] = {
            "sequence": gathered.sequence,
            "occurred_at": _iso(gathered.event.occurred_at),
            "age_seconds": round((now - gathered.event.occurred_at).total_seconds(), 3),
            "observation": gathered.event.payload.observation.model_dump(mode="json"),  # type: ignore[attr-defined]
        }
    if snapshot is not None and isinstance(snapshot.event, VerificationSnapshot):
        evidence["last_verification"] = {
            "sequence": snapshot.sequence,
            "verdict": snapshot.event.payload.verdict.value,
            "detail": snapshot.event.payload.detail,
        }
    evidence["health"] = {
        region: {
            "error_rate": r.error_rate,
            "queue_depth": r.queue_depth,
            "age_seconds": round(r.age_seconds(now), 3),
        }
        for region, r in sorted(s.last_readings.items())
    }
    return {
        "incident_id": s.incident_id,
        "directive": directive_json(record),
        "evidence": evidence,
        "preconditions": _preconditions(s, record, gathered),
        "risk": risk,
        "rollback_hint": rollback_hint(record),
        "verification_criteria": verification,
        "kill_switch": control.kill_switch,
        "ledger_sequence": s.sequence,
        "status": record.status.value,
        "final": record.status in (DirectiveStatus.REFUSED, DirectiveStatus.FAILED)
        or record.verified,
    }
