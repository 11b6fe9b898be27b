"""Request bodies of the API (separate from the event models they become)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conn_schemas.events import DirectiveIssuedPayload
from conn_schemas.values import (
    Action,
    Detail,
    Expectation,
    Identifier,
    IncidentId,
    Line,
    NonEmptyDetail,
    NonEmptyLine,
    Team,
    Token,
)

LabelKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""A Prometheus/Alertmanager label name."""
LabelValue = Annotated[str, Field(max_length=4096)]
"""An alert label value: bounded here, made to fit the policy at intake (cut, one line)."""
AnnotationValue = Annotated[str, Field(max_length=16_384)]
"""An annotation (a description can be long): only its first line-sized part is kept."""
MAX_ALERT_LABELS = 128
"""Labels or annotations accepted per alert (intake keeps at most MAX_LABELS)."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenIncident(Body):
    title: NonEmptyLine
    service: Identifier
    severity: Literal["sev1", "sev2", "sev3", "sev4", "sev5"] = "sev2"
    incident_id: IncidentId | None = Field(
        default=None, description="Optional id; generated (INC-YYYYMMDD-xxxxxx) if omitted"
    )


class DeclareAuthority(Body):
    """Exactly one of `runbook` (a versioned file in the API's runbooks directory) or,
    in development only (CONN_ENV=development), `content`.

    During an incident a new declaration may only narrow the boundary in force; a
    change that widens it is recorded as a proposal (202) that takes effect once a
    second commander or admin who does not hold the conn approves it."""

    runbook: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="e.g. 'checkout-authority' (runbooks/checkout-authority.yaml)",
    )
    content: str | None = Field(
        default=None,
        max_length=200_000,
        description="The authority YAML itself: development only (CONN_ENV=development)",
    )
    source_file: Line = Field(default="", description="Where `content` came from")
    detail: Detail = Field(default="", description="Why (for a proposal)")


class ApproveAuthority(Body):
    """Approve one exact proposal: its id (path) and the content hash you reviewed."""

    content_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the proposed runbook file"
    )
    detail: Detail = ""


class ApprovalDecision(Body):
    """Approve or decline one directive waiting for approvers (two-person rule), naming
    the SHA-256 of the decision packet you read (GET .../approvals)."""

    decision: Literal["approve", "decline"]
    packet_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the decision packet you reviewed"
    )
    detail: str = Field(
        default="", max_length=2000, description="Why (required to decline); for humans"
    )


class DirectiveRequest(Body):
    """One bounded action with its exact target. Free text goes only in `rationale`
    (for humans; never parsed)."""

    action: Action
    expectation: Expectation | None = None
    based_on_sequence: int = Field(ge=0, le=2**62)
    rationale: Detail = ""

    def payload(self) -> DirectiveIssuedPayload:
        """The DirectiveIssued payload this request asks for (validated again)."""
        return DirectiveIssuedPayload(
            action=self.action,
            expectation=self.expectation,
            based_on_sequence=self.based_on_sequence,
            rationale=self.rationale,
        )


class HoldRequest(Body):
    detail: Detail = ""
    reason: Literal["manual"] = Field(
        default="manual", description="Only a manual hold can be declared by a person"
    )


class ResumeRequest(Body):
    detail: Detail = ""


class HandoffRequest(Body):
    to_team: Team
    detail: Detail = ""


class AcceptTakeover(Body):
    team: Team | None = Field(default=None, description="Defaults to the caller's team")
    packet_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The exact hash of the packet you read (required: there is no "
        "default; refused if a newer packet exists or is due)",
    )
    detail: Detail = ""


class KillSwitchRequest(Body):
    reason: NonEmptyDetail


class CloseIncident(Body):
    resolution: NonEmptyDetail


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[LabelKey, LabelValue] = Field(
        min_length=1,
        max_length=MAX_ALERT_LABELS,
        description="At least one label (Alertmanager always sends alertname)",
    )
    annotations: dict[LabelKey, AnnotationValue] = Field(
        default_factory=dict, max_length=MAX_ALERT_LABELS
    )
    startsAt: str | None = Field(default=None, max_length=64, description="RFC 3339")
    endsAt: str | None = Field(default=None, max_length=64, description="RFC 3339")
    fingerprint: Token | None = None

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        """A time is a time: an alert whose times cannot be read is refused, not taken
        in without its occurrence (which is what folds an HA pair's duplicate)."""
        if value:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"not an RFC 3339 time: {value[:64]!r}") from None
        return value


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="allow")

    version: str = Field(default="4", max_length=16)
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = Field(default="", max_length=256)
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)
    commonLabels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_ALERT_LABELS
    )
