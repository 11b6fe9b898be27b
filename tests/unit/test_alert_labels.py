"""Alert labels at intake (issue 14: bounded, never cut silently): at most MAX_LABELS
reach the AlertReceived; what is left out (too many, or not a label name) is counted in
`conn_labels_left_out`, and the labels that identify the alert are kept first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conn_api.alerts import LEFT_OUT_LABEL, _labels
from conn_schemas.events import AlertReceivedPayload
from conn_schemas.values import MAX_LABELS


def test_labels_within_the_bound_are_all_kept() -> None:
    raw = {f"l{i}": str(i) for i in range(MAX_LABELS)}
    assert _labels(raw) == raw


def test_labels_over_the_bound_are_counted_and_the_identifying_ones_kept() -> None:
    raw = {f"l{i:03d}": str(i) for i in range(100)} | {"service": "orders", "alertname": "X"}
    out = _labels(raw)
    assert len(out) == MAX_LABELS
    assert out["service"] == "orders" and out["alertname"] == "X"
    assert int(out[LEFT_OUT_LABEL]) == len(raw) - (MAX_LABELS - 1)


def test_a_name_that_is_not_a_label_name_is_counted() -> None:
    out = _labels({"service": "orders", "bad-name": "x", "9x": "y"})
    assert out == {"service": "orders", LEFT_OUT_LABEL: "2"}


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=80))
def test_whatever_arrives_fits_the_contract_and_is_accounted_for(raw: dict[str, str]) -> None:
    out = _labels(raw)
    AlertReceivedPayload(source="alertmanager", fingerprint="f", service="s", labels=out)
    kept = len(out) - (1 if LEFT_OUT_LABEL in out and LEFT_OUT_LABEL not in raw else 0)
    left_out = int(out.get(LEFT_OUT_LABEL, "0")) if LEFT_OUT_LABEL not in raw else None
    if left_out is not None:
        assert kept + left_out == len(raw)
