"""In-memory folds of the incidents a consumer owns, fed in log order.

Services keep `IncidentFolds` next to their `EventLoop`. Each record is folded
exactly once even when Kafka redelivers it: positions are tracked per incident
on its (topic, partition) — an incident's records all sit on one partition
(`conn_runtime.partitioning`) and are handled in offset order, so its offsets at
or below the last folded one are redeliveries. Offsets of different partitions
are never compared, and neither are those of different incidents (the loop
handles the incidents of one partition in parallel, each in order). The states of
revoked partitions are dropped so that a re-assignment rebuilds them from offset
0 (the loop's catch-up mode).
"""

from __future__ import annotations

from aiokafka import TopicPartition

from conn_core.fold import evolve, evolve_control
from conn_core.state import ControlState, IncidentState
from conn_runtime.kafka import Consumed, Position
from conn_schemas.events import GLOBAL_INCIDENT


class IncidentFolds:
    def __init__(self) -> None:
        self.states: dict[str, IncidentState] = {}
        self.control = ControlState()
        self._folded: dict[tuple[str, int, str], int] = {}
        """(topic, partition, incident_id) -> offset of the incident's last record folded."""
        self._partition_of: dict[str, tuple[str, int]] = {}

    def is_new(self, position: Position, incident_id: str) -> bool:
        """Not folded yet."""
        key = (position.topic, position.partition, incident_id)
        return position.offset > self._folded.get(key, -1)

    def state(self, incident_id: str) -> IncidentState:
        """The incident's state folded so far (a fresh one if never seen)."""
        state = self.states.get(incident_id)
        if state is None:
            state = self.states[incident_id] = IncidentState(incident_id=incident_id)
        return state

    def apply(self, consumed: Consumed) -> bool:
        """Fold the record if it is new. Returns False for a redelivery."""
        position = consumed.position
        event = consumed.event
        if not self.is_new(position, event.incident_id):
            return False
        self._folded[(position.topic, position.partition, event.incident_id)] = position.offset
        if event.incident_id == GLOBAL_INCIDENT:
            evolve_control(self.control, event)
            return True
        self._partition_of[event.incident_id] = (position.topic, position.partition)
        evolve(self.state(event.incident_id), event)
        return True

    def incidents(self, partitions: set[TopicPartition]) -> list[str]:
        """Incidents folded from these partitions (e.g. to rescan after catch-up)."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        return [incident for incident, where in self._partition_of.items() if where in keys]

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop everything folded from these partitions (after a revoke)."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        for incident, where in list(self._partition_of.items()):
            if where in keys:
                del self._partition_of[incident]
                self.states.pop(incident, None)
        for folded in [k for k in self._folded if k[:2] in keys]:
            del self._folded[folded]
