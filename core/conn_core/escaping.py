"""Escaping user-supplied text for the format it lands in: one function per context.

Pure functions, no I/O. Every string a person or another system wrote (titles, hold
details, alert summaries, refusal details, names) goes through exactly one of these
when it is placed into Markdown (takeover packets), Slack mrkdwn (incident-record
notes) or HTML (anything rendered outside Jinja's autoescape). They never trust the
contract alone: control characters are dropped here too (defence in depth).
"""

from __future__ import annotations

import html
import re
import unicodedata

_CONTROL = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NEWLINES = re.compile(r"[\n\u2028\u2029]+")

# Characters with a meaning inside a Markdown line (CommonMark lets any ASCII
# punctuation be backslash-escaped). '-', '+', '.', digits only matter at the start of
# a line, which user text never is here (newlines are folded first).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|!~{}()=])")


def _plain(text: str) -> str:
    return _CONTROL.sub("", unicodedata.normalize("NFC", text)).replace("\t", " ")


def markdown_inline(text: str) -> str:
    """Text placed inside one Markdown line: newlines folded to spaces, Markdown and
    HTML syntax escaped (no headings, links, emphasis, tables or raw HTML)."""
    one_line = _NEWLINES.sub(" ", _plain(text))
    escaped = _MD_SPECIAL.sub(r"\\\1", one_line)
    return escaped.replace("&", "&amp;")


def markdown_code(text: str) -> str:
    """An inline code span holding `text` verbatim (ids, hashes, action descriptions)."""
    one_line = _NEWLINES.sub(" ", _plain(text))
    longest = max((len(m) for m in re.findall(r"`+", one_line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") or longest else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def markdown_quote(text: str) -> list[str]:
    """A multi-line note as Markdown block-quote lines, each line escaped."""
    lines = _NEWLINES.split(_plain(text)) or [""]
    return [f"> {markdown_inline(line)}" for line in lines]


def html_text(text: str) -> str:
    """Text for HTML element content or a quoted attribute value."""
    return html.escape(_plain(text), quote=True)


_SLACK_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)


def slack_mrkdwn(text: str) -> str:
    """Text for a Slack (or Slack-compatible) message: '&', '<' and '>' escaped as Slack
    documents, so no `<!channel>`, `<@U123>` mention or `<http://x|label>` link survives,
    and bare broadcast words (@channel, @here, @everyone) are defused."""
    escaped = _plain(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SLACK_BROADCAST.sub(lambda m: "@\u2060" + m.group(1), escaped)
