"""The OpenAPI document describes what clients receive (issue 16, item 3).

- Every operation documents a JSON body for its success status(es), and that body is
  a described object (named properties, no "any object" placeholder); every error
  status it lists is the one error shape (ErrorResponse).
- Real answers of a walk through an incident (open, authority, directives, decision
  packet, approvals, control verbs, ledger, packet, fleet report, kill switch, alerts)
  validate against the schema the document gives for their path, method and status;
  so do the error answers.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
from api_support import Api

NOT_JSON = {("/metrics", "get")}
"""Prometheus text, not JSON."""


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return resolved
    return schema


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


async def test_every_operation_documents_its_success_and_error_bodies(api: Api) -> None:
    doc = api.app.openapi()
    problems: list[str] = []
    ops = _operations(doc)
    assert len(ops) > 20, "the document lists the API's operations"
    for path, method, op in ops:
        if (path, method) in NOT_JSON:
            continue
        where = f"{method.upper()} {path}"
        responses = op.get("responses", {})
        successes = {s: r for s, r in responses.items() if s.startswith("2")}
        if not successes:
            problems.append(f"{where}: no success response")
        for status, response in successes.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if not schema:
                problems.append(f"{where} {status}: no JSON schema")
                continue
            body = _resolve(doc, schema)
            if "anyOf" in body or "oneOf" in body:
                continue
            if body.get("type") != "object" or not body.get("properties"):
                problems.append(f"{where} {status}: not a described object ({body})")
        for status, response in responses.items():
            if status[0] in "45":
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema != {"$ref": "#/components/schemas/ErrorResponse"}:
                    problems.append(f"{where} {status}: not the ErrorResponse shape")
    assert problems == []


class Checked:
    """Every answer validated against the document's schema for its route and status."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.doc = api.app.openapi()
        self.templates = {
            path: [part for part in path.strip("/").split("/")] for path in self.doc["paths"]
        }
        self.seen: set[tuple[str, str, str]] = set()

    def _template(self, url: str) -> str:
        parts = httpx.URL(url).path.strip("/").split("/")
        for path, tpl in self.templates.items():
            if len(tpl) == len(parts) and all(
                t.startswith("{") or t == p for t, p in zip(tpl, parts, strict=True)
            ):
                return path
        raise AssertionError(f"{url} is not in the OpenAPI document")

    def check(self, r: httpx.Response) -> Any:
        method = r.request.method.lower()
        path = self._template(str(r.request.url))
        op = self.doc["paths"][path][method]
        status = str(r.status_code)
        assert status in op["responses"], f"{method} {path}: {status} undocumented: {r.text}"
        schema = op["responses"][status]["content"]["application/json"]["schema"]
        validator = jsonschema_rs.validator_for({**schema, "components": self.doc["components"]})
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(r.json())]
        assert errors == [], f"{method} {path} {status}: {errors[:5]}\n{r.text[:2000]}"
        self.seen.add((path, method, status))
        return r.json()

    async def get(self, path: str, who: str = "olive", **kw: Any) -> Any:
        return self.check(await self.api.get(path, who, **kw))

    async def post(self, path: str, who: str, json: Any = None, **kw: Any) -> Any:
        return self.check(await self.api.post(path, who, json, **kw))


async def test_real_answers_validate_against_the_document(api: Api) -> None:
    c = Checked(api)
    opened = await c.post("/v1/incidents", "alice", {"title": "checkout", "service": "checkout"})
    inc = opened["incident_id"]
    await c.post(f"/v1/incidents/{inc}/authority", "alice", {"runbook": "checkout-authority"})
    base = f"/v1/incidents/{inc}"
    state = await c.get(base)
    assert state["bridge_version"] == 1 and state["holder"]["identity"] == "alice"
    await c.get("/v1/incidents")
    await c.get("/v1/incidents", params={"status": "open"})
    await c.get(f"{base}/authority")
    await c.get("/v1/me", "alice")
    await c.get("/v1/control")
    await c.get("/v1/fleet/report")

    gather = {"action": "gather_state", "regions": ["us-east"]}
    issued = await c.post(
        f"{base}/directives", "alice", {"action": gather, "based_on_sequence": state["sequence"]}
    )
    cid = issued["correlation_id"]
    drain = {"action": "drain_worker_pool", "pool": "cache-invalidation", "region": "us-east"}
    position = (await c.get(base))["sequence"]
    await c.post(
        f"{base}/directives/dry-run", "alice", {"action": drain, "based_on_sequence": position}
    )
    await c.post(  # refused: stale base (an error answer, validated too)
        f"{base}/directives", "alice", {"action": drain, "based_on_sequence": 0}
    )
    await c.get(f"{base}/directives")
    await c.get(f"{base}/directives/{cid}")
    await c.get(f"{base}/directives/{cid}", "alice")
    await c.get(f"{base}/directives/{cid}/decision-packet")
    await c.get(f"{base}/approvals")
    await c.get(f"{base}/ledger")
    await c.get(f"{base}/ledger", "alice", params={"limit": 2})
    await c.get(f"{base}/packet")  # 404 before any packet: the error shape

    await c.post(f"{base}/hold", "alice", {"detail": "look first"})
    await c.get(base)
    await c.post(f"{base}/resume", "alice", {"detail": "looked"})
    await c.post(f"{base}/handoff", "alice", {"to_team": "db-platform"})
    await c.get("/v1/incidents/INC-none-here")  # 404
    await c.post("/v1/incidents", "olive", {"title": "x", "service": "checkout"})  # 403
    await c.post(f"{base}/close", "alice", {"resolution": "resolved"})
    await c.get(base)

    await c.post("/v1/kill-switch/engage", "root", {"reason": "contract test"})
    await c.get("/v1/control")
    await c.post("/v1/kill-switch/release", "root", {"reason": "contract test done"})

    hook = {"alerts": [{"labels": {"alertname": "ErrorRate", "service": "checkout"}}]}
    await c.post("/v1/alerts/alertmanager", "alertbot", hook)

    statuses = {s for _, _, s in c.seen}
    assert {"200", "201", "202", "403", "404", "409"} <= statuses, statuses
