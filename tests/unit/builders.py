"""Event builders for pure tests: readable one-liners for incident histories."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conn_core.authority import parse_authority
from conn_schemas import events as ev
from conn_schemas.observations import MetricsReading, Observation
from conn_schemas.values import (
    Action,
    Actor,
    Expectation,
    HoldReason,
    RefusalReason,
    Role,
    Verdict,
    VerificationCriteria,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbooks" / "checkout-authority.yaml"

ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
MALLORY = Actor(kind="human", id="mallory", roles=(Role.COMMANDER,), team="incident-command")
DANA = Actor(kind="human", id="dana", roles=(Role.SPECIALIST,), team="database-platform")
OLIVE = Actor(kind="human", id="olive", roles=(Role.OBSERVER,))
CAROL = Actor(kind="human", id="carol", roles=(Role.COMMANDER,), team="incident-command")
ROOT_ADMIN = Actor(kind="human", id="root", roles=(Role.ADMIN,))
EXECUTOR = Actor.service("executor")
VERIFIER = Actor.service("verifier")
PACKAGER = Actor.service("packager")
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class History:
    """Builds one incident's events with increasing timestamps."""

    def __init__(self, incident_id: str = "inc-1") -> None:
        self.incident_id = incident_id
        self.events: list[ev.Envelope] = []
        self._tick = itertools.count()

    def _add(
        self,
        cls: type[ev.Envelope],
        payload: Any,
        actor: Actor,
        correlation_id: str | None = None,
    ) -> ev.Envelope:
        at = T0 + timedelta(seconds=next(self._tick))
        event = ev.new_event(
            cls,
            incident_id=self.incident_id,
            payload=payload,
            actor=actor,
            producer="test",
            correlation_id=correlation_id,
            clock=lambda: at,
        )
        self.events.append(event)
        return event

    @property
    def position(self) -> int:
        return len(self.events)

    def open(self) -> History:
        self._add(
            ev.IncidentOpened,
            ev.IncidentOpenedPayload(title="checkout failing", service="checkout"),
            ALICE,
        )
        return self

    def declare(
        self,
        holder: str = "alice",
        *,
        content: bytes | None = None,
        actor: Actor | None = None,
        approval: str | None = None,
    ) -> History:
        content = RUNBOOK.read_bytes() if content is None else content
        authority, digest = parse_authority(content, holder=holder)
        self._add(
            ev.AuthorityDeclared,
            ev.AuthorityDeclaredPayload(
                authority=authority,
                source_file=str(RUNBOOK.name),
                content_sha256=digest,
                **({"approval": approval} if approval else {}),
            ),
            actor or ALICE,
        )
        return self

    def propose(
        self,
        content: bytes,
        *,
        proposal_id: str = "p-1",
        base: str | None = None,
        actor: Actor = ALICE,
        holder: str = "alice",
    ) -> str:
        """AuthorityChangeProposed for `content` against the authority in force."""
        from conn_core.fold import fold

        state = fold(self.events, self.incident_id)
        authority, digest = parse_authority(content, holder=holder)
        self._add(
            ev.AuthorityChangeProposed,
            ev.AuthorityChangeProposedPayload(
                proposal_id=proposal_id,
                authority=authority,
                source_file="wider.yaml",
                content_sha256=digest,
                base_sha256=base or state.authority_sha256 or "0" * 64,
                widenings=("wider",),
            ),
            actor,
        )
        return digest

    def approve(self, proposal_id: str, sha: str, actor: Actor) -> None:
        self._add(
            ev.AuthorityChangeApproved,
            ev.AuthorityChangeApprovedPayload(proposal_id=proposal_id, content_sha256=sha),
            actor,
        )

    def direct(
        self,
        action: Action,
        *,
        actor: Actor = ALICE,
        based_on: int | None = None,
        expectation: Expectation | None = None,
        cid: str | None = None,
    ) -> str:
        cid = cid or f"d-{uuid.uuid4().hex[:8]}"
        self._add(
            ev.DirectiveIssued,
            ev.DirectiveIssuedPayload(
                action=action,
                expectation=expectation,
                based_on_sequence=self.position if based_on is None else based_on,
            ),
            actor,
            cid,
        )
        return cid

    def accept(self, cid: str, action: Action, consequential: bool = True) -> None:
        self._add(
            ev.DirectiveAccepted,
            ev.DirectiveAcceptedPayload(
                action=action, consequential=consequential, checked_at_sequence=self.position
            ),
            EXECUTOR,
            cid,
        )

    def refuse(self, cid: str, action: Action, reason: RefusalReason, detail: str = "no") -> None:
        self._add(
            ev.DirectiveRefused,
            ev.DirectiveRefusedPayload(
                action=action,
                reason=reason,
                detail=detail,
                refused_by="executor",
                checked_at_sequence=self.position,
            ),
            EXECUTOR,
            cid,
        )

    def start(self, cid: str, action: Action, executor_id: str = "x1") -> None:
        self._add(
            ev.StepStarted,
            ev.StepStartedPayload(
                action=action, idempotency_key=cid, executor_id=executor_id, fencing_token=1
            ),
            EXECUTOR,
            cid,
        )

    def gather(
        self, cid: str | None, purpose: str = "pre_step", observation: Observation | None = None
    ) -> None:
        self._add(
            ev.StateGathered,
            ev.StateGatheredPayload(
                purpose=purpose,  # type: ignore[arg-type]
                observation=observation or Observation(),
            ),
            EXECUTOR,
            cid,
        )

    def fail_not_started(self, cid: str, action: Action, error: str = "stopped") -> None:
        self._add(
            ev.StepFailed,
            ev.StepFailedPayload(
                action=action, error=error, summary="not executed", duration_ms=0, not_started=True
            ),
            EXECUTOR,
            cid,
        )

    def note(self, cid: str | None = None) -> None:
        self._add(
            ev.IncidentRecordUpdated,
            ev.IncidentRecordUpdatedPayload(
                destination="webhook", summary="note", delivered=True, idempotency_key="k"
            ),
            EXECUTOR,
            cid,
        )

    def alert(self) -> None:
        self._add(
            ev.AlertReceived,
            ev.AlertReceivedPayload(source="alertmanager", fingerprint="f1", service="checkout"),
            Actor.service("alertbot"),
        )

    def succeed(self, cid: str, action: Action) -> None:
        from conn_schemas.observations import ActionResult

        self._add(
            ev.StepSucceeded,
            ev.StepSucceededPayload(
                action=action,
                result=ActionResult(idempotency_key=cid, changed=True, before={}, after={}),
                summary="done",
                duration_ms=5,
            ),
            EXECUTOR,
            cid,
        )

    def fail(self, cid: str, action: Action) -> None:
        self._add(
            ev.StepFailed,
            ev.StepFailedPayload(action=action, error="boom", summary="failed", duration_ms=5),
            EXECUTOR,
            cid,
        )

    def unknown(self, cid: str, action: Action) -> None:
        self._add(
            ev.StepOutcomeUnknown,
            ev.StepOutcomeUnknownPayload(action=action, reason="crash", observation=Observation()),
            EXECUTOR,
            cid,
        )

    def snapshot(self, cid: str, verdict: Verdict, regions: tuple[str, ...] = ("us-east",)) -> None:
        at = T0 + timedelta(seconds=self.position)
        readings = tuple(
            ev.RegionReadings(
                region=r,
                readings=(
                    MetricsReading(
                        region=r, error_rate=0.0, queue_depth=1, request_rate=10, observed_at=at
                    ),
                ),
                ages_seconds=(0.0,),
                healthy=verdict is Verdict.RECOVERED,
                fresh=True,
            )
            for r in regions
        )
        self._add(
            ev.VerificationSnapshot,
            ev.VerificationSnapshotPayload(
                trigger="step",
                step_correlation_id=cid,
                regions=readings,
                criteria=VerificationCriteria(),
                verdict=verdict,
                detail=verdict.value,
                window_started_at=at,
                window_ended_at=at,
            ),
            VERIFIER,
            cid,
        )

    def hold(self, actor: Actor = ALICE) -> None:
        self._add(ev.HoldDeclared, ev.HoldDeclaredPayload(reason=HoldReason.MANUAL), actor)

    def resume(self, actor: Actor = ALICE) -> None:
        self._add(ev.ResumeDirected, ev.ResumeDirectedPayload(), actor)

    def request_takeover(self, team: str = "database-platform", actor: Actor = ALICE) -> None:
        self._add(ev.TakeoverRequested, ev.TakeoverRequestedPayload(to_team=team), actor)

    def packet(
        self,
        sha: str = "a" * 64,
        team: str | None = "database-platform",
        *,
        basis: int | None = None,
    ) -> str:
        self._add(
            ev.TakeoverPacketPublished,
            ev.TakeoverPacketPublishedPayload(
                packet_id="p1",
                packet_sha256=sha,
                to_team=team,
                trigger="handoff" if team else "hold",
                ledger_sequence=self.position if basis is None else basis,
                ledger_hash="0" * 64,
            ),
            PACKAGER,
        )
        return sha

    def take_over(self, sha: str, actor: Actor = DANA, team: str = "database-platform") -> None:
        self._add(
            ev.TakeoverAccepted, ev.TakeoverAcceptedPayload(team=team, packet_sha256=sha), actor
        )

    def close(self) -> None:
        self._add(ev.IncidentClosed, ev.IncidentClosedPayload(resolution="fixed"), ALICE)

    def kill_switch(self, engaged: bool = True) -> ev.Envelope:
        cls = ev.KillSwitchEngaged if engaged else ev.KillSwitchReleased
        payload_cls = ev.KillSwitchEngagedPayload if engaged else ev.KillSwitchReleasedPayload
        return ev.new_event(
            cls,
            incident_id=ev.GLOBAL_INCIDENT,
            payload=payload_cls(reason="drill"),
            actor=Actor(kind="human", id="root", roles=(Role.ADMIN,)),
            producer="test",
        )


