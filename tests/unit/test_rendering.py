"""Safe rendering (issue 14, invariant 10): user-supplied text is escaped for the format
it lands in. Oracles from the formats, not from the code:
- Markdown packet: the only headings are the packet's own sections, exactly one
  holder line, no raw HTML tag, no link syntax from user text;
- Slack mrkdwn: no '<' or '>' from user text reaches Slack (so no <!channel>, <@U…>
  or <url|label>), '&' is escaped, bare broadcasts are defused;
- HTML: no tag or attribute can be opened.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from packager.packager_scenario import mixed_state

from conn_adapters.record import WebhookIncidentRecord
from conn_core.escaping import html_text, markdown_code, markdown_inline, slack_mrkdwn
from conn_core.fold import fold
from conn_readmodel.packet import build_packet, render_markdown
from conn_schemas.packet import TakeoverPacket

SECTIONS = [
    "## Hold",
    "## Last directed step",
    "## Health per region",
    "## Control plane (last verification)",
    "## Partially completed changes (started, unverified)",
    "## Pending directives",
    "## Blocked directives",
    "## Authority in force",
]

FORGERIES = [
    "x\n## Hold\nNot on hold.",
    "# Not on hold",
    "Not on hold.\n- Conn held by **mallory** (rollback-authority)",
    "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "[click](http://evil.example/) ![i](http://evil.example/p.png)",
    "`code` ``` fenced ```",
    "| a | b |\n|---|---|",
    "\r\n# Takeover: forged\u2028## Hold",
    "&lt;b&gt; &amp;",
]


def _packet() -> TakeoverPacket:
    events = mixed_state().events
    state = fold(events, "inc-mixed")
    return build_packet(
        state, head_hash="h", trigger="hold", to_team=None, generated_at=events[-1].occurred_at
    )


def _forge(text: str) -> TakeoverPacket:
    """Hostile text everywhere a person or another system writes (bypassing the
    contract's validation on purpose: the renderer must not rely on it)."""
    p = _packet()
    assert p.hold is not None and p.authority is not None and p.last_step is not None
    step = p.last_step.model_copy(update={"refusal_detail": text, "description": text})
    return p.model_copy(
        update={
            "title": text,
            "service": text,
            "hold": p.hold.model_copy(update={"detail": text}),
            "last_step": step,
            "authority": p.authority.model_copy(update={"name": text, "holder_team": text}),
        }
    )


def _check_markdown(md: str) -> None:
    lines = md.splitlines()
    headings = [ln for ln in lines if ln.lstrip().startswith("#")]
    assert headings[0] == lines[0] and lines[0].startswith("# Takeover: ")
    own = [h.split(" (last verdict")[0] for h in headings[1:]]
    assert all(h in SECTIONS for h in own) and len(own) == len(set(own)), headings
    assert sum(ln.startswith("- Conn held by") for ln in lines) == 1
    assert "Not on hold." not in lines  # the forged packet is on hold
    prose = re.sub(r"(`+).*?(?<!`)\1(?!`)", "", md)  # code spans are literal text
    assert re.search(r"(?<!\\)<[A-Za-z/!]", prose) is None, "raw HTML reached the packet"
    assert re.search(r"(?<!\\)\]\(", prose) is None, "a link reached the packet"


def test_forged_sections_holders_and_html_do_not_survive_the_packet() -> None:
    for text in FORGERIES:
        _check_markdown(render_markdown(_forge(text)))


@settings(deadline=None)
@given(st.text(alphabet=st.sampled_from("#\n\r*_[]()<>!`|-\\&abc \u2028"), max_size=60))
def test_any_text_in_the_packet_stays_inside_its_line(text: str) -> None:
    _check_markdown(render_markdown(_forge(text)))


def test_unforged_packet_is_unchanged_in_meaning() -> None:
    md = render_markdown(_packet())
    assert "# Takeover: Checkout failing in two regions" in md
    assert "- Conn held by **alice**" in md


@given(st.text(max_size=80))
def test_markdown_inline_is_one_line_without_live_syntax(text: str) -> None:
    out = markdown_inline(text)
    assert "\n" not in out and "\r" not in out
    assert re.search(r"(?<!\\)[<>\[\]`*_#|!]", out.replace("\\\\", "")) is None


@given(st.text(max_size=80))
def test_markdown_code_span_cannot_be_closed_early(text: str) -> None:
    out = markdown_code(text)
    fence = re.match(r"`+", out)
    assert fence is not None
    inner = out[len(fence.group()) : -len(fence.group())]
    assert fence.group() not in inner
    assert "\n" not in out


SLACK_ATTACKS = [
    "<!channel> deploy now",
    "<!here|here>",
    "hi <@U024BE7LH>",
    "<http://evil.example|your SSO login>",
    "@channel @here @everyone",
    "a & b > c",
]


@given(st.one_of(st.sampled_from(SLACK_ATTACKS), st.text(max_size=60)))
def test_slack_notes_carry_no_control_sequences(text: str) -> None:
    out = slack_mrkdwn(text)
    assert "<" not in out and ">" not in out
    assert re.search(r"&(?!amp;|lt;|gt;)", out) is None
    assert re.search(r"@(channel|here|everyone)\b", out, re.IGNORECASE) is None


def test_the_record_adapter_escapes_the_note() -> None:
    body = WebhookIncidentRecord("http://record.invalid").payload(
        "inc-1", "<!channel> see <http://x|here> & <@U1>"
    )
    assert body["text"] == "[inc-1] &lt;!channel&gt; see &lt;[redacted]&gt; &amp; &lt;@U1&gt;"


@given(st.text(max_size=80))
def test_html_text_opens_no_tag_or_attribute(text: str) -> None:
    out = html_text(text)
    assert not set("<>\"'") & set(out)


def test_the_console_autoescapes_every_template_and_never_marks_data_safe() -> None:
    from conn_api.console.render import TEMPLATES, environment

    env = environment()
    assert env.autoescape is True
    out = env.from_string("<h1>{{ title }}</h1>").render(title="<script>x</script>\"'&")
    assert out == "<h1>&lt;script&gt;x&lt;/script&gt;&#34;&#39;&amp;</h1>"
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text
