"""One incident, one partition (invariant 8): where an incident's records belong,
and folds that track positions per (topic, partition)."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from builders import History
from hypothesis import given
from hypothesis import strategies as st

from conn_runtime.folds import IncidentFolds
from conn_runtime.kafka import Consumed, Position
from conn_runtime.partitioning import misplaced, partition_for
from conn_schemas.events import GLOBAL_INCIDENT

EVENTS, CONTROL = "p.conn.events", "p.conn.control"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True), st.integers(1, 64))
def test_the_same_partition_as_the_default_partitioner(incident: str, partitions: int) -> None:
    """What the producers (aiokafka's default partitioner, murmur2 like the Java
    client's) do with key = incident_id."""
    expected = DefaultPartitioner()(incident.encode(), list(range(partitions)), [])
    assert partition_for(incident, partitions) == expected


def where(incident: str, topic: str, partition: int, partitions: int = 6) -> str | None:
    return misplaced(
        incident,
        topic=topic,
        partition=partition,
        partitions=partitions,
        events_topic=EVENTS,
        control_topic=CONTROL,
    )


def test_only_the_keys_partition_is_the_incidents() -> None:
    home = partition_for("inc-1", 6)
    assert where("inc-1", EVENTS, home) is None
    for other in set(range(6)) - {home}:
        reason = where("inc-1", EVENTS, other)
        assert reason is not None and f"belongs on partition {home}" in reason
    assert where(GLOBAL_INCIDENT, EVENTS, partition_for(GLOBAL_INCIDENT, 6)) is not None
    assert where(GLOBAL_INCIDENT, CONTROL, 0, 1) is None
    assert where("inc-1", CONTROL, 0, 1) is not None
    assert where("inc-1", "some.other.topic", 3) is None


def consumed(event: object, partition: int, offset: int, topic: str = EVENTS) -> Consumed:
    return Consumed(event, Position(topic, partition, offset), replaying=False)  # type: ignore[arg-type]


def test_folds_never_compare_offsets_across_partitions() -> None:
    """Two incidents on different partitions: a high offset on one partition must not
    make the other's lower offsets look like redeliveries."""
    a = History("inc-a").open().declare()
    b = History("inc-b").open().declare()
    folds = IncidentFolds()
    assert folds.apply(consumed(a.events[0], partition=0, offset=900))
    assert folds.apply(consumed(b.events[0], partition=1, offset=0))
    assert folds.apply(consumed(b.events[1], partition=1, offset=1))
    assert folds.apply(consumed(a.events[1], partition=0, offset=901))
    assert not folds.apply(consumed(a.events[1], partition=0, offset=901)), "a redelivery"
    assert folds.states["inc-a"].sequence == 2 and folds.states["inc-b"].sequence == 2
    folds.forget({TopicPartition(EVENTS, 0)})
    assert "inc-a" not in folds.states and folds.states["inc-b"].sequence == 2
    assert folds.apply(consumed(a.events[0], partition=0, offset=900)), "re-read after revoke"


def test_incidents_of_one_partition_are_tracked_apart() -> None:
    """The loop handles the incidents of a partition in parallel (each in order): a
    higher offset of one incident must not make another's lower offsets look like
    redeliveries (found by the fault suite)."""
    a = History("inc-a").open().declare()
    b = History("inc-b").open().declare()
    folds = IncidentFolds()
    assert folds.apply(consumed(a.events[0], partition=0, offset=10))
    assert folds.apply(consumed(a.events[1], partition=0, offset=12))
    assert folds.apply(consumed(b.events[0], partition=0, offset=11)), "b's record is new"
    assert folds.apply(consumed(b.events[1], partition=0, offset=13))
    assert not folds.apply(consumed(b.events[0], partition=0, offset=11))
    assert folds.states["inc-a"].sequence == 2 and folds.states["inc-b"].sequence == 2
