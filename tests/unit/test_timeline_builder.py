"""Pure post-incident timeline builder."""

from __future__ import annotations

from packager.packager_scenario import EXECUTOR, mixed_state, recovered

from conn_readmodel.timeline import build_timeline, render_timeline_markdown
from conn_schemas.events import StepOutcomeUnknown, StepOutcomeUnknownPayload
from conn_schemas.observations import Observation
from conn_schemas.values import DrainWorkerPool


def test_instructions_link_to_actions_verifications_and_bridge_state() -> None:
    report = build_timeline(mixed_state().events)
    by_corr = {i["correlation_id"]: i for i in report["instructions"] if i["correlation_id"]}
    assert set(by_corr) == {"c-drain", "c-restart", "c-note"}
    # declaring the authority is a human instruction too, with its file's hash
    (declared,) = [i for i in report["instructions"] if i["event_type"] == "AuthorityDeclared"]
    assert "checkout-outage@" in declared["summary"] and "sha256" in declared["summary"]
    drain = by_corr["c-drain"]
    assert [a["event_type"] for a in drain["actions"]] == [
        "DirectiveAccepted",
        "StepStarted",
        "StepSucceeded",
    ]
    assert [v["summary"].split(":")[0] for v in drain["verifications"]] == ["verdict mixed"]
    assert drain["verifications"][0]["bridge_after"]["on_hold"] is True
    assert drain["bridge_before"]["holder"] == "alice"
    assert drain["bridge_before"]["on_hold"] is False
    assert by_corr["c-restart"]["actions"][0]["event_type"] == "DirectiveRefused"
    assert by_corr["c-note"]["actions"] == []
    assert by_corr["c-restart"]["bridge_before"]["open_step"] == "c-drain"


def test_slis() -> None:
    s = build_timeline(mixed_state().events)["slis"]
    # opened at tick 1 (T0+10s); first StepStarted is the 6th event (T0+60s)
    assert s["time_to_first_action_seconds"] == 50.0
    assert s["time_to_verified_recovery_seconds"] is None  # mixed, never recovered
    assert s["refusals_by_reason"] == {"previous_step_unverified": 1}
    assert s["holds"] == 1
    ok = build_timeline(recovered("inc-ok", handoff=True).events)["slis"]
    assert ok["time_to_verified_recovery_seconds"] == 60.0  # opened T0+10s, snapshot T0+70s
    assert ok["takeovers"]["requested"] == 1
    assert ok["steps_with_unknown_outcome"] == 0


def test_unknown_outcomes_are_counted_and_markdown_renders() -> None:
    script = recovered("inc-u")
    script.add(
        StepOutcomeUnknown,
        StepOutcomeUnknownPayload(
            action=DrainWorkerPool(pool="checkout-workers", region="eu-west"),
            reason="executor crashed",
            observation=Observation(),
        ),
        actor=EXECUTOR,
        cid="c-drain",
    )
    report = build_timeline(script.events)
    assert report["slis"]["steps_with_unknown_outcome"] == 1
    md = render_timeline_markdown(report)
    assert "Steps with unknown outcome: 1" in md
    assert "DirectiveIssued by alice" in md


def test_markdown_marks_only_recovered_verdicts_as_passing() -> None:
    md = render_timeline_markdown(build_timeline(mixed_state().events))
    mixed_lines = [line for line in md.splitlines() if "verdict mixed" in line]
    assert mixed_lines and all(line.startswith("- ✖") for line in mixed_lines)
    md_ok = render_timeline_markdown(build_timeline(recovered("inc-ok").events))
    ok_lines = [line for line in md_ok.splitlines() if "verdict recovered" in line]
    assert ok_lines and all(line.startswith("- ✔") for line in ok_lines)
