"""Latency benchmark: one bad write at a time, from the write to the state.

Starts its own SecantusDB (or uses --uri), runs a monitor in this process with
one `required` rule in detect mode, then makes `--samples` bad writes one
after another, each waiting until the monitor's state holds its violation.
It prints one JSON object: p50, p90, p99 and max latency in milliseconds, from
sending the insert to the violation being in the state, which is what the
dashboard and /api/state show. This is the everyday case; benchmarks/load.py
measures bursts.

    .venv/bin/python benchmarks/latency.py
    .venv/bin/python benchmarks/latency.py --samples 50 --batch-window 5ms
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient

from streamheal.config import parse_settings
from streamheal.embedded import EmbeddedServer
from streamheal.log import configure_logging
from streamheal.monitor import Monitor, connect


WAIT_TIMEOUT_S = 10.0
MS_PER_S = 1000
RULES = """\
mongodb: {{uri: unused, database: {database}}}
engine: {{sweep_interval: 1h, batch_window: {batch_window}, queue_max: 100000}}
logging: {{file: null}}
rules:
  - {{name: need_customer, kind: required, collection: orders, fields: [customer]}}
"""


async def measure(uri: str, samples: int, batch_window: str) -> dict[str, Any]:
    database = f"latency_{int(time.time())}"
    settings = parse_settings(
        RULES.format(database=database, batch_window=batch_window)
    )
    client, hello = await connect(uri)
    monitor = Monitor(settings, client, uri=uri, hello=hello)
    stop = asyncio.Event()
    running = asyncio.create_task(monitor.run(stop, serve_web=False))
    writer: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    latencies_ms: list[float] = []
    try:
        await asyncio.wait_for(monitor.sweeper.first_sweep_done.wait(), WAIT_TIMEOUT_S)
        orders = writer[database].orders
        for number in range(samples):
            seen = monitor.state.detected_total
            sent = time.monotonic()
            await orders.insert_one({"_id": number, "total": number})

            async def detected(expected: int = seen + 1) -> None:
                version = monitor.state.version
                while monitor.state.detected_total < expected:
                    version = await monitor.state.wait_changed(version)

            await asyncio.wait_for(detected(), WAIT_TIMEOUT_S)
            latencies_ms.append((time.monotonic() - sent) * MS_PER_S)
    finally:
        stop.set()
        await running
        await writer.drop_database(database)
        await writer.close()
        await client.close()

    ordered = sorted(latencies_ms)
    return {
        "samples": samples,
        "batch_window": batch_window,
        "p50_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 1),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", help="an existing server (default: start one)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-window", default="10ms")
    arguments = parser.parse_args()
    configure_logging("error", None, console=False)

    if arguments.uri:
        figures = asyncio.run(
            measure(arguments.uri, arguments.samples, arguments.batch_window)
        )
    else:
        with EmbeddedServer() as server:
            figures = asyncio.run(
                measure(server.uri, arguments.samples, arguments.batch_window)
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
