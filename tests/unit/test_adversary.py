"""The adversary: a hypothesis state machine over the pure core and the real codec/signing.

Honest parties act through rules: commanders and specialists through a model of the
directive API (which asks `decide`/`check_control`, as the real one does), executors
that claim, look, pass a fenced gate and act, a verifier and a packager. Every record
they write is encoded and signed with their own key; every record anyone writes goes
through `open_record` (signature, entitlement, binding) before it is folded, exactly as
a consumer does. An adversary injects well-formed records of every event type (unsigned,
an unknown key, a key not entitled to the type, a genuine signature over altered bytes,
the wrong Kafka key), replays genuine records, re-targets them at another incident,
freezes and revives executors (their claims are fenced and taken over), throws holds
and the kill switch at any point, and reports time-outs (unknown outcomes).

The ORACLE below is written from DESIGN.md's safety invariants, not from the code: it
keeps its own picture of the incident from the genuine records (who holds the conn, what
stops are in force, which steps ran and are unverified, what authority is declared) and
checks after every rule that

1. every side effect has exactly one DirectiveIssued, signed by the directive-api for a
   human holding the conn when it was issued and still holding it when it ran, inside
   the authority in force then (invariants 1, 2, 4);
2. no consequential side effect while another is unverified, after a hold, the kill
   switch, a close or a takeover, or after the incident's state changed since the
   directive (invariants 3, 5, 6, 7);
3. no forged record is ever folded (invariant 1, "A signed log");
4. every unknown outcome not verified since is a partial change in the takeover packet
   (invariants 2 and 9);
5. replaying the raw log from scratch (verify, decode, fold) equals the live fold (8).

`LOOK_AFTER_GATE = False` reverts the executor's look after its gate (issue 15 b): the
machine then finds the takeover-between-look-and-gate hole.
"""

from __future__ import annotations

import functools
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
)
from trust_support import OWNER, PRINCIPAL_OF_ROLE, Forgery, Keys, forgeries, restamp

from conn_core.authority import parse_authority
from conn_core.fold import evolve, evolve_control, fold
from conn_core.rules import Accepted, check_authority, check_control, decide, recheck
from conn_core.state import ControlState, DirectiveStatus, IncidentState
from conn_core.verdict import judge
from conn_readmodel.packet import build_packet, packet_sha256
from conn_schemas import events as ev
from conn_schemas.codec import UnreadableRecord, encode
from conn_schemas.observations import ActionResult, MetricsReading, Observation
from conn_schemas.signing import SignerRole, open_record
from conn_schemas.values import (
    CONSEQUENTIAL_ACTIONS,
    Action,
    Actor,
    AuthorityBoundary,
    DisableFlagRule,
    DrainWorkerPool,
    RestartDependencyTier,
    Role,
    Verdict,
    VerificationCriteria,
    action_regions,
    action_target,
)

LOOK_AFTER_GATE = True
"""Model of the executor's look at the log after its fenced gate (the fix of issue 15 b)."""

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = (ROOT / "runbooks" / "checkout-authority.yaml").read_bytes()
NARROW = RUNBOOK.replace(
    b"    targets: [cache-invalidation, checkout-workers]", b"    targets: [checkout-workers]"
)
assert NARROW != RUNBOOK
WIDE = RUNBOOK.replace(b"max_consequential_steps: 10", b"max_consequential_steps: 50").replace(
    b"reservations:\n  - action: restart_dependency_tier\n    target: orders-db\n"
    b"    team: database-platform\n"
    b"    reason: orders-db restarts need the database platform team (replication, failover)\n",
    b"reservations: []\n",
)
"""Wider than the runbook: no reservation of orders-db, a larger blast radius."""
assert b"reservations: []\n" in WIDE and b"max_consequential_steps: 50" in WIDE

DISRUPTIONS = (
    "takeover",
    "integration_hold",
    "hold",
    "narrow",
    "verify",
    "close",
    "kill",
    "accept",
)
"""What the adversary throws between an executor's last look and its side effect."""

READING_KINDS = (
    "healthy",
    "healthy",
    "unhealthy",
    "no_traffic",
    "no_error_rate",
    "no_queue_depth",
    "no_request_rate",
    "too_old",
    "before_step",
)
"""Windows the verifier judges; all but the first two are no data or not health."""


def _readings(
    kind: str, region: str, step_time: datetime, now: datetime, samples: int
) -> list[MetricsReading]:
    """`samples` distinct readings after the step, spoiled as `kind` says."""
    out = []
    for i in range(samples):
        at = now - timedelta(seconds=1 + i)
        values: dict[str, float | None] = {
            "error_rate": 0.001,
            "queue_depth": 3.0,
            "request_rate": 25.0,
        }
        if kind == "unhealthy":
            values["error_rate"] = 0.5
        elif kind == "no_traffic":
            values["request_rate"] = 0.0
        elif kind.startswith("no_"):
            values[kind.removeprefix("no_")] = None
        elif kind == "too_old":
            at = now - timedelta(seconds=16 + i)
        elif kind == "before_step":
            at = step_time - timedelta(seconds=1 + i)
        out.append(MetricsReading(region=region, observed_at=at, **values))
    return out


INC = "inc-adv"
OTHER = "inc-other"

ALICE = Actor(kind="human", id="alice", roles=(Role.COMMANDER,), team="incident-command")
MALLORY = Actor(kind="human", id="mallory", roles=(Role.COMMANDER,), team="incident-command")
DANA = Actor(kind="human", id="dana", roles=(Role.SPECIALIST,), team="database-platform")
EVE = Actor(kind="human", id="eve", roles=(Role.SPECIALIST,), team="payments")
OLIVE = Actor(kind="human", id="olive", roles=(Role.OBSERVER,))
ROOT_ADMIN = Actor(kind="human", id="root", roles=(Role.ADMIN,))
RITA = Actor(kind="human", id="rita", roles=(Role.SPECIALIST,), team="rollback-authority")
HUMANS = (ALICE, MALLORY, DANA, EVE, RITA, OLIVE)

ACTIONS: tuple[Action, ...] = (
    DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west"),
    DrainWorkerPool(pool="cache-invalidation", region="us-east"),
    DrainWorkerPool(pool="checkout-workers", region="eu-west"),
    RestartDependencyTier(tier="pricing-cache", region="us-east"),
    RestartDependencyTier(tier="orders-db", region="us-east"),
    RestartDependencyTier(tier="inventory-api", region="ap-south"),
)

API, EXECUTOR, VERIFIER, PACKAGER = "directive-api", "executor", "verifier", "packager"
INTEGRATION = PRINCIPAL_OF_ROLE[SignerRole.INTEGRATION]
EXECUTORS = ("x1", "x2")

