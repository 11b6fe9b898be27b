"""Request bodies of the API (separate from the event models they become)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conn_schemas.events import IncidentId
from conn_schemas.values import Action, Expectation, Name


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenIncident(Body):
    title: str = Field(min_length=1, max_length=300)
    service: Name
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
    source_file: str = Field(default="", max_length=300, description="Where `content` came from")
    detail: str = Field(default="", max_length=2000, description="Why (for a proposal)")


class ApproveAuthority(Body):
    """Approve one exact proposal: its id (path) and the content hash you reviewed."""

    content_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the proposed runbook file"
    )
    detail: str = Field(default="", max_length=2000)


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
    rationale: str = Field(default="", max_length=2000)


class HoldRequest(Body):
    detail: str = Field(default="", max_length=2000)
    reason: Literal["manual"] = Field(
        default="manual", description="Only a manual hold can be declared by a person"
    )


class ResumeRequest(Body):
    detail: str = Field(default="", max_length=2000)


class HandoffRequest(Body):
    to_team: Name
    detail: str = Field(default="", max_length=2000)


class AcceptTakeover(Body):
    team: Name | None = Field(default=None, description="Defaults to the caller's team")
    packet_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The exact hash of the packet you read (required: there is no "
        "default; refused if a newer packet exists or is due)",
    )
    detail: str = Field(default="", max_length=2000)


class KillSwitchRequest(Body):
    reason: str = Field(min_length=1, max_length=1000)


class CloseIncident(Body):
    resolution: str = Field(min_length=1, max_length=2000)


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    fingerprint: str | None = Field(default=None, max_length=256)


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="allow")

    version: str = "4"
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    alerts: list[AlertmanagerAlert] = Field(default_factory=list, max_length=1000)
    commonLabels: dict[str, str] = Field(default_factory=dict)
