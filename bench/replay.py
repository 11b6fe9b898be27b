"""3. Replay rate: `conn replay` (conn_readmodel.replay) over >= 1,000,000 generated events.

Events (bench/gen.py: a realistic 57-event incident history cloned across ~17.5k
incidents, pre-encoded with the codec) are produced with batching straight into a fresh
6-partition topic. Each phase runs in its own process (bench/replay_worker.py) so its
peak RSS is its own:

- baseline: raw aiokafka consumption of the whole topic (count only, decode-free);
- ledger:   replay's reader + codec + the packager's projection (fold + hash chain) over
            all events; the ledger rows are bulk-inserted (executemany) - this builds the
            million-entry ledger that chain verification reads;
- chain:    `verify_chain` (conn replay's chain verification) over that ledger;
- rebuild:  `rebuild` (conn replay's full read-model rebuild: every table, row by row, the
            same code as the live packager) - on a stated subset when the full topic would
            take longer than the time budget at the measured rate.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench import gen
from bench.common import Result, console, login
from bench.harness import ROOT, ensure_stack, fresh_database, scratch_topics
from conn_runtime.trust import Signer

NAME = "replay_rate"


def signers() -> dict[str, Signer]:
    """The local stack's dev signing keys of the principals the generator writes as."""
    from conn_localstack.trust import dev_trust
    from conn_runtime.settings import KafkaSettings
    from conn_runtime.trust import signer_for

    trust = dev_trust()
    return {
        name: signer_for(
            KafkaSettings(
                conn_keyring_file=trust.keyring_file, conn_signing_key_file=trust.key_file(name)
            )
        )
        for name in ("directive-api", "executor", "verifier")
    }


async def produce(bootstrap: str, topic: str, total: int) -> float:
    """Produce `total` generated events, each signed by its rightful producer's dev key
    (what every reader verifies); returns events/s, signing included."""
    keys = signers()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=50,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        **login("admin"),
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value, signer in gen.records(total):
            headers = keys[signer].headers(value)
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return total / (time.perf_counter() - started)


async def phase(name: str, *args: str, within: float = 1200) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.replay_worker",
        name,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"replay phase {name} exceeded {within:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"replay phase {name} failed:\n{err.decode()[-2000:]}")
    doc: dict[str, Any] = orjson.loads(out.decode().strip().splitlines()[-1])
    rate = doc["events"] / doc["seconds"] if doc["seconds"] else 0.0
    console.print(
        f"[dim]  {name}: {doc['events']:,} events in {doc['seconds']:.1f}s "
        f"({rate:,.0f}/s), peak RSS {doc['maxrss_mb']:.0f} MB[/dim]"
    )
    return doc


def rate(doc: dict[str, Any]) -> float:
    return float(doc["events"]) / float(doc["seconds"])


async def main(quick: bool = False) -> Result:
    total = 60_000 if quick else 1_000_000
    budget = 30.0 if quick else 180.0  # seconds allowed for the full rebuild phase
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    async with (
        scratch_topics(bootstrap) as full,
        scratch_topics(bootstrap) as probe,
        fresh_database(dsn) as db,
    ):
        console.print(f"[dim]  producing {total:,} events into {full.events}[/dim]")
        produce_rate = await produce(bootstrap, full.events, total)
        base = await phase("raw", "--bootstrap", bootstrap, "--topic", full.events)
        ledger_schema = f"bench_ledger_{uuid.uuid4().hex[:6]}"
        common = ["--bootstrap", bootstrap, "--dsn", db]
        built = await phase("ledger", *common, "--topic", full.events, "--schema", ledger_schema)
        chain = await phase("chain", *common, "--schema", ledger_schema)
        # Rebuild: measure the rate on a probe, then rebuild as much as the budget allows.
        probe_n = min(total, 5_000 if quick else 10_000)
        await produce(bootstrap, probe.events, probe_n)
        probe_doc = await phase(
            "rebuild", *common, "--topic", probe.events, "--schema", "bench_rebuild_probe"
        )
        subset = min(total, max(probe_n, int(rate(probe_doc) * budget) // 1000 * 1000))
        if subset == total:
            projected = await phase("project", *common, "--topic", full.events)
            rebuilt = await phase(
                "rebuild", *common, "--topic", full.events, "--schema", "bench_rebuild"
            )
        else:
            async with scratch_topics(bootstrap) as sub:
                await produce(bootstrap, sub.events, subset)
                projected = await phase("project", *common, "--topic", sub.events)
                rebuilt = await phase(
                    "rebuild", *common, "--topic", sub.events, "--schema", "bench_rebuild"
                )

    base_rate = rate(base)
    result.compare("chain verification events/s (verify_chain)", rate(chain), base_rate)
    result.figures["chain verification events"] = chain["events"]
    result.figures["chain verification peak RSS MB"] = round(chain["maxrss_mb"], 1)
    result.compare("replay read+decode+projection, no DB, events/s", rate(projected), base_rate)
    result.figures["replay read+decode+projection events"] = projected["events"]
    result.figures["replay read+decode+projection peak RSS MB"] = round(projected["maxrss_mb"], 1)
    result.figures["bench ledger loader events/s (fixture for chain)"] = round(rate(built))
    result.compare("full read-model rebuild events/s", rate(rebuilt), base_rate)
    result.figures["full read-model rebuild events"] = rebuilt["events"]
    result.figures["full read-model rebuild peak RSS MB"] = round(rebuilt["maxrss_mb"], 1)
    result.figures["full rebuild of all events, projected minutes"] = round(
        total / rate(rebuilt) / 60, 1
    )
    result.baseline["raw consume events"] = base["events"]
    result.baseline["raw consume peak RSS MB"] = round(base["maxrss_mb"], 1)
    result.figures["generated events"] = total
    result.figures["produce events/s (generator)"] = round(produce_rate)
    problems = [*chain.get("problems", []), *rebuilt.get("problems", [])]
    result.figures["chain/rebuild problems"] = len(problems)
    result.notes += [
        f"{total:,} events = {-(-total // 57):,} incidents x 57 events (bench/gen.py: open, "
        "authority, 4x record/gather/restart+StepStarted/StepSucceeded/snapshot, a mixed "
        "verdict that holds and builds a takeover packet, resume, close), ~850 B each, "
        "6 partitions.",
        "chain verification = conn_readmodel.replay.verify_chain (what `conn replay` runs "
        f"first) over a ledger_entries table of {chain['events']:,} rows. Those rows were "
        "written by the benchmark's bulk loader (bench/replay_worker.py `ledger`: raw JSON + "
        "conn_core.chain.link_raw, executemany), not by `rebuild`: rebuilding a million "
        "events would exceed the time budget (see the projected minutes).",
        "replay read+decode+projection = conn replay's reader + codec + the packager's "
        "projection (fold, hash chain, takeover packets) without PostgreSQL, on the same "
        "events as the rebuild row.",
        (
            "full read-model rebuild = conn_readmodel.replay.rebuild over "
            + (
                f"ALL {subset:,} events"
                if subset == total
                else f"a SUBSET: a topic holding the first {rebuilt['events']:,} events "
                f"(the full {total:,} would take ~{total / rate(rebuilt) / 60:.0f} min at "
                f"this rate, over the {budget:.0f}-s budget)"
            )
        ),
        "Each phase runs in its own process; peak RSS = getrusage(RUSAGE_SELF).ru_maxrss.",
        "Baseline: raw aiokafka consumption (count only, no decode) of the same topic; "
        "ratio = conn rate / raw rate.",
    ]
    if problems:
        result.notes.append(f"problems: {problems}")
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    return result
