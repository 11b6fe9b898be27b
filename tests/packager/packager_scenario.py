"""Scripted incidents for packager tests (pure: builds events, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conn_core.authority import parse_authority
from conn_schemas.events import (
    AuthorityDeclared,
    AuthorityDeclaredPayload,
    ControlPlaneCheck,
    DirectiveAccepted,
    DirectiveAcceptedPayload,
    DirectiveIssued,
    DirectiveIssuedPayload,
    DirectiveRefused,
    DirectiveRefusedPayload,
    Envelope,
    IncidentOpened,
    IncidentOpenedPayload,
    RegionReadings,
    StateGathered,
    StateGatheredPayload,
    StepStarted,
    StepStartedPayload,
    StepSucceeded,
    StepSucceededPayload,
    TakeoverRequested,
    TakeoverRequestedPayload,
    VerificationSnapshot,
    VerificationSnapshotPayload,
    new_event,
)
from conn_schemas.observations import ActionResult, MetricsReading, Observation
from conn_schemas.values import (
    Action,
    Actor,
    DrainWorkerPool,
    GatherState,
    RefusalReason,
    RestartDependencyTier,
    Role,
    UpdateIncidentRecord,
    Verdict,
    VerificationCriteria,
)

ROOT = Path(__file__).resolve().parents[2]
ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
EXECUTOR = Actor.service("executor")
VERIFIER = Actor.service("verifier")
T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)


@dataclass
class Script:
    incident_id: str
    start: datetime = T0
    events: list[Envelope] = field(default_factory=list)
    _tick: int = 0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=10 * self._tick)

    def add(
        self, cls: type[Envelope], payload: object, *, actor: Actor = ALICE, cid: str | None = None
    ) -> Envelope:
        self._tick += 1
        at = self.now()
        ev = new_event(
            cls,
            incident_id=self.incident_id,
            payload=payload,  # type: ignore[arg-type]
            actor=actor,
            # Written as its rightful producer would: a service as itself, the API for humans.
            producer=actor.id if actor.kind == "service" else "directive-api",
            correlation_id=cid,
            clock=lambda: at,
        )
        self.events.append(ev)
        return ev

    def __iter__(self) -> Iterator[Envelope]:
        return iter(self.events)


def reading(region: str, at: datetime, error_rate: float, queue: float) -> MetricsReading:
    return MetricsReading(
        region=region, error_rate=error_rate, queue_depth=queue, request_rate=50.0, observed_at=at
    )


def opened(script: Script, title: str = "Checkout failing in two regions") -> None:
    script.add(IncidentOpened, IncidentOpenedPayload(title=title, service="checkout"))
    content = (ROOT / "runbooks" / "checkout-authority.yaml").read_bytes()
    authority, sha = parse_authority(content, holder="alice")
    script.add(
        AuthorityDeclared,
        AuthorityDeclaredPayload(
            authority=authority, source_file="runbooks/checkout-authority.yaml", content_sha256=sha
        ),
    )


def directed(script: Script, cid: str, action: Action, *, succeed: bool = True) -> None:
    script.add(
        DirectiveIssued,
        DirectiveIssuedPayload(action=action, based_on_sequence=len(script.events)),
        cid=cid,
    )
    consequential = not isinstance(action, GatherState | UpdateIncidentRecord)
    script.add(
        DirectiveAccepted,
        DirectiveAcceptedPayload(
            action=action, consequential=consequential, checked_at_sequence=len(script.events)
        ),
        actor=EXECUTOR,
        cid=cid,
    )
    script.add(
        StepStarted,
        StepStartedPayload(action=action, idempotency_key=cid, executor_id="x1", fencing_token=1),
        actor=EXECUTOR,
        cid=cid,
    )
    if succeed:
        script.add(
            StepSucceeded,
            StepSucceededPayload(
                action=action,
                result=ActionResult(idempotency_key=cid, changed=True, before={}, after={}),
                summary="done",
                duration_ms=12.0,
            ),
            actor=EXECUTOR,
            cid=cid,
        )


def snapshot(
    script: Script, step: str, verdict: Verdict, healthy: dict[str, bool], *, reading_age: float
) -> None:
    at = script.now() + timedelta(seconds=10)
    regions = tuple(
        RegionReadings(
            region=r,
            readings=(
                reading(
                    r, at - timedelta(seconds=reading_age), 0.001 if ok else 0.2, 5 if ok else 900
                ),
            ),
            ages_seconds=(reading_age,),
            healthy=ok,
            fresh=True,
        )
        for r, ok in healthy.items()
    )

    script.add(
        VerificationSnapshot,
        VerificationSnapshotPayload(
            trigger="step",
            step_correlation_id=step,
            regions=regions,
            control_plane=(
                ControlPlaneCheck(
                    subject="pool cache-invalidation in us-east",
                    expected="drained",
                    observed="drained",
                    matches=True,
                ),
            ),
            criteria=VerificationCriteria(),
            verdict=verdict,
            detail=f"{verdict.value} across regions",
            window_started_at=at - timedelta(seconds=5),
            window_ended_at=at,
        ),
        actor=VERIFIER,
        cid=step,
    )


def mixed_state(incident_id: str = "inc-mixed") -> Script:
    """open, authority, gather, drain (succeeded), a blocked restart, a pending
    record update, then a VerificationSnapshot with verdict mixed (-> hold)."""
    s = Script(incident_id)
    opened(s)
    s.add(
        StateGathered,
        StateGatheredPayload(
            purpose="directed",
            observation=Observation(
                metrics=(
                    reading("us-east", T0, 0.3, 800),
                    reading("eu-west", T0, 0.25, 700),
                )
            ),
        ),
        actor=EXECUTOR,
        cid="c-gather",
    )
    directed(s, "c-drain", DrainWorkerPool(pool="cache-invalidation", region="us-east"))
    restart = RestartDependencyTier(tier="pricing-cache", region="eu-west")
    s.add(
        DirectiveIssued,
        DirectiveIssuedPayload(action=restart, based_on_sequence=len(s.events)),
        cid="c-restart",
    )
    s.add(
        DirectiveRefused,
        DirectiveRefusedPayload(
            action=restart,
            reason=RefusalReason.STEP_UNVERIFIED,
            detail="previous step c-drain is not verified yet",
            refused_by="executor",
            checked_at_sequence=len(s.events),
        ),
        actor=EXECUTOR,
        cid="c-restart",
    )
    s.add(
        DirectiveIssued,
        DirectiveIssuedPayload(
            action=UpdateIncidentRecord(note="drained cache-invalidation in us-east"),
            based_on_sequence=len(s.events),
        ),
        cid="c-note",
    )
    snapshot(s, "c-drain", Verdict.MIXED, {"us-east": True, "eu-west": False}, reading_age=7.0)
    return s


def recovered(incident_id: str, *, handoff: bool = False) -> Script:
    """A clean incident: drain, verified recovered; optionally a handoff request."""
    s = Script(incident_id)
    opened(s, f"Incident {incident_id}")
    directed(s, "c-drain", DrainWorkerPool(pool="checkout-workers", region="eu-west"))
    snapshot(s, "c-drain", Verdict.RECOVERED, {"us-east": True, "eu-west": True}, reading_age=2.0)
    if handoff:
        s.add(TakeoverRequested, TakeoverRequestedPayload(to_team="database-platform"))
    return s
