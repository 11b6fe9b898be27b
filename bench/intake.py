"""4. API intake: directives accepted (202) per second by ONE directive-api process (auth,
Idempotency-Key store in PostgreSQL, core `decide`, append to Kafka acks=all and wait for
its own fold), beside bench/minimal_app.py (validates the same body, inserts the key into
PostgreSQL), measured in the same run with the same load generator: wrk (Debian package,
deploy/local/setup.d/50-wrk.sh) with bench/wrk_directives.lua, or an async httpx client
when wrk is not installed.

Load: non-consequential directives (update_incident_record / gather_state, alternating)
spread over `incidents` open incidents, each request with a unique Idempotency-Key. Only
the API runs (no executor), so nothing changes the incidents' state and every directive
based on position 2 stays legal.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from typing import Any

import httpx
import orjson

from bench.common import Result, console
from bench.harness import (
    BENCH,
    Commander,
    ensure_stack,
    fresh_database,
    scratch_topics,
    tokens,
)
from conn_localstack.ephemeral import LOGS, Pipeline, free_port, python_proc

NAME = "api_intake"
CONNECTIONS = 32


async def wrk(url: str, prefix: str, n: int, token: str, seconds: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t2",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "wrk_directives.lua"),
        url,
        "--",
        prefix,
        str(n),
        token,
        run,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    match = re.search(r"WRK_RESULT (\{.*\})", out.decode())
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed: {out.decode()[-500:]} {err.decode()[-500:]}")
    doc: dict[str, Any] = orjson.loads(match.group(1))
    return doc


async def httpx_load(url: str, prefix: str, n: int, token: str, seconds: int) -> dict[str, Any]:
    """The fallback generator: CONNECTIONS concurrent closed-loop clients."""
    run = uuid.uuid4().hex[:8]
    counts = {"accepted": 0, "other": 0, "requests": 0, "errors": 0}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=10) as c:

        async def client(w: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                inc = f"{prefix}{(i * 7 + w * 13) % n:04d}"
                action = (
                    {"action": "update_incident_record", "note": "bench note"}
                    if i % 2 == 0
                    else {"action": "gather_state", "regions": ["us-east"]}
                )
                t0 = time.perf_counter()
                try:
                    r = await c.post(
                        f"/v1/incidents/{inc}/directives",
                        json={"action": action, "based_on_sequence": 2},
                        headers={"Idempotency-Key": f"{run}-{w}-{i}"},
                    )
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                counts["requests"] += 1
                counts["accepted" if r.status_code == 202 else "other"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(w) for w in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[int(q * (len(latencies) - 1))] * 1000 if latencies else 0.0  # noqa: E731
    return {**counts, "seconds": elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def main(quick: bool = False) -> Result:
    seconds, incidents = (4, 50) if quick else (10, 200)
    bootstrap, dsn = await ensure_stack()
    result = Result(NAME)
    started = time.perf_counter()
    generator = "wrk" if shutil.which("wrk") else "httpx"
    load = wrk if generator == "wrk" else httpx_load
    prefix = f"bench-intake-{uuid.uuid4().hex[:6]}-"
    token = tokens()["alice"]
    async with scratch_topics(bootstrap) as topics, fresh_database(dsn) as db:
        pipeline = Pipeline(
            kafka_bootstrap=bootstrap,
            database_url=db,
            topic_prefix=topics.events.removesuffix("conn.events"),
            log_dir=LOGS / "bench" / NAME,
            # No executor runs: no directive gets an outcome, so the pipeline-backlog
            # shedding (conn_api.backlog) is lifted; the in-flight limit stays.
            extra_env={"CONN_LOG_LEVEL": "WARNING", "CONN_API_MAX_BACKLOG": str(10**9)},
        )
        port = free_port()
        minimal = python_proc(
            "bench-minimal-app",
            "bench.minimal_app",
            "--port",
            str(port),
            "--dsn",
            db,
            port=port,
            health_path="/readyz",
            log_dir=LOGS / "bench" / NAME,
        )
        try:
            api = pipeline._proc(
                "api",
                "conn_api",
                port_var="CONN_API_PORT",
                health="/readyz",
                principal="directive-api",
            )
            await asyncio.to_thread(api.start, 60.0)
            await asyncio.to_thread(minimal.start, 30.0)
            cmd = Commander(api.url)
            try:
                sem = asyncio.Semaphore(16)

                async def open_one(i: int) -> None:
                    async with sem:
                        await cmd.open(f"{prefix}{i:04d}")

                await asyncio.gather(*(open_one(i) for i in range(incidents)))
            finally:
                await cmd.aclose()
            # Warm both up briefly, then measure: the API first, then the minimal app.
            await load(api.url, prefix, incidents, token, 1)
            await load(minimal.url, prefix, incidents, token, 1)
            ours = await load(api.url, prefix, incidents, token, seconds)
            base = await load(minimal.url, prefix, incidents, token, seconds)
        finally:
            await asyncio.to_thread(minimal.stop)
            await asyncio.to_thread(pipeline.stop)
    ours_rate = ours["accepted"] / ours["seconds"]
    base_rate = base["accepted"] / base["seconds"]
    result.compare("directives accepted (202) per second", ours_rate, base_rate)
    result.compare("latency p50 ms", ours["p50_ms"], base["p50_ms"])
    result.compare("latency p99 ms", ours["p99_ms"], base["p99_ms"])
    result.compare("202 answers", ours["accepted"], base["accepted"])
    result.compare("non-202 answers", ours["other"], base["other"])
    result.compare("socket errors", ours["errors"], base["errors"])
    result.figures["load generator"] = f"{generator}, {CONNECTIONS} connections, {seconds}s"
    result.notes += [
        f"One directive-api process (uvicorn, 1 worker) vs bench/minimal_app.py (1 worker), "
        f"same generator ({generator}, {CONNECTIONS} connections, {seconds}s each), same "
        f"PostgreSQL and Kafka; {incidents} incidents, alternating update_incident_record / "
        "gather_state, a unique Idempotency-Key per request.",
        "The API's 202 includes: bearer-token auth, the Idempotency-Key claim in PostgreSQL "
        "(one round trip; the answer is stored after the 202, batched), the core decide(), "
        "the DirectiveIssued append (acks=all, idempotent) and waiting for its own fold to "
        "apply it (read-your-writes). The pipeline-backlog shedding is lifted (no executor).",
        "The load generator shares the 2 cores with the server under test.",
        "ratio = conn / minimal (for the rate: the fraction of the minimal endpoint's rate).",
    ]
    result.elapsed_seconds = round(time.perf_counter() - started, 1)
    console.print(f"[dim]{NAME}: api {ours_rate:,.0f}/s, minimal {base_rate:,.0f}/s[/dim]")
    return result
