"""Pure helpers of the local stack."""

from __future__ import annotations

import base64

from conn_localstack.kafka import new_cluster_id


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(5000)}  # ~78 would start with '-' unguarded
    assert all(not cid.startswith("-") for cid in ids)
    assert all(len(base64.urlsafe_b64decode(cid + "==")) == 16 for cid in ids)
