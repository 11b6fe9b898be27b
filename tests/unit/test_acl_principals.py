"""The ACLs as data: only a service's own principal matches its consumer group.

Issue 12 item 5 ("only executors may join the executor consumer group"). Kafka grants
a group to every binding whose name equals it (LITERAL) or is a prefix of it
(PREFIXED); integrations and readers get PREFIXED groups named after themselves, so a
principal named like the start of a service's group (`conn`, `conn-exec`) would share
that service's group. Such names are refused, with a clear message and exit 2 from the
topics job, instead of being granted."""

from __future__ import annotations

import pytest

from conn_runtime.acls import (
    AclBinding,
    Groups,
    KafkaPrincipals,
    Operation,
    PatternType,
    ResourceType,
    acl_bindings,
)
from conn_runtime.settings import Topics
from conn_runtime.topics import main

SERVICE_GROUP_OWNER = {"conn-executor": "executor", "conn-verifier": "verifier"}


def _matches(binding: AclBinding, group: str) -> bool:
    if binding.resource_type is not ResourceType.GROUP:
        return False
    if binding.pattern is PatternType.LITERAL:
        return binding.name == group
    return group.startswith(binding.name)


@pytest.mark.parametrize("prefix", ["", "t42."])
def test_only_the_owner_may_use_a_service_group(prefix: str) -> None:
    bindings = acl_bindings(
        Topics.with_prefix(prefix),
        KafkaPrincipals(integrations=("status-page", "conn-status"), readers=("sre",)),
        Groups(prefix=prefix),
    )
    for group, owner in SERVICE_GROUP_OWNER.items():
        users = {b.principal for b in bindings if _matches(b, prefix + group)}
        assert users == {f"User:{owner}"}, (group, users)
    packager = {b.principal for b in bindings if _matches(b, f"{prefix}conn-packager")}
    assert packager == {"User:packager"}
    assert all(b.operation is not Operation.ALL for b in bindings if b.principal != "User:packager")


@pytest.mark.parametrize(
    ("integrations", "readers", "why"),
    [
        (("conn",), (), "'conn-executor'"),
        (("conn-exec",), (), "'conn-executor'"),
        ((), ("conn-verifier",), "'conn-verifier'"),
        (("executor",), (), "Conn service's Kafka principal"),
        ((), ("directive-api",), "Conn service's Kafka principal"),
    ],
)
def test_a_principal_that_would_share_a_service_group_is_refused(
    integrations: tuple[str, ...], readers: tuple[str, ...], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        acl_bindings(Topics(), KafkaPrincipals(integrations=integrations, readers=readers))


def test_the_topics_job_refuses_it_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--acls", "--integration", "conn"]) == 2
    err = capsys.readouterr().err
    assert "invalid ACL principals" in err and "'conn-executor'" in err
    assert "Traceback" not in err
