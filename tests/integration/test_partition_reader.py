"""conn_runtime.partitions.PartitionReader on a real broker: the one way to read a
partition outside a consumer group (range, read to the end, partitions, end offsets)."""

from __future__ import annotations

import pytest
from kafka_support import Identities, LedgerWriter
from packager.packager_scenario import mixed_state

from conn_runtime.partitions import PartitionReader, TopicNotFound
from conn_runtime.settings import Topics

pytestmark = pytest.mark.integration


async def test_ranges_and_the_end_are_exactly_what_was_appended(
    kafka_bootstrap: str, conn_topics: Topics, trust: Identities
) -> None:
    kafka = trust.settings(kafka_bootstrap, conn_topics, "packager")
    script = mixed_state("inc-reader")
    async with LedgerWriter(trust, kafka_bootstrap, conn_topics) as writer:
        positions = [(await writer.append_at(e))[1] for e in script]
    partition = positions[0].partition
    offsets = [p.offset for p in positions]
    assert {p.partition for p in positions} == {partition}

    async with PartitionReader(kafka, name="test-reader", timeout=30) as reader:
        assert await reader.partitions(conn_topics.events) == [0, 1, 2]
        ends = await reader.end_offsets(conn_topics.events)
        assert set(ends) == {0, 1, 2}
        end = ends[partition]
        assert end > offsets[-1]
        assert await reader.end_offset(conn_topics.events, partition) == end

        # a range: offsets [start, end) only, in order
        middle = await reader.read_range(conn_topics.events, partition, offsets[1], offsets[3])
        assert [r.offset for r in middle] == [o for o in offsets if offsets[1] <= o < offsets[3]]
        assert all(r.key == b"inc-reader" for r in middle)

        # to the end: the rest, and where to continue next time
        rest, until = await reader.read_to_end(conn_topics.events, partition, offsets[2])
        assert [r.offset for r in rest] == offsets[2:]
        assert until == end
        assert await reader.read_to_end(conn_topics.events, partition, end) == ([], end)
        assert await reader.read_range(conn_topics.events, partition, 5, 5) == []

        # the same reader serves the next read (no group, no committed position)
        again = await reader.read_range(conn_topics.events, partition, offsets[0], end)
        assert [r.offset for r in again] == offsets

        missing = f"{conn_topics.events}.missing"
        assert await reader.partitions(missing) == []
        with pytest.raises(TopicNotFound):
            await reader.end_offsets(missing)
