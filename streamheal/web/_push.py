"""Push the monitor's snapshot to one websocket client as the state changes.

A busy monitor changes its state hundreds of times a second; a browser needs
a tenth of that. Changes that arrive while we wait out the minimum interval
are coalesced into the next snapshot, so the client always ends up with the
newest state and never with a backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from streamheal.state import MonitorState


MIN_PUSH_INTERVAL_S = 0.1


async def push_snapshots(
    state: MonitorState,
    send: Callable[[str], Awaitable[None]],
    shutdown: asyncio.Event,
    *,
    min_interval_s: float = MIN_PUSH_INTERVAL_S,
) -> None:
    """Send a snapshot now and after every change, until `shutdown` is set.

    Returning lets the server close the websocket, which tells the page to
    reconnect; a client that goes away cancels this coroutine instead.
    """
    stopping = asyncio.create_task(shutdown.wait(), name="push-shutdown")
    sent_version = -1
    sent_at = -min_interval_s
    try:
        while not shutdown.is_set():
            if state.version <= sent_version:
                changed = asyncio.create_task(state.wait_changed(sent_version))
                await asyncio.wait(
                    {changed, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                if shutdown.is_set():
                    break

            # Coalesce: what changes during the pause goes out with this send.
            pause_s = min_interval_s - (time.monotonic() - sent_at)
            if pause_s > 0:
                await asyncio.wait({stopping}, timeout=pause_s)
                if shutdown.is_set():
                    break

            snapshot = state.snapshot()
            sent_version = snapshot["version"]
            await send(json.dumps(snapshot, separators=(",", ":")))
            sent_at = time.monotonic()
    finally:
        stopping.cancel()