STATE_CHANGING = frozenset(
    {
        "IncidentOpened",
        "AuthorityDeclared",
        "StateGathered",
        "StepStarted",
        "StepSucceeded",
        "StepFailed",
        "StepOutcomeUnknown",
        "VerificationSnapshot",
        "HoldDeclared",
        "ResumeDirected",
        "TakeoverRequested",
        "TakeoverAccepted",
        "IncidentClosed",
    }
)
"""DESIGN.md invariant 5: "a verification snapshot or state change", and "a close,
takeover, authority change or derived hold" — what makes an earlier directive stale."""

PACKET_CONTENT = STATE_CHANGING | {
    "DirectiveIssued",
    "DirectiveAccepted",
    "DirectiveRefused",
    "ApprovalRecorded",
    "ApprovalDeclined",
}
"""DESIGN.md invariant 9: what a takeover packet shows (last step and status, health,
pending and blocked directives, partial changes, authority, holds): a record of one of
these types makes the latest packet out of date."""


@dataclass
class Raw:
    """One record as it sits on the topic."""

    value: bytes
    key: bytes
    headers: list[tuple[str, bytes]]
    honest: bool
    control: bool = False


@dataclass
class Claim:
    executor: str
    generation: int
    phase: str = "claimed"  # claimed | started | acted | done


@dataclass
class Oracle:
    """DESIGN.md's picture of the incident, kept from genuine records only."""

    seen: set[uuid.UUID] = field(default_factory=set)
    holder: str | None = None
    authority: dict[str, object] | None = None
    hold: bool = False
    closed: bool = False
    kill: bool = False
    takeover_to: str | None = None
    packet_sha: str | None = None
    packet_to: str | None = None
    directives: dict[str, ev.DirectiveIssued] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    position: int = 0
    unverified: set[str] = field(default_factory=set)
    first_outcome: dict[str, str] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    recovered: set[str] = field(default_factory=set)
    side_effects: dict[str, int] = field(default_factory=dict)
    refused_authority: int = 0
    consequential_effects: int = 0
    packet_current: bool = False
    problems: list[str] = field(default_factory=list)

    def see(self, event: ev.Envelope, principal: str) -> None:
        """A record that verified (on conn.events of INC, or conn.control)."""
        if event.event_id in self.seen:
            return  # a replay changes nothing
        self.seen.add(event.event_id)
        if event.incident_id == ev.GLOBAL_INCIDENT:
            self.kill = isinstance(event, ev.KillSwitchEngaged)
            return
        self.position += 1
        cid = event.correlation_id
        if isinstance(event, ev.ResumeDirected) and (
            event.actor.id != self.holder or not self.hold
        ):
            # DESIGN 1 and 6: only the human holding the conn resumes a hold. A resume
            # checked by one API replica that lands after another's takeover (or after
            # the hold was already lifted) resumes nothing and changes nothing.
            return
        # A step's second start, or an outcome after its first (a fenced-out executor's
        # late record), reports nothing new: at most one side effect per correlation_id,
        # and the first outcome stands (DESIGN 2).
        repeated = cid is not None and (
            (
                isinstance(event, ev.StepStarted)
                and (cid in self.started or cid in self.first_outcome)
            )
            or (
                isinstance(event, ev.StepSucceeded | ev.StepFailed | ev.StepOutcomeUnknown)
                and cid in self.first_outcome
            )
        )
        if isinstance(event, ev.StepStarted) and cid is not None:
            self.started.add(cid)
        if event.event_type in STATE_CHANGING and not repeated:
            self.stale |= {c for c in self.directives if c != cid}
        if event.event_type in PACKET_CONTENT:
            self.packet_current = False
        p = event.payload
        if isinstance(event, ev.AuthorityDeclared):
            if self.holder is not None and event.actor.id != self.holder:
                self.refused_authority += 1  # DESIGN 4: only the holder narrows it
                return
            a = event.payload.authority
            picture: dict[str, object] = {
                "regions": set(a.regions),
                "grants": {(g.action, t) for g in a.allowed for t in g.targets},
                "any_target": {g.action for g in a.allowed if not g.targets},
                "reserved": {(r.action, r.target): r.team for r in a.reservations},
                "max_steps": a.blast_radius.max_consequential_steps,
                "limits": a.blast_radius,
                "teams": set(a.takeover_teams),
            }
            wider = _wider(self.authority, picture)
            if wider and event.payload.approval is None:
                # DESIGN 4: during an incident the boundary may only narrow, unless a
                # second authorized person who is not the holder approves the change.
                self.problems.append(f"{event.actor.id} widened the authority: {wider}")
            self.authority = picture
            self.holder = a.holder.identity
        elif isinstance(event, ev.DirectiveIssued) and cid is not None:
            self.directives.setdefault(cid, event)
        elif isinstance(event, ev.HoldDeclared):
            self.hold = True
        elif isinstance(event, ev.ResumeDirected):
            self.hold = False
            self.unverified.clear()
        elif isinstance(event, ev.TakeoverRequested):
            self.takeover_to = event.payload.to_team
        elif isinstance(event, ev.TakeoverPacketPublished):
            self.packet_sha = event.payload.packet_sha256
            self.packet_to = event.payload.to_team
            self.packet_current = True
        elif isinstance(event, ev.TakeoverAccepted):
            self.holder = event.actor.id
            self.hold = False
            self.unverified.clear()
            self.takeover_to = None
        elif isinstance(event, ev.IncidentClosed):
            self.closed = True
        elif isinstance(event, ev.VerificationSnapshot):
            assert isinstance(p, ev.VerificationSnapshotPayload)
            if p.verdict is Verdict.RECOVERED:
                self.problems += [f"recovered on {why}" for why in _no_health(p)]
                self.unverified.discard(p.step_correlation_id or "")
                if p.step_correlation_id:
                    self.recovered.add(p.step_correlation_id)
            else:
                self.hold = True  # invariant 6: not recovered => HOLD
        elif (
            isinstance(event, ev.StepSucceeded | ev.StepFailed | ev.StepOutcomeUnknown)
            and cid is not None
        ):
            self.first_outcome.setdefault(cid, event.event_type)

    def allowed(self, action: Action, actor: Actor) -> str | None:
        """Is `action` by `actor` inside the declared authority? (None: yes)"""
        a = self.authority
        if a is None:
            return "no authority declared"
        target = action_target(action)
        grants = a["grants"]
        any_target = a["any_target"]
        assert isinstance(grants, set) and isinstance(any_target, set)
        if action.action not in any_target and (action.action, target) not in grants:
            return f"{action.action.value} {target} not granted"
        regions = a["regions"]
        assert isinstance(regions, set)
        if not set(action_regions(action)) <= regions:
            return f"region {action_regions(action)} not declared"
        reserved = a["reserved"]
        assert isinstance(reserved, dict)
        team = reserved.get((action.action, target))
        if team is not None and actor.team != team:
            return f"{target} is reserved for {team}"
        return None


