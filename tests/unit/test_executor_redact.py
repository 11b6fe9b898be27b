"""Redaction for the incident record (invariant 10): no raw output, tokens or hosts."""

from __future__ import annotations

from conn_executor.redact import REDACTED, failure_summary, scrub, step_summary
from conn_schemas.observations import ActionResult
from conn_schemas.values import DisableFlagRule, DrainWorkerPool

SECRETS = [
    "Bearer abc.def-123456",
    "token=s3cr3t-v4lue",
    "api_key: 0123456789abcdef",
    "https://unleash.internal.example.com:4242/api/admin?token=x",
    "10.12.0.7:6443",
    "pricing-db-01.prod.internal",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "fe80:0:0:0:200:f8ff:fe21:67cf",
    "a" * 8 + "0123456789abcdef0123456789abcdef",
]


def test_scrub_removes_credentials_hosts_and_addresses() -> None:
    for secret in SECRETS:
        text = f"call failed: {secret} (retry later)"
        out = scrub(text)
        assert REDACTED in out, (secret, out)
        for fragment in ("s3cr3t", "unleash.internal", "10.12.0.7", "pricing-db-01", "eyJhbGci"):
            assert fragment not in out


def test_scrub_keeps_plain_operational_words() -> None:
    text = "drain_worker_pool cache-invalidation in us-east: done"
    assert scrub(text) == text


def test_scrub_limits_length() -> None:
    assert len(scrub("x " * 2000, limit=100)) <= 100


def test_step_summary_carries_no_raw_output() -> None:
    result = ActionResult(
        idempotency_key="c-1",
        changed=True,
        before={"pool": "cache-invalidation", "desired_replicas": 6, "ready_replicas": 6},
        after={"pool": "cache-invalidation", "desired_replicas": 0, "ready_replicas": 0},
        output={"namespace": "us-east", "server": "https://10.0.0.1:6443", "token": "hunter2"},
    )
    summary = step_summary(DrainWorkerPool(pool="cache-invalidation", region="us-east"), result)
    assert "desired_replicas=6" in summary and "desired_replicas=0" in summary
    assert "hunter2" not in summary and "10.0.0.1" not in summary and "namespace" not in summary


def test_failure_summary_scrubs_the_error() -> None:
    action = DisableFlagRule(flag="checkout-pricing", rule="canary-10pct", region="eu-west")
    out = failure_summary(action, "HTTP 401 from http://127.0.0.1:18080/api with Bearer tok123")
    assert "127.0.0.1" not in out and "tok123" not in out
    assert out.startswith("disable_flag_rule checkout-pricing/canary-10pct in eu-west: failed")
