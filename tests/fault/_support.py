"""What the fault tests share: a monitor whose commands are observed, fail points."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from streamheal.config import Settings
from streamheal.fixer import FIXES
from streamheal.monitor import Monitor, open_client
from tests.helpers import TEST_TOKEN, WAIT_TIMEOUT_S, wait_for_state


APP_NAME = "streamheal"  # fail points are scoped to the monitor's connections


class FailedCommands(monitoring.CommandListener):
    """Counts the commands the monitor's client saw fail, by command name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.counts[event.command_name] += 1


def monitor_client(
    uri: str, listener: monitoring.CommandListener | None = None
) -> AsyncMongoClient[dict[str, Any]]:
    """A client set up as `streamheal run` sets it up, optionally observed."""
    if listener is None:
        return open_client(uri)
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        datetime_conversion="DATETIME_AUTO",
        appname=APP_NAME,
        serverSelectionTimeoutMS=5000,
        event_listeners=[listener],
    )


@contextlib.asynccontextmanager
async def observed_monitor(
    uri: str,
    settings: Settings,
    listener: monitoring.CommandListener | None = None,
    *,
    first_sweep: bool = True,
) -> AsyncIterator[Monitor]:
    """A monitor in this event loop whose client reports its commands."""
    client = monitor_client(uri, listener)
    hello = await client.admin.command("hello")
    monitor = Monitor(settings, client, uri=uri, hello=hello, token=TEST_TOKEN)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop, serve_web=False))
    try:
        await asyncio.wait_for(monitor.stream.ready.wait(), WAIT_TIMEOUT_S)
        if first_sweep:
            await wait_for_state(monitor, lambda state: state.sweeps >= 1)
        yield monitor
        assert not task.done(), "the monitor stopped on its own"
    finally:
        stop.set()
        await asyncio.wait_for(task, 3 * WAIT_TIMEOUT_S)
        await client.close()


@contextlib.asynccontextmanager
async def failing_command(
    client: AsyncMongoClient[Any], command: str, times: int, **data: Any
) -> AsyncIterator[None]:
    """Arm `failCommand` for the monitor's connections; disarm afterwards."""
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": times},
            "data": {"failCommands": [command], "appName": APP_NAME, **data},
        }
    )
    try:
        yield
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def applied_fixes_by_document(db: Any) -> Counter[Any]:
    """How many applied fix audit records name each document."""
    counts: Counter[Any] = Counter()
    async for record in db[FIXES].find({"status": "applied"}):
        for document_id in record.get("documents") or []:
            counts[document_id] += 1
    return counts


def all_alive(monitor: Monitor) -> bool:
    return all(not task.done() for task in monitor.tasks.values())
