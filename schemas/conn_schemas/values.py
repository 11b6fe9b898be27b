"""Value types carried inside event payloads: actors, bounded actions, expectations,
the authority boundary, verdicts and refusal reasons.

Everything here is a frozen pydantic model. Free text is only ever carried as a
human note (`rationale`, `note`); no code turns it into an action.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every contract model: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- input policy --------------------------------------------------------------------
#
# One policy for every string and list that crosses a trust boundary (API request
# bodies, event payloads, packets; README "Input limits"). Free text is normalised to
# NFC, bounded in length and free of control characters: Unicode category Cc,
# bidirectional overrides and isolates, line/paragraph separators and lone surrogates.
# Only fields that document newlines (notes, details, rationale) accept "\n", and
# nothing accepts "\r" or "\t". Identifiers match strict patterns: DNS-1123 labels for
# every name that maps to a Kubernetes or feature-flag name (regions, flags, rules,
# pools, tiers, teams), so no '/', '.', '..', upper case or leading/trailing '-'. Every
# list and map is bounded. A value that breaks the policy is refused by the models:
# the API answers 422 and a consumer dead-letters the record, with the reason.

_FORBIDDEN = (
    r"\u0000-\u0009\u000b-\u001f\u007f-\u009f"
    r"\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
)
MULTILINE_PATTERN = f"^[^{_FORBIDDEN}]*$"
"""JSON Schema pattern of multi-line free text ("\\n" is its only control character)."""
LINE_PATTERN = rf"^[^\u000a{_FORBIDDEN}]*$"
"""JSON Schema pattern of single-line free text."""

_REFUSED = (
    r"\u0000-\u0009\u000b-\u001f\u007f-\u009f\ud800-\udfff"
    r"\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
)
_REFUSED_IN = {True: re.compile(f"[{_REFUSED}]"), False: re.compile(f"[\\n{_REFUSED}]")}
"""What `forbidden_char` refuses, by `multiline`: Unicode categories Cc and Cs, the
bidirectional overrides and isolates (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
the line and paragraph separators, and "\\n" where text is one line. One compiled
class scanned in C, not a Python loop over `unicodedata.category` per character
(tests/unit/test_input_policy_scan.py checks it against that rule for every code
point)."""


def forbidden_char(text: str, *, multiline: bool) -> str | None:
    """The first character the policy refuses in free text, if any."""
    found = _REFUSED_IN[multiline].search(text)
    return None if found is None else found.group()


def _text_validator(max_length: int, *, multiline: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        bad = forbidden_char(value, multiline=multiline)
        if bad is not None:
            raise ValueError(f"control character U+{ord(bad):04X} is not allowed here")
        value = unicodedata.normalize("NFC", value)
        if len(value) > max_length:
            raise ValueError(f"at most {max_length} characters (after NFC normalisation)")
        return value

    return check


def clean_text(text: str, limit: int, *, multiline: bool = False) -> str:
    """Make foreign text (an exception message, tool output) fit the policy: NFC,
    control characters replaced by a space (keeping "\\n" where allowed), and cut to
    `limit` characters. For services building events from text they did not write."""
    text = unicodedata.normalize("NFC", text)
    if forbidden_char(text, multiline=multiline) is not None:
        text = "".join(
            " " if forbidden_char(ch, multiline=multiline) is not None else ch for ch in text
        )
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def _text(max_length: int, *, multiline: bool, min_length: int = 0) -> Any:
    return (
        Field(
            min_length=min_length,
            max_length=max_length,
            json_schema_extra={"pattern": MULTILINE_PATTERN if multiline else LINE_PATTERN},
        ),
        AfterValidator(_text_validator(max_length, multiline=multiline)),
    )


MAX_LINE = 300
MAX_DETAIL = 2000
MAX_NOTE = 4000
MAX_MACHINE_TEXT = 4000

Line = Annotated[str, *_text(MAX_LINE, multiline=False)]
"""One line of free text (a title, an alert summary or severity, a subject)."""
NonEmptyLine = Annotated[str, *_text(MAX_LINE, multiline=False, min_length=1)]
Detail = Annotated[str, *_text(MAX_DETAIL, multiline=True)]
"""A human note of a few lines (details, rationale): "\\n" allowed."""
NonEmptyDetail = Annotated[str, *_text(MAX_DETAIL, multiline=True, min_length=1)]
Note = Annotated[str, *_text(MAX_NOTE, multiline=True, min_length=1)]
"""An incident-record note: multi-line."""
MachineText = Annotated[str, *_text(MAX_MACHINE_TEXT, multiline=True)]
"""Text a service wrote (an error, a summary, a reason); services build it with
`clean_text(..., MAX_MACHINE_TEXT, multiline=True)` from anything foreign."""

DNS_LABEL_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
Label = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label (regions, flags, rules, pools, tiers, teams): lower-case letters,
digits and '-', not at either end, at most 63 characters."""
Region = Label
Team = Label
SignalName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""A metric signal name (Prometheus style, e.g. 'p99_ms')."""

TARGET_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)?$"
Target = Annotated[str, Field(min_length=1, max_length=127, pattern=TARGET_PATTERN)]
"""An exact action target: a pool or tier label, or 'flag/rule' (two labels)."""

_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9_@+-]*[A-Za-z0-9])?"
IDENTIFIER_PATTERN = rf"^{_SEGMENT}(?:\.{_SEGMENT})*$"
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)]
"""An identity or name that is not a Kubernetes name (actor ids such as
'alice@example.com', services, authority name and version): letters, digits and
'_@+-' in dot-separated segments that start and end with a letter or digit; no
'/', no '..', no spaces."""
Name = Identifier
"""Kept for compatibility: a name that is not free text."""

TOKEN_PATTERN = r"^[\x21-\x7e]+$"
Sha256Hex = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest, lowercase hex (e.g. a decision packet's hash)."""

Token = Annotated[str, Field(min_length=1, max_length=256, pattern=TOKEN_PATTERN)]
"""A machine-made opaque id (correlation and idempotency keys, producer, executor id,
hashes): printable ASCII without spaces."""


def bounded_lines(lines: list[str], limit: int = 64) -> tuple[str, ...]:
    """At most `limit` one-line texts that fit the policy; when there are more, the
    last one says how many were left out (nothing is dropped silently)."""
    fitted = [clean_text(line, MAX_LINE) for line in lines]
    if len(fitted) > limit:
        fitted = [*fitted[: limit - 1], f"... and {len(fitted) - limit + 1} more"]
    return tuple(fitted)


def fit_identifier(raw: str | None, default: str = "unknown") -> str:
    """Make a foreign name (an alert label, a PagerDuty service) an Identifier:
    anything but letters, digits, '_' and '-' becomes '-', cut to 128."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", (raw or "").strip())
    name = re.sub(r"-{2,}", "-", name)[:128].strip("-_")
    return name or default


def fit_token(raw: str) -> str:
    """Make a foreign opaque id (a fingerprint, an incident key) a Token: kept when it
    already is one, else replaced by a stable digest of it."""
    if 0 < len(raw) <= 256 and re.fullmatch(r"[\x21-\x7e]+", raw):
        return raw
    return "sha256:" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


MAX_LIST = 64
"""Default bound of a list in a payload."""
MAX_REGIONS = 8
MAX_GRANTS = 32
"""Grants, reservations and targets per grant in an authority boundary."""
MAX_LABELS = 32
MAX_EXTRA_SIGNALS = 8
MAX_JSON_BYTES = 32_768
"""Bound of a free-form JSON object (raw tool output, before/after state)."""


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    raw = orjson.dumps(value)
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"{len(raw)} bytes of JSON > {MAX_JSON_BYTES}")
    # NUL is the one character no consumer can store (PostgreSQL text and jsonb refuse
    # it): a record carrying one would stop the read model's writer, so it is refused.
    if b"\\u0000" in raw and _has_nul(value):
        raise ValueError("a NUL character (U+0000) in a JSON object")
    return value


def fit_json(value: dict[str, Any], limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A foreign JSON object (a target's raw answer) made to fit `JsonObject`: unchanged
    when it fits; else a marked stand-in — `truncated`, its size, its SHA-256 and as much
    of its JSON text as fits — never an error after the call succeeded, never a silent cut."""
    if _has_nul(value):  # kept, as U+FFFD: no consumer can store a NUL
        value = _without_nul(value)
    try:
        raw = orjson.dumps(value)
    except TypeError:  # e.g. a lone surrogate from "\ud800" in the target's JSON
        raw = json.dumps(value, ensure_ascii=True, default=repr).encode()
    else:
        if len(raw) <= limit and len(value) <= 256:
            return value
    text = raw.decode("utf-8")
    keep = limit // 2
    while True:
        fitted: dict[str, Any] = {
            "truncated": True,
            "bytes": len(raw),
            "keys": len(value),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "head": text[:keep],
        }
        if len(orjson.dumps(fitted)) <= limit:
            return fitted
        keep //= 2


JsonObject = Annotated[
    dict[str, Any],
    Field(max_length=256, json_schema_extra={"x-conn-max-bytes": MAX_JSON_BYTES}),
    AfterValidator(_bounded_json),
]
"""A free-form JSON object (tool output), at most MAX_JSON_BYTES encoded."""


def _not_reserved(value: Any) -> Any:
    if isinstance(value, str) and value.casefold() in RESERVED_INCIDENT_IDS:
        raise ValueError(f"{value!r} is a reserved identifier, not an incident id")
    return value


GLOBAL_INCIDENT = "_global"
"""`incident_id` of global control events (kill switch) on `conn.control`."""
RESERVED_INCIDENT_IDS = frozenset({GLOBAL_INCIDENT, "global", "control", "kill-switch"})

INCIDENT_ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,126}[A-Za-z0-9])?$"
IncidentId = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=INCIDENT_ID_PATTERN),
    BeforeValidator(_not_reserved),
]
"""An incident id ('INC-20261204-a1b2c3'): letters, digits, '_' and '-', starting and
ending with a letter or digit; reserved ids (the global-control id) are refused."""


