"""Helpers the tests share: building settings, running a monitor, awaiting state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from streamheal.config import Settings, parse_settings
from streamheal.monitor import Monitor, connect


WAIT_TIMEOUT_S = 10.0
TEST_TOKEN = "test-token"


def settings_for(database: str, rules_yaml: str, engine: str = "") -> Settings:
    engine_block = f"engine:\n{engine}\n" if engine else ""
    text = (
        f"mongodb:\n  uri: unused\n  database: {database}\n"
        f"{engine_block}rules:\n{rules_yaml}"
    )
    return parse_settings(text, "test.rules.yaml")


@contextlib.asynccontextmanager
async def running_monitor(uri: str, settings: Settings) -> AsyncIterator[Monitor]:
    """A monitor running in this event loop (without the web server)."""
    client, hello = await connect(uri)
    monitor = Monitor(settings, client, uri=uri, hello=hello, token=TEST_TOKEN)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop, serve_web=False))
    try:
        await asyncio.wait_for(monitor.stream.ready.wait(), WAIT_TIMEOUT_S)
        await wait_for_state(monitor, lambda state: state.sweeps >= 1)
        yield monitor
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_TIMEOUT_S)
        await client.close()


async def wait_for_state(
    monitor: Monitor,
    condition: Callable[[Any], bool],
    timeout_s: float = WAIT_TIMEOUT_S,
) -> None:
    """Wait until the monitor's state satisfies `condition`, awaiting changes."""

    async def wait() -> None:
        version = -1
        while not condition(monitor.state):
            version = await monitor.state.wait_changed(
                max(version, monitor.state.version)
            )

    await asyncio.wait_for(wait(), timeout_s)


def find_entry(
    query: dict[str, Any], sort: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A profiler entry for a find on shop.users, as MongoDB writes one."""
    command: dict[str, Any] = {"find": "users", "filter": query}
    if sort is not None:
        command["sort"] = sort
    return {"op": "query", "ns": "shop.users", "command": command, "millis": 5}
