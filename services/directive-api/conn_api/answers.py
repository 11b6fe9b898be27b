"""Idempotency answers stored off the request path.

A directive with an Idempotency-Key claims its key (one PostgreSQL round trip, before
the append: the fence against issuing it twice) and is answered as soon as it is
decided; its answer is stored afterwards by this writer, every answer pending at that
moment in one statement. Until then a retry with the same key in this process gets
the answer from memory (`get`); in another process it waits for the stored answer, as
it waits for any request still in progress. A stored answer is never needed for
safety: the claim is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from conn_api.store import Answer, complete_keys, mark_outcome_unknown
from conn_runtime.resilience import POSTGRES, Dependencies, dependency_of, retry

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0


class Answers:
    def __init__(self, pool: Callable[[], asyncpg.Pool], deps: Dependencies) -> None:
        self._pool = pool
        self._deps = deps
        self._pending: dict[tuple[str, str], Answer] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def put(self, answer: Answer) -> None:
        self._pending[(answer.principal, answer.key)] = answer
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="idempotency-answers")

    def get(self, principal: str, key: str) -> Answer | None:
        return self._pending.get((principal, key))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch = list(self._pending.values())
        if not batch:
            return
        try:
            await retry(
                lambda: complete_keys(self._pool(), batch),
                what="directive-api: store idempotency answers",
                deps=self._deps,
                dependency=POSTGRES,
            )
        except Exception:  # not transient: store them one by one, mark the rest unknown
            log.exception("could not store idempotency answers", extra={"count": len(batch)})
            for answer in batch:
                await self._one_by_one(answer)
        for answer in batch:
            if self._pending.get((answer.principal, answer.key)) is answer:
                del self._pending[(answer.principal, answer.key)]

    async def _one_by_one(self, answer: Answer) -> None:
        try:
            await complete_keys(self._pool(), [answer])
        except Exception as exc:  # noqa: BLE001 - keep the claim; a retry reads the log
            log.error("idempotency answer not stored", extra={"error": repr(exc)})
            with contextlib.suppress(Exception):
                await mark_outcome_unknown(self._pool(), principal=answer.principal, key=answer.key)
            if dependency_of(exc) is not None:
                self._deps.report(exc)

    async def drain(self) -> None:
        """Store what is pending (bounded: DRAIN_SECONDS), then stop the writer."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), DRAIN_SECONDS)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