# --- who ---------------------------------------------------------------------------


class Role(StrEnum):
    COMMANDER = "commander"
    SPECIALIST = "specialist"
    OBSERVER = "observer"
    INTEGRATION = "integration"
    ADMIN = "admin"


class Actor(Frozen):
    """Who appended an event: an authenticated human, or a service."""

    kind: Literal["human", "service"]
    id: Identifier
    roles: tuple[Role, ...] = Field(default=(), max_length=8)
    team: Team | None = None

    @classmethod
    def service(cls, name: str) -> Actor:
        return cls(kind="service", id=name)


# --- bounded actions -------------------------------------------------------------------


class ActionType(StrEnum):
    GATHER_STATE = "gather_state"
    DISABLE_FLAG_RULE = "disable_flag_rule"
    DRAIN_WORKER_POOL = "drain_worker_pool"
    RESTART_DEPENDENCY_TIER = "restart_dependency_tier"
    VERIFY = "verify"
    UPDATE_INCIDENT_RECORD = "update_incident_record"
    ENABLE_FLAG_RULE = "enable_flag_rule"
    """The recorded inverse of disable_flag_rule (issued by `conn direct undo`)."""
    SCALE_WORKER_POOL = "scale_worker_pool"
    """The recorded inverse of drain_worker_pool: back to the pool's previous size."""


