"""Raw tool output over the contract's bound (32 KiB of JSON) after a change that
succeeded: the step is a success carrying a marked stand-in of the answer (its size,
SHA-256 and head), not an error that turns a done change into an unknown outcome
(issue 14: bounded payloads; the target's answer can be any size)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from conn_adapters.flags import UnleashFeatureFlags
from conn_schemas.events import StepSucceededPayload
from conn_schemas.values import MAX_JSON_BYTES, DisableFlagRule, JsonObject, fit_json

FLAG, RULE, REGION = "checkout-pricing", "canary-10pct", "eu-west"


def _unleash(strategy: dict[str, Any]) -> httpx.MockTransport:
    """An Unleash admin API with one flag whose strategy carries a huge constraint."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            for op in json.loads(request.content):
                strategy["disabled"] = op["value"]
            return httpx.Response(200, json=strategy)
        feature = {"name": FLAG, "environments": [{"name": REGION, "strategies": [strategy]}]}
        return httpx.Response(200, json=feature)

    return httpx.MockTransport(handle)


async def test_a_change_whose_answer_is_over_the_bound_is_a_success_with_a_stand_in() -> None:
    users = [f"user-{i:06d}" for i in range(6000)]  # ~70 KB: a real-world user-id list
    strategy = {
        "id": "s-1",
        "name": "flexibleRollout",
        "title": RULE,
        "disabled": False,
        "constraints": [{"contextName": "userId", "operator": "IN", "values": users}],
    }
    flags = UnleashFeatureFlags("http://unleash", "token")
    await flags.aclose()
    flags._client = httpx.AsyncClient(base_url="http://unleash", transport=_unleash(strategy))
    try:
        result = await flags.disable_rule(FLAG, RULE, REGION, idempotency_key="k-big")
    finally:
        await flags.aclose()
    assert result.changed and result.before["enabled"] and not result.after["enabled"]
    assert result.output["truncated"] is True
    assert result.output["bytes"] > MAX_JSON_BYTES
    assert len(orjson.dumps(result.output)) <= MAX_JSON_BYTES
    # ...and the step's event is built from it.
    action = DisableFlagRule(flag=FLAG, rule=RULE, region=REGION)
    StepSucceededPayload(action=action, result=result, summary="done", duration_ms=1.0)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(), inner, max_size=8),
    max_leaves=64,
)


@settings(max_examples=200, deadline=None)
@given(
    value=st.dictionaries(st.text(), _JSON, max_size=300),
    limit=st.sampled_from([256, 4096, MAX_JSON_BYTES]),
)
def test_fit_json_always_fits_and_keeps_what_fits(value: dict[str, Any], limit: int) -> None:
    fitted = fit_json(value, limit)
    try:
        size = len(orjson.dumps(value))
    except TypeError:  # lone surrogates: never kept as they are
        size = None
    nul = "\\u0000" in (orjson.dumps(value).decode() if size is not None else "")
    if size is not None and size <= limit and len(value) <= 256:
        assert fitted is value or (nul and "\x00" not in orjson.dumps(fitted).decode())
    else:
        assert fitted["truncated"] is True and len(orjson.dumps(fitted)) <= limit
    TypeAdapter(JsonObject).validate_python(fit_json(value))


def test_a_nul_in_raw_output_is_kept_as_a_replacement_character() -> None:
    """PostgreSQL (the read model) cannot store U+0000: the contract refuses it in a
    JSON object, and the adapter's fitting replaces it, so the step is still recorded."""
    fitted = fit_json({"value": "a\x00b", "k\x00": ["\x00"]})
    assert fitted == {"value": "a\ufffdb", "k\ufffd": ["\ufffd"]}
    TypeAdapter(JsonObject).validate_python(fitted)
    with pytest.raises(ValidationError, match="NUL"):
        TypeAdapter(JsonObject).validate_python({"value": "a\x00b"})
    TypeAdapter(JsonObject).validate_python({"text": "\\u0000 written out is fine"})


def test_fit_json_takes_lone_surrogates_and_huge_values() -> None:
    for value in (
        {"x": "\ud800"},
        {"x": "y" * (MAX_JSON_BYTES * 3)},
        {str(i): i for i in range(300)},
    ):
        fitted = TypeAdapter(JsonObject).validate_python(fit_json(value))
        assert fitted["truncated"] is True
