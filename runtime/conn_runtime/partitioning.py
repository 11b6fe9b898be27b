"""One incident, one partition (invariant 8): where an incident's records must sit.

`conn.events` is keyed by `incident_id`, so with Kafka's default partitioner (the
Java client's and aiokafka's: murmur2 of the key bytes, made positive, modulo the
partition count) every record of an incident lands on one partition, and that
partition's offset order is the incident's total order. A record of an incident
on any other partition (another client's partitioner, an explicit partition, a
wrong key) has no defined place in that order: every consumer (the services'
loops, the executor's look-ahead, the API's fold, the packager and `conn replay`)
leaves it out the same way, and the consuming services dead-letter it with the
reason, so all of them fold the same history. (The key itself is checked with
the record's signature; the partition count of `conn.events` must never change.)

Global control records (the kill switch) travel only on `conn.control`.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

from conn_schemas.events import GLOBAL_INCIDENT

WRONG_PARTITION = "wrong_partition"
"""Dead-letter reason of a record that is not where its incident's records belong."""


@lru_cache(maxsize=65_536)
def partition_for(incident_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner puts key `incident_id` on."""
    if partitions <= 0:
        raise ValueError("a topic has at least one partition")
    return int(murmur2(incident_id.encode()) & 0x7FFFFFFF) % partitions


def misplaced(
    incident_id: str,
    *,
    topic: str,
    partition: int,
    partitions: int,
    events_topic: str,
    control_topic: str,
) -> str | None:
    """Why a record of `incident_id` at (topic, partition) is not where it belongs,
    or None. Topics other than the events and control topics are not checked."""
    if topic == control_topic:
        if incident_id != GLOBAL_INCIDENT:
            return f"incident {incident_id!r} on the global control topic {topic}"
        return None
    if topic != events_topic:
        return None
    if incident_id == GLOBAL_INCIDENT:
        return f"a global control record on the events topic {topic}"
    expected = partition_for(incident_id, partitions)
    if partition != expected:
        return (
            f"incident {incident_id!r} belongs on partition {expected} of {partitions} "
            f"(its key's hash), not {partition}: left out of the incident's order"
        )
    return None