CONSEQUENTIAL_ACTIONS = frozenset(
    {
        ActionType.DISABLE_FLAG_RULE,
        ActionType.DRAIN_WORKER_POOL,
        ActionType.RESTART_DEPENDENCY_TIER,
        ActionType.ENABLE_FLAG_RULE,
        ActionType.SCALE_WORKER_POOL,
    }
)
"""Actions that change a target system (and so must be verified before the next)."""

READ_ONLY_ACTIONS = frozenset({ActionType.GATHER_STATE, ActionType.VERIFY})


class GatherState(Frozen):
    action: Literal[ActionType.GATHER_STATE] = ActionType.GATHER_STATE
    regions: tuple[Region, ...] = Field(default=(), max_length=MAX_REGIONS)


class DisableFlagRule(Frozen):
    action: Literal[ActionType.DISABLE_FLAG_RULE] = ActionType.DISABLE_FLAG_RULE
    flag: Label
    rule: Label
    region: Region


class DrainWorkerPool(Frozen):
    action: Literal[ActionType.DRAIN_WORKER_POOL] = ActionType.DRAIN_WORKER_POOL
    pool: Label
    region: Region


class RestartDependencyTier(Frozen):
    action: Literal[ActionType.RESTART_DEPENDENCY_TIER] = ActionType.RESTART_DEPENDENCY_TIER
    tier: Label
    region: Region


