"""deploy/grafana/conn-dashboard.json: valid JSON, and every query names metrics and labels
that the services really export (read from the metric objects in the code, not a list)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_support import ROOT, exported_metrics, promql_problems

DASHBOARD = ROOT / "deploy" / "grafana" / "conn-dashboard.json"


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels") or [])
    return out


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (p["title"], t["expr"])
        for p in _panels(dash)
        if p.get("type") != "row"
        for t in p.get("targets") or []
    ]


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return exported_metrics()


def test_dashboard_is_valid_grafana_json(dash: dict[str, Any]) -> None:
    assert dash["uid"] and dash["title"]
    panels = [p for p in _panels(dash) if p["type"] != "row"]
    assert len(panels) >= 20
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace"} <= names


def test_every_panel_metric_and_label_exists_in_the_code(
    dash: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    assert "conn_records_consumed_total" in exported  # the import found the shared metrics
    assert "conn_executor_side_effects_after_stop_total" in exported
    problems = [
        f"{title}: {p}" for title, expr in _exprs(dash) for p in promql_problems(expr, exported)
    ]
    assert problems == []


def test_verdict_values_are_real_verdicts(dash: dict[str, Any]) -> None:
    from conn_schemas.values import Verdict

    values = {v.value for v in Verdict}
    found = [v for _, e in _exprs(dash) for v in re.findall(r'verdict="([^"]+)"', e)]
    assert found, "the dashboard should single out a verdict (stale_metrics)"
    assert set(found) <= values


def test_the_safety_signals_have_panels(dash: dict[str, Any]) -> None:
    text = " ".join(e for _, e in _exprs(dash))
    for needle in (
        "conn_executor_side_effects_after_stop_total",
        "conn_executor_containment_seconds_bucket",
        "conn_consumer_lag_records",
        "conn_records_dead_lettered_total",
        'verdict="stale_metrics"',
        'status=~"5.."',
    ):
        assert needle in text, needle


def test_the_fleet_slis_have_a_panel_row(dash: dict[str, Any]) -> None:
    from conn_packager import fleet as fleet_gauges

    rows = [p["title"] for p in _panels(dash) if p["type"] == "row"]
    assert any(t.startswith("Fleet SLIs") for t in rows)
    text = " ".join(e for _, e in _exprs(dash))
    for key in fleet_gauges.RATES + fleet_gauges.DURATIONS:
        assert f"conn_fleet_{key}" in text, key
    assert "conn_fleet_unauthorized_side_effects" in text
    assert "conn_fleet_caught_by_reason" in text


def test_the_two_person_rule_has_a_panel_row(dash: dict[str, Any]) -> None:
    """Issue 19: time to approval, declines and cancellations, votes refused or not
    counted at the API, and dry runs are on the dashboard."""
    rows = [p["title"] for p in _panels(dash) if p["type"] == "row"]
    assert any(t.startswith("Two-person rule") for t in rows)
    text = " ".join(e for _, e in _exprs(dash))
    for needle in (
        "conn_executor_time_to_approval_seconds_bucket",
        "conn_executor_approvals_total",
        'outcome=~"declined|cancelled"',
        "conn_api_approvals_total",
        "conn_api_dry_runs_total",
    ):
        assert needle in text, needle
