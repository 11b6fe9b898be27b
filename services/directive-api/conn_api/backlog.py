"""How far the pipeline is behind: directives in the log whose outcome is not (yet).

The API's own in-flight limit (conn_api.middleware) bounds what waits *in the API*; a
directive answered 202 may still wait behind others at the executor. Every directive's
outcome comes back through the API's fold, so the fold knows how many directives are
open: past CONN_API_MAX_BACKLOG the API sheds new directives (503 overloaded +
Retry-After, before claiming or deciding anything) instead of letting the queue, and
every commander's wait, grow into seconds. Control verbs (hold, kill switch, close,
takeover) are never shed by it.

A directive counts from its DirectiveIssued until an outcome with its correlation id
(TERMINAL), or until it is WINDOW_SECONDS old by its `occurred_at` (one awaiting
approval, or never executed because its incident holds, does not block the others; a
replay of old history at start-up counts nothing). Only an outcome signed by a pipeline
role (OUTCOME_ROLES) ends a directive: an integration may sign `IncidentRecordUpdated`,
and one naming an open directive's correlation id must not make the backlog look
shorter than it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from conn_schemas.signing import SignerRole

TERMINAL = frozenset(
    {
        "StateGathered",
        "IncidentRecordUpdated",
        "StepSucceeded",
        "StepFailed",
        "StepOutcomeUnknown",
        "DirectiveRefused",
        "VerificationSnapshot",
    }
)
OUTCOME_ROLES = frozenset({SignerRole.API, SignerRole.EXECUTOR, SignerRole.VERIFIER})
WINDOW_SECONDS = 30.0


class Backlog:
    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.window = window_seconds
        self._now = now
        self._open: OrderedDict[str, datetime] = OrderedDict()

    def observe(
        self,
        event_type: str,
        correlation_id: str | None,
        occurred_at: datetime,
        signer_role: SignerRole | None,
    ) -> None:
        if correlation_id is None:
            return
        if event_type == "DirectiveIssued":
            if (self._now() - occurred_at).total_seconds() < self.window:
                self._open[correlation_id] = occurred_at
        elif event_type in TERMINAL and signer_role in OUTCOME_ROLES:
            self._open.pop(correlation_id, None)

    def size(self) -> int:
        """Open directives younger than the window (older ones are forgotten)."""
        cutoff = self._now().timestamp() - self.window
        while self._open:
            cid, at = next(iter(self._open.items()))
            if at.timestamp() >= cutoff:
                break
            del self._open[cid]
        return len(self._open)
