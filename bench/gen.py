"""Synthetic incident histories for the replay benchmark, pre-encoded with the codec.

One template incident (58 events: opened, authority declared, four cycles of
record / gather / restart-with-verification, then a failed verification that holds,
a resume and the close) is built with the real event models and encoded once; every
other incident is the template's bytes with the incident id and the event-id prefix
substituted, so a million events cost only a few byte replaces each.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conn_core.authority import parse_authority
from conn_schemas import events as ev
from conn_schemas.codec import encode
from conn_schemas.observations import (
    ActionResult,
    FlagRuleState,
    MetricsReading,
    Observation,
    TierState,
    WorkerPoolState,
)
from conn_schemas.values import (
    Actor,
    GatherState,
    HoldReason,
    RestartDependencyTier,
    Role,
    UpdateIncidentRecord,
    Verdict,
    VerificationCriteria,
)

PLACEHOLDER = "INCIDENT-PLACEHOLDER"
ID_PREFIX = "aaaaaaaa-"
RUNBOOK = Path(__file__).resolve().parents[1] / "runbooks" / "checkout-authority.yaml"
ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
EXECUTOR = Actor.service("executor")
VERIFIER = Actor.service("verifier")
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _observation(at: datetime) -> Observation:
    return Observation(
        flags=tuple(
            FlagRuleState(
                flag="checkout-pricing", rule="canary-10pct", region=r, enabled=True, observed_at=at
            )
            for r in ("us-east", "eu-west")
        ),
        pools=tuple(
            WorkerPoolState(pool=p, region=r, desired_replicas=4, ready_replicas=4, observed_at=at)
            for p in ("cache-invalidation", "checkout-workers")
            for r in ("us-east", "eu-west")
        ),
        tiers=tuple(
            TierState(tier=t, region=r, healthy=True, generation=3, observed_at=at)
            for t in ("pricing-cache", "inventory-api", "orders-db")
            for r in ("us-east", "eu-west")
        ),
        metrics=tuple(
            MetricsReading(
                region=r, error_rate=0.01, queue_depth=20, request_rate=120, observed_at=at
            )
            for r in ("us-east", "eu-west")
        ),
    )


def signer_of(actor: Actor) -> str:
    """The keyring principal that writes an event of this actor: a Conn service writes
    as itself, the directive-api signs human intent."""
    return actor.id if actor.kind == "service" else "directive-api"


def template_events() -> list[ev.Envelope]:
    """One realistic incident history, with placeholder ids."""
    ids = (uuid.UUID(f"{ID_PREFIX}0000-4000-8000-{i:012d}") for i in itertools.count())
    tick = itertools.count()
    out: list[ev.Envelope] = []

    def add(
        cls: type[ev.Envelope], payload: Any, actor: Actor, cid: str | None = None
    ) -> ev.Envelope:
        at = T0 + timedelta(seconds=next(tick))
        cause = str(out[-1].event_id) if out and cid else None
        event = ev.new_event(
            cls,
            incident_id=PLACEHOLDER,
            payload=payload,
            actor=actor,
            producer=signer_of(actor),  # as its rightful producer writes it
            correlation_id=cid,
            causation_id=cause,
            clock=lambda: at,
            event_id=next(ids),
        )
        out.append(event)
        return event

    add(
        ev.IncidentOpened,
        ev.IncidentOpenedPayload(title="checkout failing", service="checkout"),
        ALICE,
    )
    authority, digest = parse_authority(RUNBOOK.read_bytes(), holder="alice")
    add(
        ev.AuthorityDeclared,
        ev.AuthorityDeclaredPayload(
            authority=authority, source_file=RUNBOOK.name, content_sha256=digest
        ),
        ALICE,
    )

    def direct(action: Any, cid: str) -> None:
        add(
            ev.DirectiveIssued,
            ev.DirectiveIssuedPayload(action=action, based_on_sequence=len(out)),
            ALICE,
            cid,
        )

    def accept(action: Any, cid: str, consequential: bool) -> None:
        add(
            ev.DirectiveAccepted,
            ev.DirectiveAcceptedPayload(
                action=action, consequential=consequential, checked_at_sequence=len(out)
            ),
            EXECUTOR,
            cid,
        )

    def record(cid: str, key: str) -> None:
        add(
            ev.IncidentRecordUpdated,
            ev.IncidentRecordUpdatedPayload(
                destination="webhook", summary="step recorded", delivered=True, idempotency_key=key
            ),
            EXECUTOR,
            cid,
        )

    def snapshot(cid: str, verdict: Verdict) -> None:
        at = T0 + timedelta(seconds=len(out))
        readings = tuple(
            ev.RegionReadings(
                region=r,
                readings=tuple(
                    MetricsReading(
                        region=r,
                        error_rate=0.01,
                        queue_depth=20,
                        request_rate=120,
                        observed_at=at + timedelta(seconds=i),
                    )
                    for i in range(3)
                ),
                ages_seconds=(2.0, 1.0, 0.0),
                healthy=verdict is Verdict.RECOVERED,
                fresh=True,
            )
            for r in ("us-east", "eu-west")
        )
        add(
            ev.VerificationSnapshot,
            ev.VerificationSnapshotPayload(
                trigger="step",
                step_correlation_id=cid,
                regions=readings,
                criteria=VerificationCriteria(),
                verdict=verdict,
                detail=verdict.value,
                window_started_at=at,
                window_ended_at=at + timedelta(seconds=3),
            ),
            VERIFIER,
            cid,
        )

    tiers = ("pricing-cache", "inventory-api", "pricing-cache", "inventory-api")
    regions = ("us-east", "us-east", "eu-west", "eu-west")
    for n, (tier, region) in enumerate(zip(tiers, regions, strict=True)):
        note = UpdateIncidentRecord(note=f"status update {n}: working the checkout outage")
        cid = f"rec-{n}"
        direct(note, cid)
        accept(note, cid, False)
        record(cid, cid)
        gather = GatherState(regions=(region,))
        cid = f"gather-{n}"
        direct(gather, cid)
        accept(gather, cid, False)
        at = T0 + timedelta(seconds=len(out))
        add(
            ev.StateGathered,
            ev.StateGatheredPayload(purpose="directed", observation=_observation(at)),
            EXECUTOR,
            cid,
        )
        restart = RestartDependencyTier(tier=tier, region=region)
        cid = f"restart-{n}"
        direct(restart, cid)
        add(
            ev.StateGathered,
            ev.StateGatheredPayload(purpose="pre_step", observation=_observation(at)),
            EXECUTOR,
            cid,
        )
        accept(restart, cid, True)
        add(
            ev.StepStarted,
            ev.StepStartedPayload(
                action=restart, idempotency_key=cid, executor_id="executor-1", fencing_token=1
            ),
            EXECUTOR,
            cid,
        )
        add(
            ev.StepSucceeded,
            ev.StepSucceededPayload(
                action=restart,
                result=ActionResult(
                    idempotency_key=cid,
                    changed=True,
                    before={"generation": 3},
                    after={"generation": 4, "restartedAt": at.isoformat()},
                ),
                summary=f"restarted {tier} in {region}",
                duration_ms=12.5,
            ),
            EXECUTOR,
            cid,
        )
        record(cid, f"{cid}/record")
        snapshot(cid, Verdict.RECOVERED if n < 3 else Verdict.MIXED)
    # The last verification is mixed: the fold derives a hold (a takeover packet is due).
    add(ev.HoldDeclared, ev.HoldDeclaredPayload(reason=HoldReason.MANUAL, detail="stop"), ALICE)
    add(ev.ResumeDirected, ev.ResumeDirectedPayload(detail="dba on it"), ALICE)
    add(ev.IncidentClosed, ev.IncidentClosedPayload(resolution="recovered"), ALICE)
    return out


def template_bytes() -> list[bytes]:
    return [encode(e) for e in template_events()]


def incident_id(k: int) -> str:
    return f"bench-replay-{k:08d}"


def clone(template: list[bytes], k: int) -> list[bytes]:
    """Incident k: the template with its own incident id and event ids."""
    inc = incident_id(k).encode()
    prefix = f"{k:08x}-".encode()
    ph, idp = PLACEHOLDER.encode(), ID_PREFIX.encode()
    return [v.replace(ph, inc).replace(idp, prefix) for v in template]


def records(total: int) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, signer) for `total` events: whole incidents, interleaved in small
    groups the way concurrent incidents interleave on the topic (per-incident order
    kept); `signer` is the principal whose key must sign the value."""
    events = template_events()
    template = [encode(e) for e in events]
    signers = [e.producer for e in events]
    per = len(template)
    incidents = -(-total // per)
    produced = 0
    group = 8
    for first in range(0, incidents, group):
        clones = [
            (incident_id(k).encode(), clone(template, k))
            for k in range(first, min(first + group, incidents))
        ]
        for i in range(per):
            for key, values in clones:
                if produced >= total:
                    return
                yield key, values[i], signers[i]
                produced += 1
