"""Run `streamheal` as a subprocess and await the events it logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any


EVENT_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


class StreamhealProcess:
    """A running `streamheal run`; its JSON log lines are read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.stderr_lines: list[str] = []
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "(text)", "text": line}
            async with self._arrived:
                self.events.append(event)
                self._arrived.notify_all()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def wait_for(
        self,
        event: str,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        *,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event named `event` (from index `after`) matching `where`."""

        async def find() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    for logged in self.events[after:]:
                        if logged.get("event") == event and where(logged):
                            return logged
                    if self._reader.done():
                        raise AssertionError(
                            f"streamheal exited before logging {event}; "
                            f"stderr: {self.stderr_lines}"
                        )
                    await self._arrived.wait()

        try:
            return await asyncio.wait_for(find(), EVENT_TIMEOUT_S)
        except TimeoutError:
            seen = [logged.get("event") for logged in self.events]
            crash = [e for e in self.events if e.get("event") == "streamheal_crashed"]
            seen += crash
            raise AssertionError(
                f"streamheal did not log {event} within {EVENT_TIMEOUT_S} s; it logged "
                f"{seen}; stderr: {self.stderr_lines}"
            ) from None

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        await asyncio.gather(self._reader, self._stderr_reader, return_exceptions=True)
        return code


@contextlib.asynccontextmanager
async def streamheal_run(
    rules: Path, *, env: dict[str, str] | None = None
) -> AsyncIterator[StreamhealProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamheal.cli", "run", str(rules),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=rules.parent,
    )  # fmt: skip
    running = StreamhealProcess(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            await running.stop()


async def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    def fetch() -> Any:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    return await asyncio.to_thread(fetch)
