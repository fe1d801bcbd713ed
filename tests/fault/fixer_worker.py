"""Run the monitor's sweeper and fixer only, for a server without change streams.

Used by the fault tests on a standalone SecantusDB: JSON log lines on stdout,
SIGTERM to stop.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from streamheal.config import load_settings
from streamheal.log import configure_logging
from streamheal.monitor import Monitor, connect


async def main(rules: str) -> None:
    settings = load_settings(rules)
    client, hello = await connect(settings.mongodb.uri)
    monitor = Monitor(settings, client, uri=settings.mongodb.uri, hello=hello)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await monitor.fixer.recover()  # as Monitor.run does before its first sweep
    tasks = [
        asyncio.create_task(monitor.sweeper.run()),
        asyncio.create_task(monitor.fixer.run()),
    ]
    await monitor._wait(stop, tasks)
    await client.close()


if __name__ == "__main__":
    configure_logging("debug", None, console=False)
    asyncio.run(main(sys.argv[1]))
