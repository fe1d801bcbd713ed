"""Load: every violation among 10,000 fast writes is seen (issue 4, item 9).

One `required` rule in detect mode and a queue of 100. A tenth of the
documents lack the field, so exactly 1,000 violate, known by construction.
The stream sees all of them: 100 are queued and 900 deferred, and the queue
never holds more than its maximum. Each time the queued ones are repaired,
the next sweep brings back the next 100 deferred, until all 1,000 were
queued once. Memory is measured by `benchmarks/load.py`, not here; its quick
run is checked for exact counts only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.helpers import running_monitor, settings_for, wait_for_state


WRITES = 10_000
BAD_EVERY = 10
VIOLATING = WRITES // BAD_EVERY
QUEUE_MAX = 100
CLIENTS = 4
BATCH = 500
LOAD_TIMEOUT_S = 60.0
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"
RULE_NAME = "orders_need_customer"

RULES = f"""
  - name: {RULE_NAME}
    kind: required
    collection: orders
    fields: [customer]
"""
ENGINE = f"  queue_max: {QUEUE_MAX}\n  sweep_interval: 1h\n  auto_fix: false"


def document(number: int) -> dict[str, Any]:
    if number % BAD_EVERY == 0:
        return {"_id": number, "total": number}
    return {"_id": number, "total": number, "customer": f"c{number % 97}"}


def violation_id(number: int) -> str:
    """A violation's id as the design defines it: rule and subject, hashed."""
    text = f"{RULE_NAME}\x00{number}".encode()
    return hashlib.sha256(text).hexdigest()[:16]


async def write_concurrently(uri: str, database: str) -> None:
    numbers = list(range(WRITES))

    async def one_client(share: list[int]) -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            for start in range(0, len(share), BATCH):
                chunk = share[start : start + BATCH]
                await client[database].orders.insert_many(
                    [document(number) for number in chunk], ordered=False
                )
        finally:
            await client.close()

    await asyncio.gather(*(one_client(numbers[i::CLIENTS]) for i in range(CLIENTS)))


@pytest.mark.slow
async def test_every_violation_is_seen_and_the_queue_stays_bounded(
    db: Any, mongo_uri: str
) -> None:
    expected = {violation_id(n) for n in range(0, WRITES, BAD_EVERY)}
    assert len(expected) == VIOLATING

    settings = settings_for(db.name, RULES, ENGINE)
    async with running_monitor(mongo_uri, settings) as monitor:
        queue = monitor.queue
        await write_concurrently(mongo_uri, db.name)
        await wait_for_state(
            monitor,
            lambda _: len(queue) + queue.deferred_count == VIOLATING,
            LOAD_TIMEOUT_S,
        )

        assert len(queue) == QUEUE_MAX
        assert queue.deferred_count == VIOLATING - QUEUE_MAX
        assert {entry.id for entry in queue} | queue.deferred_ids() == expected
        assert monitor.state.detected_total == QUEUE_MAX
        assert queue.high_water == QUEUE_MAX

        # Repair what is queued; the stream ends those violations, and each
        # sweep then queues the next hundred of the deferred.
        queued_once = {entry.id for entry in queue}
        for round_number in range(1, VIOLATING // QUEUE_MAX):
            repaired = [entry.violation.documents[0] for entry in queue]
            await db.orders.update_many(
                {"_id": {"$in": repaired}}, {"$set": {"customer": "repaired"}}
            )
            await wait_for_state(monitor, lambda _: len(queue) == 0, LOAD_TIMEOUT_S)
            counts = await monitor.sweeper.sweep_all()

            remaining = VIOLATING - QUEUE_MAX * round_number
            assert counts == {RULE_NAME: remaining}
            assert len(queue) == QUEUE_MAX
            assert queue.deferred_count == remaining - QUEUE_MAX
            assert queued_once.isdisjoint(entry.id for entry in queue)
            queued_once |= {entry.id for entry in queue}

        assert queued_once == expected
        assert queue.high_water == QUEUE_MAX
        assert monitor.state.detected_total == VIOLATING
        assert all(not task.done() for task in monitor.tasks.values())


@pytest.mark.slow
def test_the_load_benchmark_sees_every_violation(mongo_uri: str) -> None:
    """The quick benchmark run: exact counts only, never its timings."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--uri", mongo_uri],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["writes"] == 2000
    assert figures["violating"] == 200
    assert figures["detected"] == 200
    assert figures["queued"] == 100
    assert figures["deferred"] == 100
    assert figures["queue_high_water"] == 100
