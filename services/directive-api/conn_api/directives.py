"""Issuing a directive: idempotency, pre-check with the core `decide`, append.

Accepted  -> DirectiveIssued (correlation_id = the directive's id), 202.
Refused   -> DirectiveRefused(refused_by="directive-api") with a fresh correlation
             id, answered with the refusal's status and RefusalReason code.
With an Idempotency-Key, the first request to claim (principal, key) in
PostgreSQL decides; every retry gets the stored answer, and the same key with a
different body is a 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from conn_api import metrics
from conn_api.auth import Identity
from conn_api.errors import REFUSAL_STATUS, ApiError, error_body
from conn_api.models import DirectiveRequest
from conn_api.runtime import OUTCOME_UNKNOWN, Runtime
from conn_api.store import (
    Answer,
    IdempotencyRecord,
    claim_key,
    get_key,
    mark_outcome_unknown,
    release_key,
)
from conn_core import approvals
from conn_core.chain import sha256_json
from conn_core.rules import Accepted, decide
from conn_core.state import IncidentState
from conn_runtime.ops import RETRY_AFTER_SECONDS
from conn_runtime.resilience import dependency_of
from conn_schemas.events import (
    DirectiveIssued,
    DirectiveIssuedPayload,
    DirectiveRefused,
    DirectiveRefusedPayload,
    new_event,
)
from conn_schemas.values import MAX_DETAIL, RefusalReason, clean_text, describe_action

log = logging.getLogger(__name__)


def request_hash(incident_id: str, body: Any) -> str:
    doc = {"incident_id": incident_id, "body": body}
    return sha256_json(doc)


def _validation_detail(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()[:20]
    ]
    first = errors[0]
    return f"{'.'.join(first['loc'])}: {first['msg']}", errors


async def issue(
    rt: Runtime, incident_id: str, body: Any, identity: Identity, idem_key: str | None
) -> tuple[int, dict[str, Any]]:
    """Returns (HTTP status, JSON body); refusals return the error body."""
    _shed_if_backlogged(rt)
    if idem_key is None:
        return await _decide_and_append(rt, incident_id, body, identity, str(uuid.uuid4()))
    if not (1 <= len(idem_key) <= 200):
        raise ApiError(422, "invalid_request", "Idempotency-Key must be 1..200 characters")
    digest = request_hash(incident_id, body)
    correlation_id = str(uuid.uuid4())
    existing = await claim_key(
        rt.db,
        principal=identity.id,
        key=idem_key,
        incident_id=incident_id,
        request_sha256=digest,
        correlation_id=correlation_id,
    )
    if existing is not None:
        if existing.request_sha256 != digest:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
                {"correlation_id": existing.correlation_id},
            )
        deadline = time.monotonic() + rt.settings.api.conn_api_idempotency_wait_seconds
        record = _with_pending_answer(rt, identity, idem_key, existing)
        abandoned = rt.settings.api.conn_api_idempotency_abandoned_seconds
        if not record.completed and not record.outcome_unknown and record.age_seconds > abandoned:
            # Claimed, never answered, long ago: the process that held it died (maybe
            # after its append). Unknown, like an unacknowledged append: resolved from
            # the log, never left "in progress" for ever.
            log.warning(
                "idempotency key abandoned", extra={"correlation_id": record.correlation_id}
            )
            await _keep_unknown(rt, identity, idem_key)
            record = dataclasses.replace(record, outcome_unknown=True)
        if not record.completed and record.outcome_unknown:
            return await _resolve_unknown(rt, incident_id, body, identity, idem_key, record)
        while not record.completed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = await get_key(rt.db, principal=identity.id, key=idem_key)
            if found is not None:
                found = _with_pending_answer(rt, identity, idem_key, found)
            if found is None:  # the first request failed and released the key
                return await issue(rt, incident_id, body, identity, idem_key)
            record = found
        if not record.completed or record.response is None or record.status_code is None:
            raise ApiError(
                409,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed; retry",
                {"correlation_id": record.correlation_id},
            )
        metrics.DIRECTIVES.labels(outcome="replayed", reason="").inc()
        return record.status_code, _mark_replayed(record.status_code, record.response)
    return await _issue_claimed(rt, incident_id, body, identity, idem_key, correlation_id)


def _shed_if_backlogged(rt: Runtime) -> None:
    """Back-pressure from the pipeline (conn_api.backlog): shed before anything is
    claimed, decided or appended, so a retry is always safe."""
    waiting, limit = rt.view.backlog.size(), rt.settings.api.conn_api_max_backlog
    if waiting < limit:
        return
    after = rt.settings.api.conn_api_shed_retry_after_seconds
    metrics.SHED.inc()
    raise ApiError(
        503,
        "overloaded",
        f"{waiting} directives are waiting for their outcome (limit {limit}); nothing was "
        f"done: retry after {after} s",
        {"backlog": waiting, "limit": limit, "retry_after_seconds": after},
        headers={"Retry-After": str(after)},
    )


async def _issue_claimed(
    rt: Runtime,
    incident_id: str,
    body: Any,
    identity: Identity,
    idem_key: str,
    correlation_id: str,
) -> tuple[int, dict[str, Any]]:
    try:
        status, response = await _decide_and_append(rt, incident_id, body, identity, correlation_id)
    except ApiError as exc:
        if exc.code != OUTCOME_UNKNOWN:
            await _release(rt, identity, idem_key)
            raise
        await _keep_unknown(rt, identity, idem_key)
        raise
    except asyncio.CancelledError:
        await _keep_unknown(rt, identity, idem_key)  # maybe cancelled after the append
        raise
    except BaseException:
        await _release(rt, identity, idem_key)
        raise
    # Decided (and maybe appended): answered now, stored off the request path (the
    # claim is the fence; conn_api.answers).
    rt.answers.put(Answer(identity.id, idem_key, status, response))
    return status, response


def _with_pending_answer(
    rt: Runtime, identity: Identity, idem_key: str, record: IdempotencyRecord
) -> IdempotencyRecord:
    """The record, completed with the answer this process holds but has not stored yet."""
    if record.completed:
        return record
    answer = rt.answers.get(identity.id, idem_key)
    if answer is None:
        return record
    return dataclasses.replace(record, status_code=answer.status_code, response=answer.response)


async def _keep_unknown(rt: Runtime, identity: Identity, idem_key: str) -> None:
    """It may be in the log: keep the claim, so a retry with this key finds it there
    instead of deciding (and maybe executing) the same directive a second time."""
    with contextlib.suppress(Exception):
        await asyncio.shield(
            _bookkeeping(
                rt,
                functools.partial(mark_outcome_unknown, rt.db, principal=identity.id, key=idem_key),
                "mark an idempotency key's outcome unknown",
            )
        )


async def _release(rt: Runtime, identity: Identity, idem_key: str) -> None:
    """Nothing was appended: free the key so a retry can proceed."""
    await asyncio.shield(
        _bookkeeping(
            rt,
            functools.partial(release_key, rt.db, principal=identity.id, key=idem_key),
            "release an idempotency key",
        )
    )


async def _resolve_unknown(
    rt: Runtime,
    incident_id: str,
    body: Any,
    identity: Identity,
    idem_key: str,
    record: IdempotencyRecord,
) -> tuple[int, dict[str, Any]]:
    """A retry of a request whose append was not acknowledged. The producer that sent
    it has been replaced, so it either is in the log by now or never will be: once our
    fold holds everything the partition holds, if it has the DirectiveIssued, answer as
    if it had been acknowledged (whatever became of it since: refused by the executor,
    run, ...); else decide anew under the same claim (the same correlation id).

    Never decided anew on a fold that has not caught up with the log: a second
    DirectiveIssued of the same id would be ignored by every fold (the answer "issued"
    a lie), and a refusal would hide a directive that is in the log and may run."""
    within = rt.settings.api.conn_api_read_your_writes_seconds
    async with rt.locks[incident_id]:
        try:
            caught_up = await rt.view.wait_log_end(incident_id, within)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("log end unreadable for an unknown append", extra={"error": repr(exc)})
            caught_up = False
        found = rt.view.state(incident_id).directives.get(record.correlation_id)
    if found is None and not caught_up:
        raise ApiError(
            503,
            OUTCOME_UNKNOWN,
            "the earlier attempt of this request may be in the event log, which this API "
            "has not read to its end yet: nothing was done; retry with the same "
            "Idempotency-Key",
            {"correlation_id": record.correlation_id, "appended": None},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if found is not None and found.issuer is not None:  # its DirectiveIssued is in the log
        response: dict[str, Any] = {
            "status": "issued",
            "incident_id": incident_id,
            "correlation_id": record.correlation_id,
            "consequential": found.consequential,
            "action": found.action.model_dump(mode="json"),
            "summary": describe_action(found.action),
            "sequence": found.issued_sequence,
            "folded": True,
            "recovered": "the earlier append had landed",
        }
        rt.answers.put(Answer(identity.id, idem_key, 202, response))
        metrics.DIRECTIVES.labels(outcome="replayed", reason="").inc()
        return 202, {**response, "replayed": True}
    if found is not None and found.refusal is not None:
        # A refusal under this very id (never deciding anew under an id the log holds:
        # every fold would ignore the new DirectiveIssued).
        status = REFUSAL_STATUS.get(found.refusal, 409)
        body = error_body(
            found.refusal.value,
            found.refusal_detail,
            {"correlation_id": record.correlation_id, "recovered": "the earlier append had landed"},
        )
        rt.answers.put(Answer(identity.id, idem_key, status, body))
        return status, _mark_replayed(status, body)
    return await _issue_claimed(rt, incident_id, body, identity, idem_key, record.correlation_id)


async def _bookkeeping(rt: Runtime, call: Callable[[], Awaitable[None]], what: str) -> None:
    """A write about a request that has been decided already: if PostgreSQL is away
    right now, it is finished in the background as soon as it is back (the answer to
    the client stands; a retry with the same key meanwhile gets 409 "in progress")."""
    try:
        await call()
    except Exception as exc:
        if dependency_of(exc) is None:
            raise
        rt.deps.report(exc)
        rt.settle(call, what)


def _mark_replayed(status: int, response: dict[str, Any]) -> dict[str, Any]:
    """A stored answer, marked as a replay without breaking the error shape."""
    error = response.get("error")
    if status >= 400 and isinstance(error, dict):
        detail = error.get("detail")
        detail = {**detail, "replayed": True} if isinstance(detail, dict) else {"replayed": True}
        return {"error": {**error, "detail": detail}}
    return {**response, "replayed": True}


async def _decide_and_append(
    rt: Runtime, incident_id: str, body: Any, identity: Identity, correlation_id: str
) -> tuple[int, dict[str, Any]]:
    async with rt.locks[incident_id]:
        await rt.view.wait_current(incident_id, 1.0)
        state = rt.view.state(incident_id)
        if not state.opened:
            metrics.DIRECTIVES.labels(
                outcome="refused", reason=RefusalReason.INCIDENT_NOT_OPEN.value
            ).inc()
            raise ApiError.refused(
                RefusalReason.INCIDENT_NOT_OPEN, f"incident {incident_id} is not open"
            )
        actor = identity.actor()
        payload: DirectiveIssuedPayload | None = None
        try:
            request = DirectiveRequest.model_validate(body)
            payload = request.payload()
        except ValidationError as exc:
            message, errors = _validation_detail(exc)
            return await _refuse(
                rt,
                incident_id,
                identity,
                None,
                RefusalReason.INVALID_DIRECTIVE,
                f"not a valid directive: {message}",
                state.sequence,
                errors,
            )
        decision = decide(state, payload, actor, rt.view.folds.control)
        if not isinstance(decision, Accepted):
            return await _refuse(
                rt,
                incident_id,
                identity,
                payload,
                decision.reason,
                decision.detail,
                state.sequence,
                None,
            )
        event = new_event(
            DirectiveIssued,
            incident_id=incident_id,
            payload=payload,
            actor=actor,
            producer=rt.producer.principal,
            correlation_id=correlation_id,
        )
        # Everything that could fail is done before the append: once it is in the log
        # the directive may execute, so nothing after it may turn the answer into a 5xx.
        answer: dict[str, Any] = {
            "status": "issued",
            "incident_id": incident_id,
            "correlation_id": correlation_id,
            "consequential": decision.consequential,
            "action": payload.action.model_dump(mode="json"),
            "summary": describe_action(payload.action),
        }
        written = await rt.append_and_fold(event)
        try:
            waiting = approval_info(rt.view.state(incident_id), correlation_id)
        except Exception:  # it is in the log: the answer stays 202, only the summary is lost
            log.exception("approval summary failed", extra={"correlation_id": correlation_id})
            waiting = None
    metrics.DIRECTIVES.labels(outcome="issued", reason="").inc()
    log.info(
        "directive issued",
        extra={
            "incident_id": incident_id,
            "correlation_id": correlation_id,
            "actor": identity.id,
            "action": answer["summary"],
            "offset": written["position"]["offset"],
        },
    )
    return 202, {**answer, **({"awaiting_approval": waiting} if waiting else {}), **written}


def approval_info(state: IncidentState, correlation_id: str) -> dict[str, Any] | None:
    """Two-person rule: what a directive waits for (None: it needs no approval)."""
    track = state.approvals.get(correlation_id)
    if track is None:
        return None
    return {
        "required": track.rule.count,
        "roles": [r.value for r in track.rule.roles],
        "teams": list(track.rule.teams),
        "expires_at": track.expires_at.isoformat(),
        "decision_packet_sha256": approvals.current_sha256(state, correlation_id),
    }


async def _refuse(
    rt: Runtime,
    incident_id: str,
    identity: Identity,
    payload: DirectiveIssuedPayload | None,
    reason: RefusalReason,
    detail: str,
    sequence: int,
    errors: list[dict[str, Any]] | None,
) -> tuple[int, dict[str, Any]]:
    refusal_id = str(uuid.uuid4())
    event = new_event(
        DirectiveRefused,
        incident_id=incident_id,
        payload=DirectiveRefusedPayload(
            action=payload.action if payload else None,
            reason=reason,
            detail=clean_text(detail, MAX_DETAIL, multiline=True),
            refused_by="directive-api",
            checked_at_sequence=sequence,
        ),
        actor=identity.actor(),
        producer=rt.producer.principal,
        correlation_id=refusal_id,
    )
    written = await rt.append_and_fold(event)
    metrics.DIRECTIVES.labels(outcome="refused", reason=reason.value).inc()
    log.info(
        "directive refused",
        extra={
            "incident_id": incident_id,
            "reason": reason.value,
            "detail": detail[:300],
            "actor": identity.id,
            "correlation_id": refusal_id,
        },
    )
    info: dict[str, Any] = {
        "reason": reason.value,
        "correlation_id": refusal_id,
        "checked_at_sequence": sequence,
        **written,
    }
    if errors is not None:
        info["errors"] = errors
    return REFUSAL_STATUS.get(reason, 409), error_body(reason.value, detail, info)
