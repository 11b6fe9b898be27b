"""The input policy's character scan (`values.forbidden_char`) is one compiled regular
expression; the rule it implements is the per-character one below (Unicode categories
Cc and Cs, the bidirectional controls, the line and paragraph separators, and "\\n"
unless the text is multi-line). Checked for every code point, and for the first
refused character of arbitrary text."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conn_schemas.values import forbidden_char

_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def reference(text: str, *, multiline: bool) -> str | None:
    """The rule as it was written before (one Python step per character)."""
    for ch in text:
        if ch == "\n" and multiline:
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs") or ch in _BIDI or ch in "\u2028\u2029":
            return ch
    return None


@pytest.mark.parametrize("multiline", [True, False])
def test_every_code_point_is_judged_as_the_rule_says(multiline: bool) -> None:
    wrong = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if forbidden_char(chr(code), multiline=multiline)
        != reference(chr(code), multiline=multiline)
    ]
    assert wrong == []


@given(
    st.text(
        st.characters(codec=None, exclude_categories=())
        | st.sampled_from("\n\r\t\u2028\u2029\u202e\u2066\x85\x7f\ud800\udfff"),
        max_size=40,
    ),
    st.booleans(),
)
def test_the_first_refused_character_is_the_rules(text: str, multiline: bool) -> None:
    assert forbidden_char(text, multiline=multiline) == reference(text, multiline=multiline)
