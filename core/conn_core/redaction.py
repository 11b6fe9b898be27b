"""The secret detector: scrubs credentials, hosts and addresses from free text before it
reaches an incident-record note, a packet or a summary (invariant 10, minimal
disclosure). Pure functions; shared by the executor (step summaries, errors), the
record adapter and anything else that shows tool output to people.

A tested rule set rather than a library: a scrubber must remove a secret wherever it
sits in a sentence (maintained scanners such as detect-secrets report findings per
line with heuristics that skip values which "look like ids", which is the wrong trade
here). The shapes covered are listed in `RULES`; tests/unit/test_secret_detector.py
embeds generated secrets of each shape in random text and checks none survives.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_KEYWORDS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|credentials?|authorization|auth"
)
_VALUE = r"(?:\"[^\"]*\"?|'[^']*'?|[^\s,;'\"]+)"

# Order matters: whole blocks and URLs first, then credentials, then bare hosts.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private key block",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?"
            r"(?:-----END[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
    ),
    ("url", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)),
    ("user:pass@host", re.compile(r"[^\s:/@'\"<>]+:[^\s/@'\"<>]+@[^\s/'\"<>]+")),
    ("bearer/basic", re.compile(r"\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")),
    (
        "key = value",
        re.compile(
            rf"[A-Za-z0-9_.-]*(?:{_KEYWORDS})[\"']?\s*(?:[:=]|=>)\s*(?:bearer\s+|basic\s+)?{_VALUE}",
            re.IGNORECASE,
        ),
    ),
    (
        "password is ...",
        re.compile(
            rf"\b(?:{_KEYWORDS})\s+(?:is|was|of|for\s+\S+\s+is)\s*:?\s*{_VALUE}",
            re.IGNORECASE,
        ),
    ),
    (
        "aws access key id",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b"),
    ),
    (
        "vendor token",
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
            r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}|glpat-[A-Za-z0-9_-]{20,}"
            r"|npm_[A-Za-z0-9]{36})"
        ),
    ),
    ("ipv4", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")),
    ("ipv6", re.compile(r"\b(?:[0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b", re.IGNORECASE)),
    (
        "hostname",
        re.compile(
            r"\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
            r"(?:local|internal|lan|corp|com|net|org|io|cloud|svc|cluster|dev|prod)\b(?::\d+)?",
            re.IGNORECASE,
        ),
    ),
    ("localhost", re.compile(r"\blocalhost(?::\d+)?\b", re.IGNORECASE)),
    ("long hex", re.compile(r"\b[A-Fa-f0-9]{32,}\b")),
    # 40+ characters of base64/url-safe alphabet: AWS secret access keys, opaque tokens.
    ("opaque token", re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}")),
)

MAX_SUMMARY = 500


def redact(text: str) -> str:
    """`text` with every secret-looking span replaced by REDACTED (not truncated)."""
    out = text
    for _name, pattern in RULES:
        out = pattern.sub(REDACTED, out)
    return out


def scrub(text: str, *, limit: int = MAX_SUMMARY) -> str:
    """A redacted one-line summary: secrets removed, whitespace folded, cut to `limit`."""
    out = " ".join(redact(text).split())
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
