"""Run a monitor with its dashboard on a free loopback port, in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from streamheal.cli import with_dashboard
from streamheal.config import Settings
from streamheal.embedded import find_free_port
from streamheal.monitor import Monitor
from streamheal.web import bind_dashboard, serve
from tests.helpers import WAIT_TIMEOUT_S, running_monitor


LOOPBACK = "127.0.0.1"


class Dashboard:
    """The web server of a running monitor, which a test can stop and start."""

    def __init__(self, monitor: Monitor, port: int) -> None:
        self.monitor = monitor
        self.port = port
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Listen at once, so the page can load as soon as this returns."""
        listening = bind_dashboard(LOOPBACK, self.port)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            serve(self.monitor, self._stop, listening=listening)
        )

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await asyncio.wait_for(self._task, WAIT_TIMEOUT_S)
        self._task = None


@contextlib.asynccontextmanager
async def running_dashboard(uri: str, settings: Settings) -> AsyncIterator[Dashboard]:
    """A running monitor and its dashboard; both stop when the block ends."""
    port = find_free_port()
    settings = with_dashboard(settings, LOOPBACK, port)
    async with running_monitor(uri, settings) as monitor:
        dashboard = Dashboard(monitor, port)
        dashboard.start()
        try:
            yield dashboard
        finally:
            await dashboard.stop()
