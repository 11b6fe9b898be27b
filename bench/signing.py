"""6. The signed log's cost: signing and verification per event, beside an unsigned run.

Events are the replay benchmark's realistic incident history (bench/gen.py, ~850 B
each), every one signed by its rightful producer's dev key.

- CPU, one core, no I/O (what each process pays per record):
    produce side:  codec.encode            vs  encode + Ed25519 sign (EventProducer.signed)
    read side:     codec.decode            vs  Trust.open (signature, keyring, decode,
                                               entitlement and bindings: what every reader runs)
- Through the real broker (SASL/SCRAM, ACLs): N events produced (acks=all, idempotent)
  and read back and decoded, unsigned vs signed-and-verified, same topic settings.

The unsigned runs are the baseline; ratio = signed / unsigned (for rates: the fraction
of the unsigned rate kept).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import gen
from bench.common import Result, console, login
from bench.harness import ensure_stack, scratch_topics
from conn_runtime.trust import RawRecord, Signer, Trust
from conn_schemas.codec import decode, encode

NAME = "signing_cost"


def _signers_and_trust() -> tuple[dict[str, Signer], Trust]:
    from bench.replay import signers
    from conn_localstack.trust import dev_trust
    from conn_runtime.settings import KafkaSettings
    from conn_runtime.trust import trust_for

    # Unshared: no VerifiedCache, so every repetition verifies and decodes every record
    # (the cost of a record read for the first time, which is what this measures).
    settings = KafkaSettings(conn_keyring_file=dev_trust().keyring_file)
    return signers(), trust_for(settings, shared=False)


def _best_of(runs: int, fn: Any) -> float:
    """Fastest of `runs` timings of fn() (seconds): the CPU cost, least disturbed."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def cpu(n: int, result: Result) -> None:
    keys, trust = _signers_and_trust()
    events = []
    for i, (key, value, signer) in enumerate(gen.records(n)):
        events.append((key, decode(value), signer, i))
    values = [encode(e) for _, e, _, _ in events]
    signed = [
        RawRecord(trust.topics.events, 0, i, key, v, keys[signer].headers(v))
        for (key, _, signer, i), v in zip(events, values, strict=True)
    ]

    def enc() -> None:
        for _, e, _, _ in events:
            encode(e)

    def enc_sign() -> None:
        for _, e, signer, _ in events:
            keys[signer].headers(encode(e))

    def dec() -> None:
        for v in values:
            decode(v)

    def verify() -> None:
        for r in signed:
            trust.open(r)

    runs = 3
    t_enc, t_sign = _best_of(runs, enc), _best_of(runs, enc_sign)
    t_dec, t_ver = _best_of(runs, dec), _best_of(runs, verify)
    us = 1e6 / n
    result.compare("produce side: per event (µs)", t_sign * us, t_enc * us)
    result.compare("read side: per event (µs)", t_ver * us, t_dec * us)
    result.figures["signing alone: per event (µs)"] = (t_sign - t_enc) * us
    result.figures["verification alone: per event (µs)"] = (t_ver - t_dec) * us
    # The primitive itself, for scale: Ed25519 on one ~850 B value.
    _, value, signer = next(iter(gen.records(1)))
    key = keys[signer].private_key
    signature = key.sign(value)
    public = key.public_key()
    reps = 2_000
    result.figures["Ed25519 sign, primitive (µs)"] = (
        _best_of(runs, lambda: [key.sign(value) for _ in range(reps)]) * 1e6 / reps
    )
    result.figures["Ed25519 verify, primitive (µs)"] = (
        _best_of(runs, lambda: [public.verify(signature, value) for _ in range(reps)]) * 1e6 / reps
    )
    result.compare("produce side: events/s, one core", n / t_sign, n / t_enc)
    result.compare("read side: events/s, one core", n / t_ver, n / t_dec)
    result.figures["cpu events"] = n


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, Any]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **login("admin"),
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [
            await producer.send(topic, value, key=key, headers=headers())
            for key, value, headers in records
        ]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, n: int, opener: Any) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **login("sre"),
    )
    await consumer.start()
    try:
        await consumer._client.set_topics([topic])
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for rec in records:
                    opener(rec)
                    seen += 1
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def through_kafka(bootstrap: str, n: int, result: Result) -> None:
    keys, trust = _signers_and_trust()
    plain = [(key, value, list) for key, value, _ in gen.records(n)]
    signed = [
        (key, value, (lambda v=value, s=signer: keys[s].headers(v)))
        for key, value, signer in gen.records(n)
    ]
    async with scratch_topics(bootstrap) as unsigned_topics, scratch_topics(bootstrap) as topics:
        verify_topics = Trust(trust.keyring, topics)
        t_plain = await _produce(bootstrap, unsigned_topics.events, plain)
        t_signed = await _produce(bootstrap, topics.events, signed)
        r_plain = await _read(bootstrap, unsigned_topics.events, n, lambda r: decode(r.value))
        r_signed = await _read(bootstrap, topics.events, n, verify_topics.open)
    result.compare("Kafka produce (signed): events/s", n / t_signed, n / t_plain)
    result.compare("Kafka read + verify + decode: events/s", n / r_signed, n / r_plain)
    result.figures["kafka events"] = n


async def main(quick: bool = False) -> Result:
    n_cpu = 5_700 if quick else 57_000
    n_kafka = 5_700 if quick else 57_000
    result = Result(NAME)
    console.print(f"[dim]  CPU: {n_cpu:,} events, best of 3[/dim]")
    cpu(n_cpu, result)
    bootstrap, _ = await ensure_stack()
    console.print(
        f"[dim]  through Kafka: {n_kafka:,} events each way ({uuid.uuid4().hex[:4]})[/dim]"
    )
    await through_kafka(bootstrap, n_kafka, result)
    result.notes += [
        f"Events: bench/gen.py's incident history (~850 B, {len(gen.template_events())} events "
        "per incident: API, executor and verifier events), each signed by its rightful "
        "producer's Ed25519 key (cryptography / OpenSSL).",
        "CPU rows: one core, no I/O, best of 3 runs. Baseline = the same events unsigned "
        "(codec.encode / codec.decode); Conn = encode + sign (what EventProducer does) and "
        "Trust.open (signature + keyring + decode + entitlement/bindings: what every reader "
        "does). 'alone' rows are the differences.",
        "Kafka rows: local broker (SASL/SCRAM, ACLs), 6 partitions, acks=all, idempotent; "
        "produce = send all and await acks; read = consume from offset 0 outside a group and "
        "decode (unsigned) or verify+decode (signed).",
    ]
    return result