def one_of_each() -> list[ev.Envelope]:
    """One valid example of every event type (for codec and round-trip tests)."""
    from conn_schemas.observations import FlagRuleState, WorkerPoolState
    from conn_schemas.values import DisableFlagRule, FlagRuleExpectation, GatherState

    h = History("inc-every")
    h._add(
        ev.AlertReceived,
        ev.AlertReceivedPayload(
            source="alertmanager", fingerprint="abc", service="checkout", labels={"a": "b"}
        ),
        Actor.service("alertbot"),
    )
    h.open().declare()
    wider = RUNBOOK.read_bytes().replace(
        b"max_consequential_steps: 10", b"max_consequential_steps: 12"
    )
    sha = h.propose(wider)
    h.approve("p-1", sha, ROOT_ADMIN)
    h.declare(content=wider, actor=ROOT_ADMIN, approval="p-1")
    gather = GatherState()
    g = h.direct(gather)
    h.accept(g, gather, consequential=False)
    h._add(
        ev.StateGathered,
        ev.StateGatheredPayload(
            purpose="directed",
            observation=Observation(
                flags=(
                    FlagRuleState(
                        flag="checkout-pricing",
                        rule="canary-10pct",
                        region="eu-west",
                        enabled=True,
                        observed_at=T0,
                    ),
                ),
                pools=(
                    WorkerPoolState(
                        pool="cache-invalidation",
                        region="us-east",
                        desired_replicas=4,
                        ready_replicas=4,
                        observed_at=T0,
                    ),
                ),
            ),
        ),
        EXECUTOR,
        g,
    )
    disable = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
    d = h.direct(
        disable,
        expectation=FlagRuleExpectation(
            flag="checkout-pricing", rule="canary-10pct", region="eu-west", enabled=True
        ),
    )
    h.accept(d, disable)
    h.start(d, disable)
    h.succeed(d, disable)
    h.snapshot(d, Verdict.MIXED)
    h.refuse("d-x", disable, RefusalReason.ON_HOLD)
    h.fail("d-f", disable)
    h.unknown("d-u", disable)
    h._add(
        ev.IncidentRecordUpdated,
        ev.IncidentRecordUpdatedPayload(
            destination="webhook", summary="note", delivered=True, idempotency_key=d
        ),
        EXECUTOR,
        d,
    )
    h._add(ev.ApprovalRecorded, ev.ApprovalRecordedPayload(packet_sha256="b" * 64), CAROL, d)
    h._add(
        ev.ApprovalDeclined,
        ev.ApprovalDeclinedPayload(packet_sha256="b" * 64, reason="not now"),
        CAROL,
        d,
    )
    h.hold()
    h.resume()
    h.request_takeover()
    sha = h.packet()
    h.take_over(sha)
    h.close()
    events = [*h.events, h.kill_switch(True), h.kill_switch(False)]
    assert {e.event_type for e in events} == set(ev.EVENT_TYPES), "every type is exemplified"
    return events
