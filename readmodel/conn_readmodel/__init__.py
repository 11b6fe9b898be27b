"""conn_readmodel: the PostgreSQL read model shared by the packager (which writes it) and
the directive API and `conn replay` (which read and rebuild it).

- `store`: schema DDL, the pool, writing one event's rows with its offset;
- `projection`: the pure (incident so far, event, position) -> rows step;
- `projector`: records -> rows or refusals (trust, placement, projection), without I/O;
- `packet`: the takeover packet built from an incident's fold;
- `queries`: reads for other services (incident, ledger, packets, timeline, fleet);
- `timeline`: the post-incident timeline;
- `replay`: `conn replay` (verify the log, rebuild the read model, prove it equal).
"""
