"""A genuine kill-switch record, re-published byte for byte (signature and all) by a
client holding the API's broker login, changes nothing.

The signature is valid -- it is the API's own record -- so only the fold can refuse
it: an old KillSwitchReleased replayed after a new engage must not show the kill switch
released (it did: the API then answered "not engaged" to the admin's real release,
while the executors' stop in PostgreSQL stayed on)."""

from __future__ import annotations

import asyncio
from typing import Any

from security_support import RawWriter, as_, raw_records


async def test_a_replayed_release_leaves_the_kill_switch_engaged(
    api: Any, kafka_bootstrap: str, conn_topics: Any, trust: Any
) -> None:
    view = api.app.state.runtime.view
    for path in ("engage", "release", "engage"):
        r = await api.client.post(
            f"/v1/kill-switch/{path}", json={"reason": f"drill {path}"}, headers=as_("root")
        )
        assert r.status_code == 200, r.text
    assert (await api.client.get("/v1/control", headers=as_("olive"))).json()["kill_switch"]

    records = await raw_records(kafka_bootstrap, conn_topics.control, trust.kafka_options("sre"))
    assert len(records) == 3
    release = records[1]
    leaked_api_login = RawWriter(kafka_bootstrap, trust.kafka_options("directive-api"))
    await leaked_api_login.send(
        conn_topics.control, release.key, release.value, list(release.headers)
    )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(view.control_log) < 4:  # the API's fold has read the replay
        assert loop.time() < deadline, "the API's fold never read the replayed record"
        await asyncio.sleep(0.05)
    assert view.control_log[-1].event.event_id == view.control_log[1].event.event_id

    control = (await api.client.get("/v1/control", headers=as_("olive"))).json()
    assert control["kill_switch"] is True, control
    assert control["reason"] == "drill engage"
    r = await api.client.post(
        "/v1/kill-switch/release", json={"reason": "the real release"}, headers=as_("root")
    )
    assert r.status_code == 200, r.text
    assert (await api.client.get("/v1/control", headers=as_("olive"))).json()["kill_switch"] is (
        False
    )
