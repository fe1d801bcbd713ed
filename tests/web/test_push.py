"""`push_snapshots`: one websocket client's snapshots, coalesced and spaced out.

The pusher runs against a real `MonitorState` and a fake `send` that records
each message with its arrival time. The pause between snapshots is real time;
everything else is driven by awaiting the messages as they arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamheal.fixer import ViolationQueue
from streamheal.state import MonitorState
from streamheal.web._push import push_snapshots


MESSAGE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 1.0
SPACING_S = 0.2
# Far longer than any test waits: a snapshot sent before it passed was not paused.
LONG_INTERVAL_S = 60.0
BURST_SIZE = 50
# asyncio may run a timer up to the clock's resolution early.
CLOCK_RESOLUTION_S = time.get_clock_info("monotonic").resolution


@dataclass
class Message:
    arrived_at: float
    snapshot: dict[str, Any]


@dataclass
class RecordedSends:
    """A fake websocket `send`: keeps every message and hands it to the test."""

    messages: list[Message] = field(default_factory=list)
    arrivals: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)

    async def send(self, text: str) -> None:
        message = Message(time.monotonic(), json.loads(text))
        self.messages.append(message)
        self.arrivals.put_nowait(message)

    async def next(self) -> Message:
        return await asyncio.wait_for(self.arrivals.get(), MESSAGE_TIMEOUT_S)


@dataclass
class Pusher:
    state: MonitorState
    sends: RecordedSends
    shutdown: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.shutdown.set()
        await asyncio.wait_for(self.task, STOP_TIMEOUT_S)


def make_state() -> MonitorState:
    return MonitorState(
        database="stub", server_address="-", queue=ViolationQueue(1), rules=[]
    )


@pytest.fixture
async def start_pusher() -> AsyncIterator[Any]:
    """A factory of running pushers; each is cancelled if a test leaves it running."""
    started: list[Pusher] = []

    def start(state: MonitorState, min_interval_s: float) -> Pusher:
        sends, shutdown = RecordedSends(), asyncio.Event()
        task = asyncio.create_task(
            push_snapshots(state, sends.send, shutdown, min_interval_s=min_interval_s)
        )
        started.append(Pusher(state, sends, shutdown, task))
        return started[-1]

    yield start
    for pusher in started:
        pusher.task.cancel()
        await asyncio.gather(pusher.task, return_exceptions=True)


async def let_the_pusher_run(turns: int = 5) -> None:
    """Yield to the event loop so the pusher can react; no time passes."""
    for _ in range(turns):
        await asyncio.sleep(0)


class TestPushSnapshots:
    async def test_the_first_snapshot_is_sent_at_once(self, start_pusher: Any) -> None:
        state = make_state()
        state.touch()
        state.touch()
        started_at = time.monotonic()

        pusher = start_pusher(state, LONG_INTERVAL_S)
        first = await pusher.sends.next()

        assert first.snapshot["version"] == 2
        assert first.snapshot["database"]["name"] == "stub"
        assert first.arrived_at - started_at < LONG_INTERVAL_S
        await pusher.stop()
        assert [m.snapshot["version"] for m in pusher.sends.messages] == [2]

    async def test_a_burst_of_changes_becomes_one_snapshot_of_the_newest_state(
        self, start_pusher: Any
    ) -> None:
        """Fifty changes, each given the chance to be pushed, go out as one."""
        state = make_state()
        pusher = start_pusher(state, 1.0)
        first = await pusher.sends.next()
        assert first.snapshot["version"] == 0

        for _ in range(BURST_SIZE):
            state.touch()
            await let_the_pusher_run(1)
        second = await pusher.sends.next()
        await pusher.stop()

        assert state.version == 50
        assert second.snapshot["version"] == 50
        assert [m.snapshot["version"] for m in pusher.sends.messages] == [0, 50]

    async def test_snapshots_are_at_least_the_minimum_interval_apart(
        self, start_pusher: Any
    ) -> None:
        state = make_state()
        pusher = start_pusher(state, SPACING_S)

        arrivals = [(await pusher.sends.next()).arrived_at]
        for _ in range(3):
            # Changed the moment a snapshot lands: only the interval holds it back.
            state.touch()
            arrivals.append((await pusher.sends.next()).arrived_at)
        await pusher.stop()

        gaps_s = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert len(gaps_s) == 3
        assert all(gap_s >= SPACING_S - CLOCK_RESOLUTION_S for gap_s in gaps_s), gaps_s
        assert [m.snapshot["version"] for m in pusher.sends.messages] == [0, 1, 2, 3]

    async def test_shutdown_ends_a_pusher_waiting_for_a_change(
        self, start_pusher: Any
    ) -> None:
        state = make_state()
        pusher = start_pusher(state, LONG_INTERVAL_S)
        await pusher.sends.next()

        await pusher.stop()

        assert pusher.task.result() is None
        assert [m.snapshot["version"] for m in pusher.sends.messages] == [0]

    async def test_shutdown_ends_a_pusher_waiting_out_its_interval(
        self, start_pusher: Any
    ) -> None:
        """A change arrived, so the pusher pauses; shutdown cuts the pause short."""
        state = make_state()
        pusher = start_pusher(state, LONG_INTERVAL_S)
        await pusher.sends.next()
        state.touch()
        await let_the_pusher_run()

        await pusher.stop()

        assert pusher.task.result() is None
        assert [m.snapshot["version"] for m in pusher.sends.messages] == [0]
