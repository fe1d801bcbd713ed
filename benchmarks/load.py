"""Load benchmark: many writes, 10% of them bad, a small queue, mode detect.

Starts its own SecantusDB (or uses --uri), runs a monitor in this process
with one `required` rule, writes `--writes` documents with `insert_many` from
`--clients` concurrent clients as fast as the server takes them, and waits
until the monitor has seen every violating write (queued or deferred). It
prints one JSON object of figures:

- writes_per_s: documents the server accepted per second, all clients together
- latency_p50_ms / latency_p99_ms: from sending a violating document's batch
  to the monitor reporting its violation from the change stream
- queue_high_water: the most entries the queue held (never above queue_max)
- detected / violating: distinct violations seen by the stream / written
- peak_rss_mib: the process's peak resident memory (monitor and writers)
- traced_peak_mib / streamheal_retained_mib: with --tracemalloc, the peak of
  Python allocations, and what streamheal's own code still holds at the end

    .venv/bin/python benchmarks/load.py              # 10,000 writes
    .venv/bin/python benchmarks/load.py --quick      # 2,000 writes, for tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient

from streamheal.config import parse_settings
from streamheal.embedded import EmbeddedServer
from streamheal.log import configure_logging
from streamheal.monitor import Monitor, connect
from streamheal.rules import Violation


BAD_EVERY = 10  # every tenth document lacks the required field
DETECT_TIMEOUT_S = 120.0
KIB_PER_MIB = 1024
BYTES_PER_MIB = 1024 * 1024
RULES = """\
mongodb: {{uri: unused, database: {database}}}
engine:
  queue_max: {queue_max}
  sweep_interval: 1h
  auto_fix: false
logging: {{file: null}}
rules:
  - name: orders_need_customer
    kind: required
    collection: orders
    fields: [customer]
"""


def document(number: int) -> dict[str, Any]:
    if number % BAD_EVERY == 0:
        return {"_id": number, "total": number}
    return {"_id": number, "total": number, "customer": f"c{number % 97}"}


async def write_all(
    uri: str, database: str, writes: int, clients: int, batch: int
) -> tuple[float, dict[int, float]]:
    """Insert documents 0..writes-1; return seconds taken and send times of bad ones."""
    sent_at: dict[int, float] = {}
    numbers = list(range(writes))
    shares = [numbers[index::clients] for index in range(clients)]

    async def one_client(share: Sequence[int]) -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            collection = client[database].orders
            for start in range(0, len(share), batch):
                chunk = share[start : start + batch]
                now = time.monotonic()
                sent_at.update(
                    (number, now) for number in chunk if number % BAD_EVERY == 0
                )
                await collection.insert_many(
                    [document(number) for number in chunk], ordered=False
                )
        finally:
            await client.close()

    started = time.monotonic()
    await asyncio.gather(*(one_client(share) for share in shares))
    return time.monotonic() - started, sent_at


async def measure(arguments: argparse.Namespace, uri: str) -> dict[str, Any]:
    database = f"load_{int(time.time())}"
    settings = parse_settings(
        RULES.format(database=database, queue_max=arguments.queue_max)
    )
    client, hello = await connect(uri)
    monitor = Monitor(settings, client, uri=uri, hello=hello)
    detected_at: dict[Any, float] = {}
    report = monitor.report

    async def timed_report(violations: Sequence[Violation], source: str) -> None:
        now = time.monotonic()
        if source == "stream":
            for violation in violations:
                detected_at.setdefault(violation.documents[0], now)
        await report(violations, source)

    monitor.report = timed_report  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(monitor.run(stop, serve_web=False))
    violating = len(range(0, arguments.writes, BAD_EVERY))
    try:
        await asyncio.wait_for(monitor.stream.ready.wait(), DETECT_TIMEOUT_S)
        duration_s, sent_at = await write_all(
            uri, database, arguments.writes, arguments.clients, arguments.batch
        )

        async def all_seen() -> None:
            while len(detected_at) < violating:
                version = monitor.state.version
                await monitor.state.wait_changed(version)

        await asyncio.wait_for(all_seen(), DETECT_TIMEOUT_S)
        queue = monitor.queue
        distinct = {entry.id for entry in queue} | queue.deferred_ids()
        retained = retained_by_streamheal() if arguments.tracemalloc else None
    finally:
        stop.set()
        await asyncio.wait_for(running, DETECT_TIMEOUT_S)
        await client.drop_database(database)
        await client.close()

    latencies_ms = sorted(
        (detected_at[number] - sent_at[number]) * 1000 for number in sent_at
    )
    figures: dict[str, Any] = {
        "writes": arguments.writes,
        "clients": arguments.clients,
        "batch": arguments.batch,
        "writes_per_s": round(arguments.writes / duration_s),
        "violating": violating,
        "detected": len(distinct),
        "queued": len(monitor.queue),
        "deferred": monitor.queue.deferred_count,
        "queue_max": arguments.queue_max,
        "queue_high_water": monitor.queue.high_water,
        "latency_p50_ms": round(statistics.median(latencies_ms), 1),
        "latency_p99_ms": round(latencies_ms[int(len(latencies_ms) * 0.99)], 1),
        "peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB, 1
        ),
    }
    if arguments.tracemalloc:
        _, peak = tracemalloc.get_traced_memory()
        figures["traced_peak_mib"] = round(peak / BYTES_PER_MIB, 1)
        figures["streamheal_retained_mib"] = retained
    return figures


def retained_by_streamheal() -> float:
    """MiB that streamheal's own code allocated and still holds."""
    package = str(Path(__file__).resolve().parent.parent / "streamheal")
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"{package}/*")]
    )
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    return round(total / BYTES_PER_MIB, 2)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="a running server (default: start SecantusDB)")
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--queue-max", type=int, default=100)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 writes: what the test runs"
    )
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.writes = 2_000
    return arguments


def main() -> None:
    arguments = parse_arguments()
    # Warnings and errors only, as JSON on stderr: stdout carries the figures.
    configure_logging("warning", None, console=False)
    logging.getLogger().handlers[0].setStream(sys.stderr)  # type: ignore[attr-defined]
    if arguments.tracemalloc:
        tracemalloc.start()
    if arguments.uri:
        figures = asyncio.run(measure(arguments, arguments.uri))
    else:
        server = EmbeddedServer()
        server.start()
        try:
            figures = asyncio.run(measure(arguments, server.uri))
        finally:
            server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
