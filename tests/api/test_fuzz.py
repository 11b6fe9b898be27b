"""Property-based fuzzing of the whole API with schemathesis, against the API running
as a real process: valid (positive) and invalid (negative) requests to every
operation, each sent as one of several identities (the commander holding the conn, a
specialist of the right and of the wrong team, an observer, an integration token, an
admin, no authentication). No answer is a 5xx, every 4xx has the one documented error
shape, answers conform to the OpenAPI document, and a refused (4xx) write changes
nothing: the fuzz target's ledger (but for an audit DirectiveRefused), the number of
incidents and the kill switch are as before. Randomized (no derandomize) with a fixed
example budget, so CI time stays bounded."""

from __future__ import annotations

from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import schemathesis
from api_support import auth
from fixtures_services import Proc
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

# Per operation and mode; bounded so the whole run stays around a minute and a half.
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 6}

IDENTITIES = ("alice", "alice", "dana", "rob", "olive", "alertbot", "root", None)
"""Who sends each request (alice, the holder, twice as often: the deep paths are hers)."""


def _headers(who: str | None) -> dict[str, str]:
    return auth(who) if who else {}


def _world(base: str, incident: str) -> tuple[object, ...]:
    """What a refused request must leave as it was."""
    ledger = httpx.get(
        f"{base}/v1/incidents/{incident}/ledger", params={"limit": 1000}, headers=auth("alice")
    )
    assert ledger.status_code == 200, ledger.text
    kept = [
        item["event"]["event_id"]
        for item in ledger.json()["items"]
        if item["event"]["event_type"] != "DirectiveRefused"
    ]
    incidents = httpx.get(f"{base}/v1/incidents", headers=auth("alice")).json()
    control = httpx.get(f"{base}/v1/control", headers=auth("alice")).json()
    return (kept, len(incidents.get("items", incidents)), control["kill_switch"])


def check_error_shape(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, where
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message", "detail"}, where
        assert isinstance(error["code"], str) and error["code"], where
        assert isinstance(error["message"], str) and error["message"], where


def _open_target(base: str) -> str:
    """A real incident with authority, so generated requests reach the deeper checks."""
    r = httpx.post(
        base + "/v1/incidents",
        json={"title": "fuzz target", "service": "checkout"},
        headers=auth("alice"),
    )
    assert r.status_code == 201, r.text
    incident = str(r.json()["incident_id"])
    r = httpx.post(
        f"{base}/v1/incidents/{incident}/authority",
        json={"runbook": "checkout-authority"},
        headers=auth("alice"),
    )
    assert r.status_code == 201, r.text
    return incident


def test_fuzz_api(api_process: Proc) -> None:
    base = api_process.url
    incident = _open_target(base)
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    statuses: dict[int, int] = {}
    roles: dict[str, int] = {}
    for op in operations:
        for mode, examples in EXAMPLES.items():
            strategy = op.as_strategy(mode)
            if mode is GenerationMode.POSITIVE and "{incident_id}" in op.path:
                strategy = st.one_of(
                    strategy, op.as_strategy(mode, path_parameters={"incident_id": incident})
                )

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy, who=st.sampled_from(IDENTITIES))
            def run(case: Any, who: str | None) -> None:
                headers = _headers(who)
                writes = case.method.upper() != "GET"
                before = _world(base, incident) if writes else None
                response = case.call(base_url=base, headers=headers, timeout=15)
                roles[who or "anonymous"] = roles.get(who or "anonymous", 0) + 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                check_error_shape(case, response)
                case.validate_response(
                    response, checks=[status_code_conformance, response_schema_conformance]
                )
                if writes and 400 <= response.status_code < 500:
                    after = _world(base, incident)
                    assert after == before, (
                        f"refused {case.method} {case.formatted_path} as {who} "
                        f"({response.status_code}) changed the world"
                    )
                if (case.headers or {}).get("Idempotency-Key") and response.status_code < 500:
                    # a retry with the same key: the stored answer, in the same shape
                    again = case.call(base_url=base, headers=headers, timeout=15)
                    check_error_shape(case, again)
                    case.validate_response(
                        again, checks=[status_code_conformance, response_schema_conformance]
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # No invalid input exists (an operation without parameters or body).
                assert mode is GenerationMode.NEGATIVE, op.label
    # The fuzz reached past authentication and validation.
    assert statuses.get(422, 0) > 0 and sum(n for s, n in statuses.items() if s < 300) > 0
    assert not [s for s in statuses if s >= 500], statuses
    # ...as several identities, refused (401/403) as well as allowed.
    assert len(roles) >= 5, roles
    assert statuses.get(403, 0) > 0 and statuses.get(401, 0) > 0, statuses
