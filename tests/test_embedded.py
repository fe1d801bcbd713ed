"""The embedded SecantusDB server: dying with streamheal, and why a start failed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from streamheal.embedded import (
    OUTPUT_TAIL_LINES,
    START_TIMEOUT_S,
    EmbeddedServer,
    is_port_open,
)
from streamheal.errors import EmbeddedServerError


PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXIT_TIMEOUT_S = 30.0

# Stands in for `streamheal run`: starts the server the way the command line
# does, through start_async, whose worker thread is gone once asyncio.run
# returns; then waits on stdin until the test kills it.
PARENT_SCRIPT = """
import asyncio, sys
from streamheal.embedded import EmbeddedServer

server = EmbeddedServer(sys.argv[1])
asyncio.run(server.start_async())
print(server.pid, server.port, flush=True)
sys.stdin.read()
"""


async def wait_for_exit(pidfd: int, timeout_s: float) -> None:
    """Wait until the process behind a pidfd has exited.

    The server is the test's grandchild, so waitpid cannot see it; a pidfd
    (Linux 5.3) becomes readable when the process exits, whether or not
    anyone reaps it.
    """
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        await asyncio.wait_for(exited.wait(), timeout_s)
    finally:
        loop.remove_reader(pidfd)


async def ping(port: int) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true",
        serverSelectionTimeoutMS=int(EXIT_TIMEOUT_S * 1000),
    )
    try:
        reply = await client.admin.command("ping")
        assert reply["ok"] == 1.0
    finally:
        await client.close()


class TestDyingWithStreamheal:
    async def test_the_server_dies_when_streamheal_is_killed(
        self, tmp_path: Path
    ) -> None:
        """After a SIGKILL of its parent the server exits and frees its storage."""
        storage = str(tmp_path / "data")
        parent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PARENT_SCRIPT,
            storage,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=PROJECT_ROOT,
        )
        assert parent.stdout is not None
        pidfd: int | None = None
        try:
            line = await asyncio.wait_for(
                parent.stdout.readline(), START_TIMEOUT_S + EXIT_TIMEOUT_S
            )
            pid, port = (int(word) for word in line.split())
            pidfd = os.pidfd_open(pid)

            # Still serving after the thread that ran start() has ended. The
            # ping also waits out SecantusDB's first moments, when a SIGTERM
            # can leave it hanging in its shutdown (it answers right after).
            await ping(port)

            parent.kill()
            await asyncio.wait_for(parent.wait(), EXIT_TIMEOUT_S)
            await wait_for_exit(pidfd, EXIT_TIMEOUT_S)
        finally:
            if parent.returncode is None:
                parent.kill()
                await parent.wait()
            if pidfd is not None:
                # Does nothing once the server has exited; else it must not leak.
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)

        with EmbeddedServer(storage) as restarted:
            assert is_port_open(restarted.port)


class TestStartFailures:
    def test_a_second_server_on_the_same_storage_says_it_is_in_use(
        self, tmp_path: Path
    ) -> None:
        storage = str(tmp_path / "data")
        second = EmbeddedServer(storage)

        with EmbeddedServer(storage), pytest.raises(EmbeddedServerError) as caught:
            second.start()

        assert str(caught.value) == (
            f"The embedded server's storage at {storage} is in use by another "
            "process — is another streamheal running with this rule file? "
            "Stop it, or point mongodb.storage elsewhere."
        )
        assert not second.is_running

    def test_any_other_early_exit_shows_the_servers_last_output(
        self, tmp_path: Path
    ) -> None:
        log_path = tmp_path / "server.log"
        server = EmbeddedServer(extra_args=["--no-such-flag"], log_path=log_path)

        with pytest.raises(EmbeddedServerError) as caught:
            server.start()

        lines = str(caught.value).splitlines()
        assert lines[0] == (
            "The embedded server exited with status 2 before accepting "
            f"connections on port {server.port}. Its last output was:"
        )
        assert lines[-1] == (
            "  secantusd-py: error: unrecognized arguments: --no-such-flag"
        )
        assert len(lines) == 1 + OUTPUT_TAIL_LINES
        # The log still gets everything the server wrote.
        assert log_path.read_text().splitlines()[-1] == (
            "secantusd-py: error: unrecognized arguments: --no-such-flag"
        )
        assert not server.is_running
