"""The change-stream watcher's own machinery, apart from a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamheal.fixer import ViolationQueue
from streamheal.state import MonitorState
from streamheal.watchers import stream as stream_module
from streamheal.watchers.stream import StreamWatcher


class StubDatabase:
    name = "stub"


async def do_nothing(*_: Any) -> None:
    return None


def make_watcher() -> StreamWatcher:
    state = MonitorState(
        database="stub", server_address="-", queue=ViolationQueue(1), rules=[]
    )
    return StreamWatcher(
        None,  # type: ignore[arg-type]  # no server: only the reader's stop is used
        StubDatabase(),  # type: ignore[arg-type]
        ["users"],
        state,
        on_writes=do_nothing,
        on_collection_gone=do_nothing,
        on_history_lost=do_nothing,
        batch_window_s=0.01,
    )


class TestStopReader:
    async def test_a_reader_that_ignores_cancellation_is_left_behind(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A driver read that never ends must not hang the stop (pymongo 4.20)."""
        monkeypatch.setattr(stream_module, "READER_STOP_TIMEOUT_S", 0.05)
        release, started = asyncio.Event(), asyncio.Event()

        async def stubborn_read() -> None:
            started.set()
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue

        reader = asyncio.create_task(stubborn_read())
        await started.wait()  # so that the cancel reaches it inside its loop
        with capture_logs() as logs:
            await make_watcher()._stop_reader(reader)

        assert not reader.done()
        assert [(log["event"], log["timeout_s"]) for log in logs] == [
            ("stream_reader_abandoned", 0.05)
        ]
        release.set()
        await asyncio.wait_for(reader, 1)

    async def test_a_reader_that_stops_raises_nothing_for_a_cancel(self) -> None:
        reader = asyncio.create_task(asyncio.Event().wait())

        with capture_logs() as logs:
            await make_watcher()._stop_reader(reader)

        assert reader.cancelled()
        assert logs == []

    async def test_a_readers_own_bug_is_logged_not_raised_while_unwinding(
        self,
    ) -> None:
        async def broken_read() -> None:
            raise KeyError("operationType")

        reader = asyncio.create_task(broken_read())
        await asyncio.wait({reader})

        with capture_logs() as logs:
            await make_watcher()._stop_reader(reader)

        assert [(log["event"], log["error"]) for log in logs] == [
            ("stream_reader_failed", "KeyError('operationType')")
        ]
