"""Containment, measured (invariant 7): how long after a stop was thrown did side
effects still start? In memory, no I/O: the shell notes each side effect as it
begins and each stop as it first sees it (in the log, on conn.control, in the
stops table or at the gate)."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from datetime import datetime

from conn_executor import metrics as m
from conn_executor.steps import StopKind
from conn_runtime.stops import GLOBAL_SCOPE

log = logging.getLogger(__name__)


class Containment:
    def __init__(self) -> None:
        self._starts: defaultdict[str, deque[datetime]] = defaultdict(lambda: deque(maxlen=64))
        self._all_starts: deque[datetime] = deque(maxlen=256)
        self._stops_seen: set[tuple[str, str, datetime]] = set()

    def side_effect(self, incident_id: str, at: datetime) -> None:
        """A side effect starts now on this incident."""
        self._starts[incident_id].append(at)
        self._all_starts.append(at)

    def stop_seen(self, kind: StopKind, scope: str, thrown_at: datetime) -> None:
        """A stop (`scope`: the incident, or the global scope for the kill switch)
        thrown at `thrown_at`: count the side effects that started after it (once per
        stop) and observe the containment latency."""
        key = (kind, scope, thrown_at)
        if key in self._stops_seen:
            return
        self._stops_seen.add(key)
        starts = self._all_starts if scope == GLOBAL_SCOPE else self._starts.get(scope, ())
        late = [s for s in starts if s > thrown_at]
        if late:
            m.SIDE_EFFECTS_AFTER_STOP.labels(kind).inc(len(late))
            log.error(
                "side effects started after a stop was thrown",
                extra={"kind": kind, "scope": scope, "count": len(late)},
            )
        latency = max((s - thrown_at).total_seconds() for s in late) if late else 0.0
        m.CONTAINMENT_SECONDS.labels(kind).observe(latency)