class EnableFlagRule(Frozen):
    """Enable one flag rule again (the inverse of disable_flag_rule)."""

    action: Literal[ActionType.ENABLE_FLAG_RULE] = ActionType.ENABLE_FLAG_RULE
    flag: Name
    rule: Name
    region: Name


MAX_POOL_REPLICAS = 1000
"""Upper bound of a scale_worker_pool directive (a bounded action, never a free number)."""


class ScaleWorkerPool(Frozen):
    """Scale one worker pool to an exact size (the inverse of drain_worker_pool: the
    size recorded before the drain). Never to 0: draining is drain_worker_pool, with
    its own blast-radius limit."""

    action: Literal[ActionType.SCALE_WORKER_POOL] = ActionType.SCALE_WORKER_POOL
    pool: Name
    region: Name
    replicas: int = Field(ge=1, le=MAX_POOL_REPLICAS)


class Verify(Frozen):
    action: Literal[ActionType.VERIFY] = ActionType.VERIFY
    regions: tuple[Region, ...] = Field(default=(), max_length=MAX_REGIONS)


class UpdateIncidentRecord(Frozen):
    action: Literal[ActionType.UPDATE_INCIDENT_RECORD] = ActionType.UPDATE_INCIDENT_RECORD
    note: Note


Action = Annotated[
    GatherState
    | DisableFlagRule
    | DrainWorkerPool
    | RestartDependencyTier
    | Verify
    | UpdateIncidentRecord
    | EnableFlagRule
    | ScaleWorkerPool,
    Field(discriminator="action"),
]


def action_target(action: Action) -> str | None:
    """The exact target an action touches (flag/rule, pool or tier), if any."""
    if isinstance(action, DisableFlagRule | EnableFlagRule):
        return f"{action.flag}/{action.rule}"
    if isinstance(action, DrainWorkerPool | ScaleWorkerPool):
        return action.pool
    if isinstance(action, RestartDependencyTier):
        return action.tier
    return None


def action_regions(action: Action) -> tuple[str, ...]:
    """Regions an action touches ((), for "all regions of the incident")."""
    if isinstance(
        action,
        DisableFlagRule
        | DrainWorkerPool
        | RestartDependencyTier
        | EnableFlagRule
        | ScaleWorkerPool,
    ):
        return (action.region,)
    if isinstance(action, GatherState | Verify):
        return action.regions
    return ()


def describe_action(action: Action) -> str:
    """One human line, e.g. 'drain_worker_pool cache-invalidation in us-east'."""
    target = action_target(action)
    regions = action_regions(action)
    parts = [action.action.value]
    if target:
        parts.append(target)
    if isinstance(action, ScaleWorkerPool):
        parts.append(f"to {action.replicas}")
    if regions:
        parts.append("in " + ", ".join(regions))
    return " ".join(parts)


