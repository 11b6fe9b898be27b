"""IncidentRecord: a Slack-compatible webhook (`{"text": ...}`), with retries.

The same `Idempotency-Key` is sent on every retry, and keys already delivered
by this process are not sent again (`duplicate=True`). A receiver that answers
JSON `{"duplicate": true}` (the simulator does) is also reported as a duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from conn_adapters._common import RETRIABLE_STATUS, bounded
from conn_core.escaping import slack_mrkdwn
from conn_core.ports import PortError, RecordNoteResult
from conn_core.redaction import redact


class WebhookIncidentRecord:
    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, headers=dict(headers or {}))
        self._delivered: dict[str, RecordNoteResult] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def payload(self, incident_id: str, note: str) -> dict[str, Any]:
        """Slack-compatible: the note is scrubbed of secrets (again: defence in depth) and
        escaped for mrkdwn (no mentions, broadcasts or links can be injected);
        `incident_id` is a strict identifier."""
        text = slack_mrkdwn(redact(note))
        return {"text": f"[{incident_id}] {text}", "incident_id": incident_id}

    @bounded
    async def append_note(
        self, incident_id: str, note: str, *, idempotency_key: str
    ) -> RecordNoteResult:
        if idempotency_key in self._delivered:
            return self._delivered[idempotency_key].model_copy(update={"duplicate": True})
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._client.post(
                    self.url,
                    json=self.payload(incident_id, note),
                    headers={"Idempotency-Key": idempotency_key},
                )
            except httpx.TransportError as e:
                last = e
                continue
            if response.status_code in RETRIABLE_STATUS:
                last = PortError(f"webhook HTTP {response.status_code}", retriable=True)
                continue
            if response.is_error:
                raise PortError(f"webhook HTTP {response.status_code}: {response.text[:300]}")
            try:
                body: Any = response.json()
            except ValueError:
                body = {"body": response.text}
            duplicate = isinstance(body, dict) and bool(body.get("duplicate"))
            result = RecordNoteResult(
                idempotency_key=idempotency_key,
                delivered=True,
                duplicate=duplicate,
                output={"status": response.status_code, "response": body},
            )
            self._delivered[idempotency_key] = result
            return result
        raise PortError(f"webhook failed after {self.retries + 1} attempts: {last}", retriable=True)


class SimulatorIncidentRecord(WebhookIncidentRecord):
    """The simulator's webhook receiver at /sim/incident-record."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        super().__init__(base_url.rstrip("/") + "/sim/incident-record", timeout=timeout)


class NullIncidentRecord:
    """No external record: the Conn ledger is the record."""

    timeout = 0.0

    async def append_note(
        self, incident_id: str, note: str, *, idempotency_key: str
    ) -> RecordNoteResult:
        del incident_id, note  # nowhere to send them: the ledger already holds the note
        return RecordNoteResult(
            idempotency_key=idempotency_key, delivered=True, output={"sink": "none"}
        )

    async def aclose(self) -> None:
        return None