def _wider(old: dict[str, object] | None, new: dict[str, object]) -> list[str]:
    """What `new` allows that `old` did not (DESIGN 4's "only narrow")."""
    if old is None:
        return []
    out = []
    for key in ("regions", "grants", "any_target", "teams"):
        more = new[key] - old[key]  # type: ignore[operator]
        if more:
            out.append(f"{key} {sorted(map(str, more))}")
    reserved_old, reserved_new = old["reserved"], new["reserved"]
    assert isinstance(reserved_old, dict) and isinstance(reserved_new, dict)
    for item, team in reserved_old.items():
        if reserved_new.get(item) != team:
            out.append(f"reservation of {item} for {team} dropped")
    limits_old, limits_new = old["limits"], new["limits"]
    for name, value in dict(limits_new).items():  # type: ignore[call-overload]
        if value > getattr(limits_old, name):
            out.append(f"{name} {getattr(limits_old, name)} -> {value}")
    return out


def _no_health(p: ev.VerificationSnapshotPayload) -> list[str]:
    """DESIGN 6, "no data is never health": what in a snapshot judged recovered says
    nothing about health (or says it is unhealthy)."""
    c = p.criteria
    out = [] if p.regions else ["no region at all"]
    for region in p.regions:
        if not region.readings:
            out.append(f"{region.region}: no readings")
        for r in region.readings:
            if r.error_rate is None or r.queue_depth is None or r.request_rate is None:
                out.append(f"{region.region}: a missing value")
            elif r.request_rate <= 0:
                out.append(f"{region.region}: no traffic")
            elif r.error_rate > c.max_error_rate or r.queue_depth > c.max_queue_depth:
                out.append(f"{region.region}: unhealthy values")
        newest = max((r.observed_at for r in region.readings), default=None)
        if newest is not None and (
            (p.window_ended_at - newest).total_seconds() > c.max_reading_age_seconds
            or newest < p.window_started_at
        ):
            out.append(f"{region.region}: no fresh reading")
    return out


def _bound_wrong(event: ev.Envelope, keys: Keys) -> list[Forgery]:
    """Forgeries by the rightful signer itself, with its own valid key, of a record that
    claims to be someone else's: another producer, or (a refusal) another refuser."""
    owner = OWNER[event.event_type]
    signer = PRINCIPAL_OF_ROLE[owner]
    other = next(n for r, n in PRINCIPAL_OF_ROLE.items() if r is not owner)
    out = []
    claimed = event.model_copy(update={"producer": other})
    value = encode(claimed)
    key = event.incident_id.encode()
    out.append(
        Forgery("other-producer", "producer_mismatch", value, key, keys.headers(value, signer))
    )
    actor = (
        ALICE
        if owner is not SignerRole.API
        else Actor.service(PRINCIPAL_OF_ROLE[SignerRole.EXECUTOR])
    )
    value = encode(event.model_copy(update={"actor": actor}))
    out.append(Forgery("other-actor", "actor_not_allowed", value, key, keys.headers(value, signer)))
    if isinstance(event, ev.DirectiveRefused):
        by = "directive-api" if event.payload.refused_by == "executor" else "executor"
        refusal = event.model_copy(
            update={"payload": event.payload.model_copy(update={"refused_by": by})}
        )
        value = encode(refusal)
        out.append(
            Forgery("other-refuser", "not_entitled", value, key, keys.headers(value, signer))
        )
    return out


@functools.cache
def _authority(content: bytes, holder: str) -> tuple[AuthorityBoundary, str]:
    return parse_authority(content, holder=holder)


def _packet_partial(state: IncidentState) -> set[str]:
    packet = build_packet(
        state, head_hash="0" * 64, trigger="hold", to_team=None, generated_at=ev.utcnow()
    )
    return {item.correlation_id for item in packet.partial_changes}


