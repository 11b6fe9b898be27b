"""The secret detector (conn_core.redaction) plays against generated secrets of every
shape issue 14 lists, embedded in random text: none may survive (invariant 10)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conn_core.redaction import REDACTED, redact, scrub

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
B64 = ALNUM + "+/"
DASHES = "-" * 5  # built at run time: the repository hygiene test greps for PEM markers
PK = "PRIVATE" + " KEY"

value = st.text(alphabet=ALNUM + "!#$%^*-_.~", min_size=8, max_size=24).filter(
    lambda v: any(c.isalnum() for c in v)
)
keyword = st.sampled_from(
    [
        "password",
        "dbpassword",
        "DB_PASSWORD",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "token",
        "auth_token",
        "api_key",
        "apiKey",
        "API-KEY",
        "access_key",
        "aws_secret_access_key",
        "private_key",
        "credentials",
        "Authorization",
    ]
)


@st.composite
def secret(draw: st.DrawFn) -> tuple[str, str]:
    """(text containing a secret, the secret part that must not survive)."""
    kind = draw(
        st.sampled_from(
            [
                "assign",
                "quoted",
                "json",
                "is",
                "url",
                "userinfo",
                "akia",
                "aws_secret",
                "bearer",
                "pem",
                "github",
                "slack",
            ]
        )
    )
    v = draw(value)
    k = draw(keyword)
    if kind == "assign":
        sep = draw(st.sampled_from(["=", ": ", " = ", ":", "=>"]))
        return f"{k}{sep}{v}", v
    if kind == "quoted":
        words = draw(st.lists(value, min_size=2, max_size=3))
        return f"{k}='{' '.join(words)}'", words[0]
    if kind == "json":
        return f'{{"{k}": "{v}"}}', v
    if kind == "is":
        k = draw(st.sampled_from(["password", "Password", "secret", "passphrase"]))
        verb = draw(st.sampled_from(["is", "was", "is:"]))
        return f"the {k} {verb} {v}", v
    if kind == "url":
        user = draw(st.text(alphabet=ALNUM, min_size=1, max_size=10))
        scheme = draw(st.sampled_from(["postgres", "https", "redis", "amqp", "mysql"]))
        return f"{scheme}://{user}:{v}@db-1.example.net:5432/orders", v
    if kind == "userinfo":
        user = draw(st.text(alphabet=ALNUM, min_size=1, max_size=10))
        return f"{user}:{v}@pricing-db-01", v
    if kind == "akia":
        key = "AKIA" + draw(st.text(alphabet=UPPER_DIGITS, min_size=16, max_size=16))
        return key, key
    if kind == "aws_secret":
        key = draw(st.text(alphabet=B64, min_size=40, max_size=40))
        return key, key
    if kind == "bearer":
        tok = draw(st.text(alphabet=ALNUM + "._-", min_size=8, max_size=40))
        scheme = draw(st.sampled_from(["Bearer", "bearer", "Basic", "Authorization: Bearer"]))
        return f"{scheme} {tok}", tok
    if kind == "pem":
        body = draw(st.text(alphabet=B64, min_size=20, max_size=60))
        label = draw(st.sampled_from([f"RSA {PK}", PK, f"OPENSSH {PK}"]))
        return f"{DASHES}BEGIN {label}{DASHES}\n{body}\n{DASHES}END {label}{DASHES}", body
    if kind == "github":
        tok = "ghp_" + draw(st.text(alphabet=ALNUM, min_size=36, max_size=36))
        return tok, tok
    tok = "xoxb-" + draw(st.text(alphabet=ALNUM + "-", min_size=20, max_size=40))
    return tok, tok


filler = st.text(alphabet=ALNUM + " .,;:()-", max_size=40)


@settings(max_examples=400, deadline=None)
@given(filler, secret(), filler)
def test_generated_secrets_embedded_in_random_text_never_survive(
    before: str, case: tuple[str, str], after: str
) -> None:
    text, sensitive = case
    out = redact(f"{before} {text} {after}")
    # Only a copy the filler itself happened to contain may remain.
    assert out.count(sensitive) <= (before + after).count(sensitive), (text, out)
    assert REDACTED in out


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("connect failed: dbpassword=hunter2!x", "hunter2"),
        ("postgres://app:s3cr3t@db.internal:5432/x", "s3cr3t"),
        ("dsn app:s3cr3t@orders-db", "s3cr3t"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ("secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here", "wJalrXUtnFEMI"),
        ("the password is correct-horse-battery", "correct-horse"),
        ("Authorization: Bearer abc.def-123456", "abc.def"),
        (
            f"{DASHES}BEGIN RSA {PK}{DASHES}\nMIIEowIBAAKCAQEA\n{DASHES}END RSA {PK}{DASHES}",
            "MIIE",
        ),
        ('{"api_key": "0123456789abcdef"}', "0123456789abcdef"),
        ("client_secret='two words'", "two words"),
    ],
)
def test_the_shapes_issue_14_names_are_scrubbed(text: str, gone: str) -> None:
    assert gone not in scrub(text), scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "drain_worker_pool cache-invalidation in us-east: done",
        "disable_flag_rule checkout-pricing/canary-10pct in eu-west: done "
        "(enabled=true -> enabled=false)",
        "authority checkout-outage@2026-11-22.1 in force",
        "verification: not_recovered in eu-west (error rate 12.00% > 2.00%)",
    ],
)
def test_operational_text_is_kept(text: str) -> None:
    assert scrub(text) == text