# --- what the commander expects to observe first -------------------------------------


class FlagRuleExpectation(Frozen):
    kind: Literal["flag_rule"] = "flag_rule"
    flag: Label
    rule: Label
    region: Region
    enabled: bool


class WorkerPoolExpectation(Frozen):
    kind: Literal["worker_pool"] = "worker_pool"
    pool: Label
    region: Region
    drained: bool


class TierExpectation(Frozen):
    kind: Literal["tier"] = "tier"
    tier: Label
    region: Region
    healthy: bool


Expectation = Annotated[
    FlagRuleExpectation | WorkerPoolExpectation | TierExpectation,
    Field(discriminator="kind"),
]


def describe_expectation(exp: FlagRuleExpectation | WorkerPoolExpectation | TierExpectation) -> str:
    if isinstance(exp, FlagRuleExpectation):
        state = "enabled" if exp.enabled else "disabled"
        return f"rule {exp.rule} of {exp.flag} is {state} in {exp.region}"
    if isinstance(exp, WorkerPoolExpectation):
        state = "drained" if exp.drained else "serving"
        return f"pool {exp.pool} is {state} in {exp.region}"
    state = "healthy" if exp.healthy else "unhealthy"
    return f"tier {exp.tier} is {state} in {exp.region}"


# --- authority boundary (declared from a versioned runbook/authority file) -----------


class ActionGrant(Frozen):
    """One kind of action the holder of the conn may direct, and where."""

    action: ActionType
    targets: tuple[Target, ...] = Field(
        default=(),
        max_length=MAX_GRANTS,
        description="Allowed exact targets ('flag/rule', pool or tier); () = any",
    )
    regions: tuple[Region, ...] = Field(
        default=(), max_length=MAX_REGIONS, description="Allowed regions; () = any"
    )


class Reservation(Frozen):
    """An action on a target that only a named team may direct."""

    action: ActionType
    target: Target
    team: Team
    reason: Line = ""


class BlastRadius(Frozen):
    max_drained_pools_per_region: int = Field(default=1, ge=0, le=1000)
    max_restarts_per_tier_region: int = Field(default=1, ge=0, le=1000)
    max_consequential_steps: int = Field(default=20, ge=0, le=10_000)


class VerificationCriteria(Frozen):
    """How a step's effect is judged. Comes from the runbook, never from code."""

    settle_seconds: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    window_seconds: float = Field(default=5.0, ge=0, le=3600, allow_inf_nan=False)
    samples: int = Field(default=3, ge=1, le=100)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_queue_depth: float = Field(default=100.0, ge=0, allow_inf_nan=False)
    max_reading_age_seconds: float = Field(default=30.0, gt=0, le=86_400, allow_inf_nan=False)
    scope: Literal["all_regions", "step_regions"] = Field(
        default="all_regions",
        description="Judge every declared region, or only the regions the step touched",
    )
    extra_max: dict[SignalName, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict,
        max_length=MAX_EXTRA_SIGNALS,
        description="Extra signal name -> maximum allowed value",
    )


class ApprovalRule(Frozen):
    """The two-person rule for one action (optionally only some of its targets):
    the directive is recorded and waits until `count` distinct, entitled people
    who did not issue it approved its exact decision packet, before it expires.
    Any decline, a hold, the kill switch, a takeover or a newer state change
    cancels it (DESIGN.md invariant 11)."""

    action: ActionType
    targets: tuple[Target, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="Exact targets this rule covers; () = every target",
    )
    count: int = Field(default=1, ge=1, le=10, description="Distinct approvers required")
    roles: tuple[Role, ...] = Field(
        default=(), max_length=8, description="An approver holds one of these roles; () = any role"
    )
    teams: tuple[Team, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="An approver belongs to one of these teams; () = any team",
    )
    self_approval: bool = Field(
        default=False,
        description="May the issuer approve their own directive (never counted twice)",
    )
    expires_after: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="Seconds after the directive was issued; later approvals do not count "
        "and the directive no longer runs",
    )