class Adversary(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Every principal also lists a key retired an hour ago (rotated out): records
        # signed with it are among the forgeries (`trust_support.forgeries`).
        self.keys = Keys.fresh().with_retired(ev.utcnow() - timedelta(hours=1))
        self.keyring = self.keys.keyring
        self.log: list[Raw] = []
        self.trusted: list[ev.Envelope | None] = []
        self.live = IncidentState(incident_id=INC)
        self.control = ControlState()
        self.oracle = Oracle()
        self.claims: dict[str, Claim] = {}
        self.orphans: list[tuple[str, str]] = []
        self.frozen: set[str] = set()
        self.generation = 0
        self.stops: set[str] = set()  # the PostgreSQL fast path: INC and/or "_global"
        self.forged_folded: list[str] = []
        self.violations: list[str] = []
        # Delayed delivery: records a producer sent that have not landed on the topic yet
        # (its acknowledgement pending), per producer instance ("x1", "x2", "api").
        self.in_flight: dict[str, list[Raw]] = {}
        self.stalling: str | None = None
        self.pending: dict[str, tuple[str, int, str]] = {}
        self.land_others = False
        self.api(ALICE, ev.IncidentOpened, ev.IncidentOpenedPayload(title="t", service="checkout"))
        self.declare(RUNBOOK)

    # -- plumbing ---------------------------------------------------------------------

    def consume(self, raw: Raw) -> bool:
        """What every consumer does: verify, then fold. False: dead-lettered."""
        self.log.append(raw)
        self.trusted.append(None)
        try:
            trusted = open_record(
                self.keyring,
                value=raw.value,
                key=raw.key,
                headers=raw.headers,
                on_control=raw.control,
            )
        except UnreadableRecord:
            return False
        self.trusted[-1] = trusted.event
        event = trusted.event
        if not raw.honest:
            self.forged_folded.append(f"{event.event_type} signed by {trusted.principal}")
        if event.incident_id == ev.GLOBAL_INCIDENT:
            evolve_control(self.control, event)
        elif event.incident_id == INC:
            evolve(self.live, event)
        else:
            return True
        self.oracle.see(event, trusted.principal)
        return True

    def write(self, event: ev.Envelope, principal: str, *, honest: bool = True) -> ev.Envelope:
        value = encode(event)
        raw = Raw(
            value,
            event.incident_id.encode(),
            self.keys.headers(value, principal),
            honest,
            control=event.incident_id == ev.GLOBAL_INCIDENT,
        )
        if self.stalling is not None:
            self.in_flight.setdefault(self.stalling, []).append(raw)
        else:
            self.consume(raw)
        return event

    def land(self, producer: str) -> None:
        """`producer`'s records in flight land now, in the order it sent them (Kafka keeps
        one producer's order on a partition; another producer's records may be between)."""
        for raw in self.in_flight.pop(producer, []):
            self.consume(raw)

    def api(
        self,
        actor: Actor,
        cls: type[ev.Envelope],
        payload: object,
        cid: str | None = None,
        incident: str = INC,
    ) -> ev.Envelope:
        event = ev.new_event(
            cls,
            incident_id=incident,
            payload=payload,
            actor=actor,
            producer=API,
            correlation_id=cid,
        )
        return self.write(event, API)

    def service(self, name: str, cls: type[ev.Envelope], payload: object, cid: str) -> None:
        event = ev.new_event(
            cls,
            incident_id=INC,
            payload=payload,
            actor=Actor.service(name),
            producer=name,
            correlation_id=cid,
        )
        self.write(event, name)

    def declare(self, content: bytes, by: Actor = ALICE) -> None:
        """The API declares an authority for a commander, if `check_authority` lets it."""
        holder = self.live.holder.identity if self.live.holder else by.id
        authority, digest = _authority(content, holder)
        event = ev.new_event(
            ev.AuthorityDeclared,
            incident_id=INC,
            payload=ev.AuthorityDeclaredPayload(
                authority=authority, source_file="checkout-authority.yaml", content_sha256=digest
            ),
            actor=by,
            producer=API,
        )
        assert isinstance(event, ev.AuthorityDeclared)
        if check_authority(self.live, event) is None:
            if self.oracle.holder is not None and self.oracle.holder != by.id:
                self.fail(f"API declared an authority for {by.id}, holder {self.oracle.holder}")
            self.write(event, API)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    # -- honest humans, through the directive API -------------------------------------

    @rule(action=st.sampled_from(ACTIONS), stale=st.integers(0, 4))
    def holder_directs(self, action: Action, stale: int) -> None:
        """The holder of the conn directs (one in five based on an older position)."""
        holder = self.live.holder.identity if self.live.holder else "alice"
        self.direct(next(h for h in HUMANS if h.id == holder), action, stale == 0)

    @rule(who=st.sampled_from(HUMANS), action=st.sampled_from(ACTIONS))
    def someone_directs(self, who: Actor, action: Action) -> None:
        self.direct(who, action, False)

    def direct(self, who: Actor, action: Action, stale: bool) -> None:
        base = max(0, self.live.sequence - 3) if stale else self.live.sequence
        payload = ev.DirectiveIssuedPayload(action=action, based_on_sequence=base)
        if isinstance(decide(self.live, payload, who, self.control), Accepted):
            cid = f"d-{uuid.uuid4().hex[:8]}"
            self.api(who, ev.DirectiveIssued, payload, cid)
            # DESIGN 1: the API signs only a directive of the human holding the conn.
            if self.oracle.holder != who.id:
                self.fail(f"API issued a directive for {who.id}, holder {self.oracle.holder}")

    @rule(who=st.sampled_from((*HUMANS, Actor.service(INTEGRATION))), rare=st.integers(0, 3))
    def hold(self, who: Actor, rare: int) -> None:
        """Anyone entitled may stop, at any point (one draw in two)."""
        if rare % 2:
            return
        event = ev.new_event(
            ev.HoldDeclared,
            incident_id=INC,
            payload=ev.HoldDeclaredPayload(detail="stop"),
            actor=who,
            producer=INTEGRATION if who.kind == "service" else API,
        )
        assert isinstance(event, ev.HoldDeclared)
        if check_control(self.live, event) is None:
            if who.kind == "human":
                self.stops.add(INC)
            self.write(event, event.producer)

    @rule(who=st.sampled_from((None, None, *HUMANS)))
    def resume(self, who: Actor | None) -> None:
        if who is None:
            holder = self.live.holder.identity if self.live.holder else "alice"
            who = next(h for h in HUMANS if h.id == holder)
        event = ev.new_event(
            ev.ResumeDirected,
            incident_id=INC,
            payload=ev.ResumeDirectedPayload(),
            actor=who,
            producer=API,
        )
        assert isinstance(event, ev.ResumeDirected)
        if check_control(self.live, event) is None:
            if self.oracle.holder != who.id:
                self.fail(f"API accepted a resume by {who.id}, holder {self.oracle.holder}")
            self.write(event, API)
            self.stops.discard(INC)

    @rule(
        who=st.sampled_from((ALICE, ALICE, *HUMANS)),
        team=st.sampled_from(
            ("database-platform", "database-platform", "rollback-authority", "payments")
        ),
    )
    def request_takeover(self, who: Actor, team: str) -> None:
        event = ev.new_event(
            ev.TakeoverRequested,
            incident_id=INC,
            payload=ev.TakeoverRequestedPayload(to_team=team),
            actor=who,
            producer=API,
        )
        assert isinstance(event, ev.TakeoverRequested)
        if check_control(self.live, event) is None:
            self.write(event, API)

    @rule(handoff=st.booleans())
    def publish_packet(self, handoff: bool) -> None:
        """The packager publishes the current packet (addressed to the team a takeover was
        requested for, if one was and `handoff`)."""
        to_team = self.live.takeover_requested_to if handoff else None
        if not self.live.opened:
            return
        packet = build_packet(
            self.live,
            head_hash="0" * 64,
            trigger="handoff" if to_team else "hold",
            to_team=to_team,
            generated_at=ev.utcnow(),
        )
        payload = ev.TakeoverPacketPublishedPayload(
            packet_id=packet.packet_id,
            packet_sha256=packet_sha256(packet),
            to_team=to_team,
            trigger="handoff" if to_team else "hold",
            ledger_sequence=self.live.sequence,
            ledger_hash="0" * 64,
        )
        self.service(PACKAGER, ev.TakeoverPacketPublished, payload, None)  # type: ignore[arg-type]

    @rule(
        who=st.sampled_from((DANA, DANA, RITA, *HUMANS)),
        latest=st.sampled_from((True, True, False)),
    )
    def accept_takeover(self, who: Actor, latest: bool) -> None:
        sha = (
            self.live.last_packet.sha256
            if latest and self.live.last_packet
            else uuid.uuid4().hex * 2
        )
        event = ev.new_event(
            ev.TakeoverAccepted,
            incident_id=INC,
            payload=ev.TakeoverAcceptedPayload(
                team=who.team or "database-platform", packet_sha256=sha
            ),
            actor=who,
            producer=API,
        )
        assert isinstance(event, ev.TakeoverAccepted)
        if check_control(self.live, event) is None:
            # DESIGN 9: only the addressed team, naming the exact hash of the latest packet.
            o = self.oracle
            if Role.SPECIALIST not in who.roles or sha != o.packet_sha:
                self.fail(f"API accepted a takeover by {who.id} naming {sha[:8]}")
            if o.takeover_to is not None and who.team != o.takeover_to:
                self.fail(f"{who.id} of {who.team} took over a handoff to {o.takeover_to}")
            if o.packet_to is not None and who.team != o.packet_to:
                self.fail(f"{who.id} of {who.team} took a packet addressed to {o.packet_to}")
            if not o.packet_current:
                self.fail(f"{who.id} took over on a packet that no longer describes the incident")
            self.write(event, API)
            self.stops.discard(INC)

    @rule(
        team=st.sampled_from(("database-platform", "rollback-authority", "payments")),
        who=st.sampled_from((DANA, RITA, EVE)),
    )
    def handoff(self, team: str, who: Actor) -> None:
        """A whole handoff at once: the holder asks for `team`, the packager publishes
        the packet addressed to it, and `who` (of that team or another) accepts it."""
        self.request_takeover(self._holder(), team)
        self.publish_packet(True)
        self.accept_takeover(who, True)

    @rule(rare=st.integers(0, 4), who=st.sampled_from((ALICE, ALICE, *HUMANS)))
    def narrow_authority(self, rare: int, who: Actor) -> None:
        """Someone (mostly the holder) narrows the authority through the API."""
        if rare == 0:
            self.declare(NARROW, who)

    @rule(rare=st.integers(0, 9))
    def close(self, rare: int) -> None:
        if rare == 0 and self.live.opened and not self.live.closed and self.live.holder is not None:
            self.stops.add(INC)
            holder = next(h for h in HUMANS if h.id == self.live.holder.identity)
            self.api(holder, ev.IncidentClosed, ev.IncidentClosedPayload(resolution="done"))

    @rule(engage=st.integers(0, 4))
    def kill_switch(self, engage: int) -> None:
        """Engaged at any point (one in five), released otherwise."""
        if engage == 0:
            self.stops.add("_global")
            self.api(
                ROOT_ADMIN,
                ev.KillSwitchEngaged,
                ev.KillSwitchEngagedPayload(reason="drill"),
                incident=ev.GLOBAL_INCIDENT,
            )
        elif self.control.kill_switch:
            self.api(
                ROOT_ADMIN,
                ev.KillSwitchReleased,
                ev.KillSwitchReleasedPayload(reason="over"),
                incident=ev.GLOBAL_INCIDENT,
            )
            self.stops.discard("_global")

    # -- honest executors -------------------------------------------------------------

    def _alive(self, x: str) -> bool:
        return x not in self.frozen

    @rule(x=st.sampled_from(EXECUTORS))
    def executor_claim(self, x: str) -> None:
        """Claim the oldest undecided directive (or take over a frozen executor's claim,
        fenced by a new generation), re-check it on the whole log, accept and start."""
        if not self._alive(x):
            return
        for cid, record in self.live.directives.items():
            claim = self.claims.get(cid)
            if claim is not None and (claim.executor not in self.frozen or claim.phase == "done"):
                continue
            if record.status not in (
                DirectiveStatus.ISSUED,
                DirectiveStatus.ACCEPTED,
                DirectiveStatus.STARTED,
            ):
                continue
            if claim is not None and claim.phase == "acted":
                self.orphans.append((claim.executor, cid))
            self.generation += 1
            self.claims[cid] = Claim(x, self.generation)
            if record.status is DirectiveStatus.STARTED:
                # Recovery: StepStarted without an outcome. Never re-run blindly.
                self._unknown(cid, "crashed between StepStarted and the outcome")
                self.claims[cid].phase = "done"
                return
            refusal = recheck(self.live, cid, self.control, executor_id=x, owns_claim=True)
            action = record.action
            seen = record.status  # what this executor looked at
            if self.land_others:
                # What other producers sent before this executor's look lands after it,
                # before its own write: its decision rests on a view that is now behind.
                for other in [p for p in self.in_flight if p != x]:
                    self.land(other)
            if refusal is not None:
                if seen is DirectiveStatus.ISSUED:
                    self.service(
                        EXECUTOR,
                        ev.DirectiveRefused,
                        ev.DirectiveRefusedPayload(
                            action=action,
                            reason=refusal.reason,
                            detail=refusal.detail,
                            refused_by="executor",
                            checked_at_sequence=self.live.sequence,
                        ),
                        cid,
                    )
                self.claims[cid].phase = "done"
                return
            if seen is DirectiveStatus.ISSUED:
                self.service(
                    EXECUTOR,
                    ev.DirectiveAccepted,
                    ev.DirectiveAcceptedPayload(
                        action=action,
                        consequential=action.action in CONSEQUENTIAL_ACTIONS,
                        checked_at_sequence=self.live.sequence,
                    ),
                    cid,
                )
            self.service(
                EXECUTOR,
                ev.StepStarted,
                ev.StepStartedPayload(
                    action=action, idempotency_key=cid, executor_id=x, fencing_token=self.generation
                ),
                cid,
            )
            self.claims[cid].phase = "started"
            return

    def _work(self, x: str, phase: str) -> tuple[str, str | None]:
        for candidate in (x, *EXECUTORS):
            cid = self._mine(candidate, phase)
            if cid is not None and self._alive(candidate):
                return candidate, cid
        return x, None

    def _mine(self, x: str, phase: str) -> str | None:
        for cid, claim in self.claims.items():
            if claim.executor == x and claim.phase == phase:
                return cid
        return None

    @rule(x=st.sampled_from(EXECUTORS))
    def executor_act(self, x: str) -> None:
        """The fenced gate (claim still ours, no stop in the fast path), then the look
        after it, then the side effect. (`x`, or else any live executor with work.)"""
        x, cid = self._work(x, "started")
        if cid is None:
            return
        claim = self.claims[cid]
        record = self.live.directives[cid]
        if self.stops & {INC, "_global"}:
            self._not_started(cid, "stopped at the gate")
            claim.phase = "done"
            return
        if LOOK_AFTER_GATE:
            refusal = recheck(self.live, cid, self.control, executor_id=x, owns_claim=True)
            if refusal is not None:
                if refusal.reason.value != "duplicate":
                    self._not_started(cid, refusal.detail)
                claim.phase = "done"
                return
        self._side_effect(cid, record.action)
        claim.phase = "acted"

    @rule(x=st.sampled_from(EXECUTORS), outcome=st.sampled_from(("ok", "failed", "timeout")))
    def executor_finish(self, x: str, outcome: str) -> None:
        x, cid = self._work(x, "acted")
        if cid is None:
            return
        self._outcome(cid, outcome)
        self.claims[cid].phase = "done"

    def _outcome(self, cid: str, outcome: str) -> None:
        action = self.live.directives[cid].action
        if outcome == "ok":
            self.service(
                EXECUTOR,
                ev.StepSucceeded,
                ev.StepSucceededPayload(
                    action=action,
                    result=ActionResult(idempotency_key=cid, changed=True, before={}, after={}),
                    summary="done",
                    duration_ms=1.0,
                ),
                cid,
            )
        elif outcome == "failed":
            self.service(
                EXECUTOR,
                ev.StepFailed,
                ev.StepFailedPayload(action=action, error="rejected", summary="x", duration_ms=1),
                cid,
            )
        else:
            self._unknown(cid, "no answer within the step timeout")

    def _not_started(self, cid: str, error: str) -> None:
        action = self.live.directives[cid].action
        self.service(
            EXECUTOR,
            ev.StepFailed,
            ev.StepFailedPayload(
                action=action, error=error, summary="stopped", duration_ms=0, not_started=True
            ),
            cid,
        )

    def _unknown(self, cid: str, reason: str) -> None:
        action = self.live.directives[cid].action
        self.service(
            EXECUTOR,
            ev.StepOutcomeUnknown,
            ev.StepOutcomeUnknownPayload(action=action, reason=reason, observation=Observation()),
            cid,
        )

    @rule(outcome=st.sampled_from(("ok", "failed")))
    def late_outcome(self, outcome: str) -> None:
        """An executor that acted, froze, lost its claim and came back reports late."""
        for x, cid in self.orphans:
            if self._alive(x):
                self.orphans.remove((x, cid))
                self._outcome(cid, outcome)
                return

    @rule(x=st.sampled_from(EXECUTORS))
    def freeze(self, x: str) -> None:
        self.frozen.add(x)

    @rule(x=st.sampled_from(EXECUTORS))
    def revive(self, x: str) -> None:
        """Back: its records in flight land first (its producer retries them), then its
        claim goes on where it was, unless another executor took it (fenced)."""
        self.frozen.discard(x)
        self.land(x)
        if x in self.pending:
            cid, generation, phase = self.pending.pop(x)
            claim = self.claims.get(cid)
            if claim is not None and claim.executor == x and claim.generation == generation:
                claim.phase = phase

    # -- delayed delivery ---------------------------------------------------------------

    @rule(x=st.sampled_from(EXECUTORS))
    def executor_stalls(self, x: str) -> None:
        """An executor claims and decides, sends its decision (a refusal, or its
        DirectiveAccepted and StepStarted), and freezes before the acknowledgement:
        its records are in flight, its claim never got past "claimed"."""
        if not self._alive(x):
            return
        generation = self.generation
        self.stalling = x
        try:
            self.executor_claim(x)
        finally:
            self.stalling = None
        if self.generation == generation:
            return
        cid = next(c for c, k in self.claims.items() if k.generation == self.generation)
        claim = self.claims[cid]
        if self.in_flight.get(x):
            self.pending[x] = (cid, claim.generation, claim.phase)
            claim.phase = "claimed"
        self.frozen.add(x)

    @rule(producer=st.sampled_from((*EXECUTORS, "api")))
    def deliver(self, producer: str) -> None:
        """A producer's records in flight land (whether or not it is still frozen)."""
        self.land(producer)

    @rule(x=st.sampled_from(EXECUTORS))
    def claim_as_late_records_land(self, x: str) -> None:
        """An executor claims (or takes over a frozen one's claim) and another
        producer's records in flight land between its look and its own write."""
        self.land_others = True
        try:
            self.executor_claim(x)
        finally:
            self.land_others = False

    @rule(x=st.sampled_from(EXECUTORS), action=st.sampled_from(ACTIONS))
    def refusal_in_flight(self, x: str, action: Action) -> None:
        """The kill switch blips while a directive waits: one executor refuses it and
        freezes with the refusal in flight; the switch is released; the other executor
        takes the claim over, looks, and the stale refusal lands before its own records
        (the fold must still show the step it then starts, DESIGN 2 and 9)."""
        y = next(e for e in EXECUTORS if e != x)
        if not (self._alive(x) and self._alive(y)) or self.stops:
            return
        self.holder_directs(action, 1)
        self.kill_switch(0)
        self.executor_stalls(x)
        self.kill_switch(1)
        self.claim_as_late_records_land(y)

    @rule(rare=st.integers(0, 1), x=st.sampled_from(EXECUTORS), action=st.sampled_from(ACTIONS))
    def resume_in_flight(self, rare: int, x: str, action: Action) -> None:
        """The holder resumes (a hold first, if none is in force) through one API
        replica, which lifts the stop in PostgreSQL; the record is in flight while
        another replica's records land (with `rare` 0: a packet, a takeover accepted by
        the addressed specialist and a new hold by an integration), then it lands: the
        fold must re-check it (DESIGN 1: only the holder resumes). Then the new holder
        directs and an executor takes the step."""
        holder = self._holder()
        if self.live.hold is None:
            self.hold(holder, 0)
        event = ev.new_event(
            ev.ResumeDirected,
            incident_id=INC,
            payload=ev.ResumeDirectedPayload(),
            actor=holder,
            producer=API,
        )
        assert isinstance(event, ev.ResumeDirected)
        if self.live.hold is None or check_control(self.live, event) is not None:
            return
        self.stalling = "api"
        try:
            self.write(event, API)
        finally:
            self.stalling = None
        self.stops.discard(INC)
        if rare == 0:
            self.publish_packet(False)
            self.accept_takeover(DANA, True)
            self.hold(Actor.service(INTEGRATION), 0)
            self.land("api")
            self.holder_directs(action, 1)
            self.executor_claim(x)
            self.executor_act(x)

    # -- honest verifier ----------------------------------------------------------------

    @rule(
        verdict=st.sampled_from((Verdict.RECOVERED, Verdict.NOT_RECOVERED, Verdict.STALE_METRICS))
    )
    def verify(self, verdict: Verdict) -> None:
        for cid, record in self.live.directives.items():
            if cid in self.live.snapshot_correlations or not record.consequential:
                continue
            if record.status not in (
                DirectiveStatus.SUCCEEDED,
                DirectiveStatus.FAILED,
                DirectiveStatus.OUTCOME_UNKNOWN,
            ):
                continue
            now = ev.utcnow()
            region = (action_regions(record.action) or ("us-east",))[0]
            reading = MetricsReading(
                region=region, error_rate=0.0, queue_depth=1, request_rate=10, observed_at=now
            )
            self.service(
                VERIFIER,
                ev.VerificationSnapshot,
                ev.VerificationSnapshotPayload(
                    trigger="step",
                    step_correlation_id=cid,
                    regions=(
                        ev.RegionReadings(
                            region=region,
                            readings=(reading,),
                            ages_seconds=(0.0,),
                            healthy=verdict is Verdict.RECOVERED,
                            fresh=True,
                        ),
                    ),
                    criteria=VerificationCriteria(),
                    verdict=verdict,
                    detail=verdict.value,
                    window_started_at=now,
                    window_ended_at=now,
                ),
                cid,
            )
            return

    @rule(
        kinds=st.lists(st.sampled_from(READING_KINDS), min_size=1, max_size=2),
        samples=st.integers(1, 3),
    )
    def verifier_judges(self, kinds: list[str], samples: int) -> None:
        """The verifier judges a window of readings with `judge`: healthy ones, and the
        ones that are no data (missing values, no traffic, too old, too few). With no
        finished step waiting for its verdict, the holder directs one and it runs."""
        if not self._verifiable():
            self.holder_directs(ACTIONS[1], 1)
            for x in EXECUTORS:
                self.executor_claim(x)
                self.executor_act(x)
                self.executor_finish(x, "ok")
        for cid, record in self.live.directives.items():
            if cid in self.live.snapshot_correlations or record.status not in (
                DirectiveStatus.SUCCEEDED,
                DirectiveStatus.FAILED,
                DirectiveStatus.OUTCOME_UNKNOWN,
            ):
                continue
            now = ev.utcnow()
            step_time = now - timedelta(seconds=20)
            criteria = VerificationCriteria(samples=samples, max_reading_age_seconds=15)
            window = {
                region: _readings(kind, region, step_time, now, samples)
                for region, kind in zip(("us-east", "eu-west"), kinds, strict=False)
            }
            j = judge(criteria, window, (), step_time=step_time, now=now)
            self.service(
                VERIFIER,
                ev.VerificationSnapshot,
                ev.VerificationSnapshotPayload(
                    trigger="step",
                    step_correlation_id=cid,
                    regions=j.regions,
                    criteria=criteria,
                    verdict=j.verdict,
                    detail=j.detail,
                    window_started_at=step_time,
                    window_ended_at=now,
                ),
                cid,
            )
            return

    def _verifiable(self) -> bool:
        return any(
            cid not in self.live.snapshot_correlations
            and record.status
            in (DirectiveStatus.SUCCEEDED, DirectiveStatus.FAILED, DirectiveStatus.OUTCOME_UNKNOWN)
            for cid, record in self.live.directives.items()
        )

    @rule(content=st.sampled_from(("runbook", "wide")), who=st.sampled_from((None, ALICE, DANA)))
    def widen_authority(self, content: str, who: Actor | None) -> None:
        """The holder (or someone) tries to widen the boundary in force without a second
        person: the runbook again after a narrowing, or one without the reservation and
        with a larger blast radius."""
        if who is None:
            holder = self.live.holder.identity if self.live.holder else "alice"
            who = next(h for h in HUMANS if h.id == holder)
        self.declare(RUNBOOK if content == "runbook" else WIDE, who)

    @rule(
        x=st.sampled_from(EXECUTORS),
        action=st.sampled_from(ACTIONS),
        disruption=st.sampled_from(DISRUPTIONS),
    )
    def race_the_gate(self, x: str, action: Action, disruption: str) -> None:
        """The adversary's timing: a record lands exactly between an executor's last look
        and its side effect (a takeover, a hold an integration asks for, a narrower
        authority, a verification, a close, a hold, the kill switch). If no step is
        waiting at its gate, the holder directs one and an executor takes it there."""
        x, cid = self._work(x, "started")
        if cid is None:
            self.holder_directs(action, 1)
            self.executor_claim(x)
            x, cid = self._work(x, "started")
            if cid is None:
                return
        if disruption == "takeover":
            self.request_takeover(self._holder(), "database-platform")
        elif disruption == "integration_hold":
            self.hold(Actor.service(INTEGRATION), 0)
        elif disruption == "hold":
            self.hold(self._holder(), 0)
        elif disruption == "narrow":
            self.declare(NARROW, self._holder())
        elif disruption == "verify":
            self.verify(Verdict.RECOVERED)
        elif disruption == "close":
            self.close(0)
        elif disruption == "kill":
            self.kill_switch(0)
        elif disruption == "accept":
            self.publish_packet(False)
            self.accept_takeover(DANA, True)
        self.executor_act(x)

    def _holder(self) -> Actor:
        holder = self.live.holder.identity if self.live.holder else "alice"
        return next(h for h in HUMANS if h.id == holder)

    # -- the adversary ------------------------------------------------------------------

    @rule(
        event_type=st.sampled_from(sorted(OWNER)),
        pick=st.integers(min_value=0, max_value=50),
    )
    def forge(self, event_type: str, pick: int) -> None:
        """A well-formed record of any type, aimed at a live directive, forged every way
        at once (each forgery is its own record on the topic)."""
        cids = list(self.live.directives) or [None]
        cid = cids[pick % len(cids)]
        template = TEMPLATES[event_type]
        incident = ev.GLOBAL_INCIDENT if event_type.startswith("KillSwitch") else INC
        event = template.model_copy(
            update={"event_id": uuid.uuid4(), "incident_id": incident, "correlation_id": cid}
        )
        owner = OWNER[event_type]
        event = restamp(event, PRINCIPAL_OF_ROLE[owner], owner)
        variants = [*forgeries(event, self.keys), *_bound_wrong(event, self.keys)]
        for f in variants:
            folded = self.consume(
                Raw(f.value, f.key, f.headers, honest=False, control=incident == ev.GLOBAL_INCIDENT)
            )
            if folded:
                self.fail(f"forged {event_type} ({f.name}) was not dead-lettered")
        # Genuinely signed, on the wrong topic: a kill switch on conn.events, an incident's
        # record on conn.control.
        value = encode(event)
        wrong = Raw(
            value,
            incident.encode(),
            self.keys.headers(value, PRINCIPAL_OF_ROLE[owner]),
            honest=False,
            control=incident != ev.GLOBAL_INCIDENT,
        )
        if self.consume(wrong):
            self.fail(f"{event_type} on the wrong topic was not dead-lettered")

    @rule(pick=st.integers(min_value=0, max_value=10_000))
    def replay(self, pick: int) -> None:
        """A genuine record, re-published verbatim later (redelivery, a hand replay)."""
        genuine = [r for r in self.log if r.honest]
        if genuine:
            r = genuine[pick % len(genuine)]
            self.consume(Raw(r.value, r.key, r.headers, honest=True, control=r.control))

    @rule(pick=st.integers(min_value=0, max_value=10_000), retarget=st.booleans())
    def replay_elsewhere(self, pick: int, retarget: bool) -> None:
        """A genuine record of INC written under another incident's key, or with its
        incident_id rewritten (the genuine signature no longer matches)."""
        genuine = [r for r in self.log if r.honest and not r.control]
        if not genuine:
            return
        r = genuine[pick % len(genuine)]
        value = r.value.replace(INC.encode(), OTHER.encode()) if retarget else r.value
        if self.consume(Raw(value, OTHER.encode(), r.headers, honest=False)):
            self.fail("a genuine record re-aimed at another incident was folded")

    # -- the oracle ---------------------------------------------------------------------

    def _side_effect(self, cid: str, action: Action) -> None:
        """DESIGN.md invariants 1-7, checked at the moment of the side effect."""
        o = self.oracle
        directive = o.directives.get(cid)
        if directive is None:
            self.fail(f"side effect for {cid} without a genuine DirectiveIssued")
            return
        o.side_effects[cid] = o.side_effects.get(cid, 0) + 1
        issuer = directive.actor
        problems = []
        if o.side_effects[cid] > 1:
            problems.append("a second side effect for the same correlation_id")
        if issuer.kind != "human" or o.holder != issuer.id:
            problems.append(f"{issuer.id} does not hold the conn ({o.holder} does)")
        if o.kill:
            problems.append("the kill switch is engaged")
        if o.hold:
            problems.append("the incident is on hold")
        if o.closed:
            problems.append("the incident is closed")
        if o.unverified - {cid}:
            problems.append(f"previous step(s) {sorted(o.unverified - {cid})} unverified")
        if cid in o.stale:
            problems.append("the incident's state changed since the directive (stale)")
        outside = o.allowed(action, issuer)
        if outside:
            problems.append(f"outside the authority in force: {outside}")
        if action.action in CONSEQUENTIAL_ACTIONS:
            o.consequential_effects += 1
            o.unverified.add(cid)
            a = o.authority or {}
            if o.consequential_effects > int(a.get("max_steps", 0)):  # type: ignore[call-overload]
                problems.append("more consequential steps than the blast radius allows")
        for problem in problems:
            self.fail(f"side effect {action.action.value} ({cid}): {problem}")

    @invariant()
    def nothing_violated(self) -> None:
        assert not self.forged_folded, self.forged_folded
        assert not self.violations, self.violations
        assert not self.oracle.problems, self.oracle.problems

    @invariant()
    def no_executed_step_is_hidden(self) -> None:
        """DESIGN 2 and 9: StepStarted is in the log before the side effect, and the log
        shows every step that ran as started or finished (never as issued, accepted or
        refused), so a packet and a takeover see it."""
        for cid in self.oracle.side_effects:
            status = self.live.directives[cid].status
            assert status not in (
                DirectiveStatus.ISSUED,
                DirectiveStatus.ACCEPTED,
                DirectiveStatus.REFUSED,
            ), f"side effect of {cid} hidden: the log shows it {status.value}"

    @invariant()
    def unknown_outcomes_are_in_the_packet(self) -> None:
        o = self.oracle
        unknown = {
            cid
            for cid, first in o.first_outcome.items()
            if first == "StepOutcomeUnknown" and cid not in o.recovered
        }
        missing = unknown - _packet_partial(self.live)
        assert not missing, f"unknown outcomes missing from the packet: {missing}"

    @invariant()
    def replay_equals_live(self) -> None:
        """The fold from scratch over what verified equals the live, incremental fold."""
        events = [e for e in self.trusted if e is not None and not e.incident_id.startswith("_")]
        control = ControlState()
        for e in self.trusted:
            if e is not None and e.incident_id == ev.GLOBAL_INCIDENT:
                evolve_control(control, e)
        assert fold(events, INC) == self.live
        assert control == self.control

    def teardown(self) -> None:
        """Once per run: every raw record verified again from its bytes gives the same
        trusted events (a replay with `conn replay` trusts exactly what the consumers
        trusted)."""
        again: list[ev.Envelope | None] = []
        for raw in self.log:
            try:
                again.append(
                    open_record(
                        self.keyring,
                        value=raw.value,
                        key=raw.key,
                        headers=raw.headers,
                        on_control=raw.control,
                    ).event
                )
            except UnreadableRecord:
                again.append(None)
        assert again == self.trusted


# Weights: the honest flow is drawn more often than the rest (an alias is one more rule).
for _name, _times in (
    ("holder_directs", 5),
    ("executor_claim", 5),
    ("executor_act", 5),
    ("executor_finish", 2),
    ("verify", 2),
    ("resume", 1),
    ("accept_takeover", 1),
    ("request_takeover", 3),
    ("hold", 1),
    ("narrow_authority", 1),
    ("race_the_gate", 4),
    ("forge", 2),
    ("verifier_judges", 3),
    ("refusal_in_flight", 2),
    ("handoff", 2),
    ("resume_in_flight", 2),
):
    for _i in range(_times):
        setattr(Adversary, f"{_name}_{_i}", getattr(Adversary, _name))

TEMPLATES: dict[str, ev.Envelope] = {}


def _templates() -> None:
    from builders import one_of_each

    for event in one_of_each():
        TEMPLATES[event.event_type] = event


_templates()

Adversary.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAdversary = Adversary.TestCase


def _takeover_between_look_and_gate() -> Adversary:
    m = Adversary()
    m.holder_directs(ACTIONS[1], 1)
    m.executor_claim("x1")
    m.request_takeover(ALICE, "database-platform")
    m.executor_act("x1")
    return m


def test_the_oracle_sees_a_takeover_between_the_look_and_the_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine's check on itself (issue 15 b, reverted by hand): without the look
    after the gate, a handoff requested after the executor's look runs the step."""
    monkeypatch.setattr(sys.modules[__name__], "LOOK_AFTER_GATE", False)
    m = _takeover_between_look_and_gate()
    assert any("stale" in v for v in m.violations), m.violations


def test_with_the_look_after_the_gate_the_step_is_not_started() -> None:
    m = _takeover_between_look_and_gate()
    assert m.violations == []
    (cid,) = m.live.directives
    assert m.live.directives[cid].not_started
    assert m.oracle.side_effects == {}


def test_a_stale_refusal_that_lands_before_the_new_owners_start_hides_nothing() -> None:
    """Delayed delivery (issue 15): a fenced-out executor's refusal lands between the new
    owner's look and its own records. The step the new owner then runs shows as started
    (DESIGN 2 and 9), and the machine sees nothing wrong."""
    m = Adversary()
    m.refusal_in_flight("x1", ACTIONS[1])
    (cid,) = m.live.directives
    landed = [e.event_type for e in m.trusted[-3:] if e is not None]
    assert landed == ["DirectiveRefused", "DirectiveAccepted", "StepStarted"]
    m.executor_act("x2")
    assert m.oracle.side_effects == {cid: 1}
    assert m.live.directives[cid].status is DirectiveStatus.STARTED
    m.no_executed_step_is_hidden()
    assert m.violations == []


def test_a_resume_overtaken_by_a_takeover_resumes_nothing() -> None:
    """Delayed delivery (issue 15): the holder's resume, checked by one API replica,
    lands after another replica's takeover and a new hold: the fold re-checks it and
    the hold stays (DESIGN 1: only the holder resumes)."""
    m = Adversary()
    m.hold(ALICE, 0)
    m.resume_in_flight(0, "x1", ACTIONS[1])
    assert m.live.holder is not None and m.live.holder.identity == "dana"
    assert m.live.hold is not None and m.oracle.hold
    assert m.live.ignored_controls == 1 and not m.in_flight
    assert m.live.directives == {} and m.oracle.side_effects == {}
    assert m.violations == []