class ConnHolder(Frozen):
    identity: Identifier
    team: Team | None = None


class AuthorityBoundary(Frozen):
    """The declared boundary within which the holder of the conn may direct."""

    name: Identifier
    version: Identifier
    holder: ConnHolder
    regions: tuple[Region, ...] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        description="Every region a directive may name (anything else is refused)",
    )
    allowed: tuple[ActionGrant, ...] = Field(max_length=MAX_GRANTS)
    reservations: tuple[Reservation, ...] = Field(default=(), max_length=MAX_GRANTS)
    blast_radius: BlastRadius = BlastRadius()
    verification: dict[ActionType, VerificationCriteria] = Field(
        default_factory=dict, max_length=len(ActionType)
    )
    default_verification: VerificationCriteria = VerificationCriteria()
    takeover_teams: tuple[Team, ...] = Field(default=(), max_length=MAX_LIST)
    roles_may_direct: tuple[Role, ...] = Field(
        default=(Role.COMMANDER, Role.SPECIALIST), max_length=8
    )
    approvals: tuple[ApprovalRule, ...] = Field(
        default=(),
        max_length=MAX_GRANTS,
        description="Actions (and targets) that need a second person's approval",
    )

    def criteria_for(self, action: ActionType) -> VerificationCriteria:
        return self.verification.get(action, self.default_verification)


# --- verdicts and refusals ----------------------------------------------------------------


class Verdict(StrEnum):
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"
    CONFLICT = "conflict"
    STALE_METRICS = "stale_metrics"
    MIXED = "mixed"


class RefusalReason(StrEnum):
    """Machine-readable reasons a directive is refused (API and executor alike)."""

    INCIDENT_NOT_OPEN = "incident_not_open"
    INCIDENT_CLOSED = "incident_closed"
    NOT_HUMAN = "not_authenticated_human"
    ROLE_MAY_NOT_DIRECT = "role_may_not_direct"
    NO_AUTHORITY = "no_authority_declared"
    NOT_CONN_HOLDER = "not_conn_holder"
    KILL_SWITCH = "kill_switch_engaged"
    ON_HOLD = "incident_on_hold"
    ACTION_NOT_ALLOWED = "action_not_allowed"
    TARGET_NOT_ALLOWED = "target_not_allowed"
    REGION_NOT_ALLOWED = "region_not_allowed"
    RESERVED_TO_TEAM = "reserved_to_team"
    BLAST_RADIUS = "blast_radius_exceeded"
    STEP_UNVERIFIED = "previous_step_unverified"
    STALE_BASE = "stale_base_position"
    INVALID_BASE = "invalid_base_position"
    EXPECTATION_CONFLICT = "expectation_conflict"
    PARTIAL_STATE = "target_partially_changed"
    DUPLICATE = "duplicate_directive"
    INVALID_DIRECTIVE = "invalid_directive"
    """The directive does not match the schema (no bounded action could be read)."""
    AUTHORITY_WIDENING = "authority_widening_needs_approval"
    """The authority change widens the boundary: it needs a second person's approval."""
    APPROVAL_REQUIRED = "approval_required"
    """The action needs approvals (two-person rule) that are not (all) recorded."""
    APPROVAL_DECLINED = "approval_declined"
    """An entitled approver declined the directive: it never runs."""
    APPROVAL_EXPIRED = "approval_expired"
    """The directive's approval window passed before the quorum was reached."""
    SELF_APPROVAL = "self_approval"
    """The issuer of a directive approved it themselves, and its approval rule does not
    allow that (two-person rule: a second person must approve)."""


class HoldReason(StrEnum):
    MANUAL = "manual"
    VERIFICATION = "verification"
    EXPECTATION_CONFLICT = "expectation_conflict"
    PARTIAL_STATE = "partial_state"
    STEP_FAILED = "step_failed"
