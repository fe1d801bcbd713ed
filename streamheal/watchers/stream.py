"""Watch every write through a change stream and hand batches to the rules.

One stream per watched database, filtered in the server to the collections
and operation types the rules need. Events are read by one task and batched
by another for a few milliseconds, so that a burst of writes costs one check
per rule rather than one per write. The resume token is stored only after the
events before it were handled, so a restart continues where it stopped.
https://www.mongodb.com/docs/manual/changeStreams/
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import ConnectionFailure, PyMongoError

from streamheal._events import EventLog
from streamheal.rules import COMMENT, Database, Write
from streamheal.state import MonitorState
from streamheal.watchers._errors import is_history_lost, is_too_large


STATE_COLLECTION = "streamheal_state"
MAX_BATCH = 1000
EVENT_BUFFER = 10_000
MAX_AWAIT_MS = 500
TOKEN_SAVE_INTERVAL_S = 1.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
# Longer than a getMore's await (MAX_AWAIT_MS), which ends a healthy read.
READER_STOP_TIMEOUT_S = 2.0

WRITE_OPERATIONS = ("insert", "update", "replace", "delete")
COLLECTION_ENDINGS = ("drop", "rename")


@dataclass(frozen=True)
class _IdleMark:
    """Placed in the buffer when a getMore brought nothing: time to save the token."""

    resume_token: Mapping[str, Any] | None


BatchHandler = Callable[[list[Write]], Awaitable[None]]
CollectionHandler = Callable[[str, str], Awaitable[None]]


def build_pipeline(collections: Iterable[str]) -> list[dict[str, Any]]:
    """Keep only the events the rules care about, and only the fields they need.

    Without `fullDocument` (the rules ask the server about written `_id`s) an
    event stays small however large the document is.
    """
    names = sorted(set(collections))
    return [
        {
            "$match": {
                "$or": [
                    {
                        "ns.coll": {"$in": names},
                        "operationType": {
                            "$in": [*WRITE_OPERATIONS, *COLLECTION_ENDINGS]
                        },
                    },
                    # A collection renamed into a watched name.
                    {"operationType": "rename", "to.coll": {"$in": names}},
                    {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
                ]
            }
        },
        {
            "$project": {
                "operationType": 1,
                "ns": 1,
                "to": 1,
                "documentKey": 1,
                "clusterTime": 1,
                "fullDocumentBeforeChange": 1,
                "updatedFieldNames": {
                    "$map": {
                        "input": {
                            "$objectToArray": {
                                "$ifNull": ["$updateDescription.updatedFields", {}]
                            }
                        },
                        "in": "$$this.k",
                    }
                },
                "removedFields": "$updateDescription.removedFields",
            }
        },
    ]


def write_from_event(event: Mapping[str, Any]) -> Write:
    operation = event["operationType"]
    changed: frozenset[str] | None = None
    if operation == "update":
        changed = frozenset(event.get("updatedFieldNames") or ()) | frozenset(
            event.get("removedFields") or ()
        )
    return Write(
        collection=event["ns"]["coll"],
        operation=operation,
        document_id=event["documentKey"]["_id"],
        changed_fields=changed,
        before=event.get("fullDocumentBeforeChange"),
    )


class StreamWatcher:
    """Reads the change stream of one database and reports batches of writes."""

    def __init__(
        self,
        client: AsyncMongoClient[Any],
        db: Database,
        collections: Iterable[str],
        state: MonitorState,
        *,
        on_writes: BatchHandler,
        on_collection_gone: CollectionHandler,
        on_history_lost: Callable[[], Awaitable[None]],
        batch_window_s: float,
        on_sweep_needed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.db = db
        self.collections = sorted(set(collections))
        self.state = state
        self.on_writes = on_writes
        self.on_collection_gone = on_collection_gone
        self.on_history_lost = on_history_lost
        self.on_sweep_needed = on_sweep_needed or on_history_lost
        self.batch_window_s = batch_window_s
        self.events = EventLog(state, "stream")
        self._stream: AsyncChangeStream[Any] | None = None
        self._handled_token: Mapping[str, Any] | None = None
        self._saved_token: Mapping[str, Any] | None = None
        self._saved_at = 0.0
        self._start_after_invalidate = False
        # The stored token is read once; later opens use what was handled,
        # so that a token found lost is never tried again.
        self._token_loaded = False
        self._pre_images = True
        self.ready = asyncio.Event()

    @property
    def _state_id(self) -> str:
        return f"stream:{self.db.name}"

    async def load_token(self) -> Mapping[str, Any] | None:
        stored = await self.db[STATE_COLLECTION].find_one(
            {"_id": self._state_id}, comment=COMMENT
        )
        return stored.get("resume_token") if stored else None

    async def save_token(
        self, token: Mapping[str, Any] | None, *, force: bool = False
    ) -> None:
        """Store the resume point durably; at most once a second unless forced."""
        if token is None or token == self._saved_token:
            return
        if not force and time.monotonic() - self._saved_at < TOKEN_SAVE_INTERVAL_S:
            return
        await self.db[STATE_COLLECTION].update_one(
            {"_id": self._state_id},
            {"$set": {"resume_token": token, "saved_at": time.time()}},
            upsert=True,
            comment=COMMENT,
        )
        self._saved_token = token
        self._saved_at = time.monotonic()
        self.state.resume_token_saved_at = time.time()

    async def open(self) -> None:
        """Open the stream at the stored resume point, or at now when there is none.

        Called before the first sweep, so that anything written while the
        sweep runs arrives through the stream.
        """
        token = self._handled_token
        if not self._token_loaded:
            token = token or await self.load_token()
            self._token_loaded = True
            self._handled_token = token
        try:
            self._stream = await self._watch(token)
        except PyMongoError as exc:
            if token is None or not is_history_lost(exc):
                raise
            await self._report_history_lost(exc)
            self._stream = await self._watch(None)
        if self._handled_token is None:
            # Opened at "now": remember where now was, so that a batch that
            # fails before the first token is handled is read again.
            self._handled_token = self._stream.resume_token
        self.state.connected = True
        self.state.stream_healthy = True
        self.state.touch()
        self.ready.set()

    async def _watch(self, token: Mapping[str, Any] | None) -> AsyncChangeStream[Any]:
        # After an invalidate event only `startAfter` may use its token.
        start_after, self._start_after_invalidate = self._start_after_invalidate, False
        return await self.db.watch(
            build_pipeline(self.collections),
            resume_after=None if start_after else token,
            start_after=token if start_after else None,
            full_document_before_change="whenAvailable" if self._pre_images else None,
            max_await_time_ms=MAX_AWAIT_MS,
            comment=COMMENT,
        )

    async def _report_history_lost(self, exc: PyMongoError) -> None:
        self.events.error(
            "stream_history_lost",
            error=str(exc),
            action="continuing from now after a full sweep",
        )
        self.state.history_lost += 1
        self._handled_token = None
        await self.on_history_lost()

    async def _report_too_large(self, exc: PyMongoError) -> None:
        """Make the next event fit, or skip past it and let a sweep check it.

        The pipeline already leaves out `fullDocument`; what may remain large
        is the pre-image. Without it the event is a few hundred bytes. If it
        is still too large, the failing event cannot be read at all: the
        stream continues from now and a full sweep covers what it skipped.
        """
        if self._pre_images:
            self._pre_images = False
            self.events.warning(
                "change_event_too_large",
                error=str(exc),
                action="reopening without pre-images",
            )
            return
        self.events.error(
            "change_event_too_large",
            error=str(exc),
            action="continuing from now after a full sweep",
        )
        self._handled_token = None
        await self.on_sweep_needed()

    async def close(self) -> None:
        """Close the stream and store the last handled resume token."""
        await self._drop_stream()
        try:
            await self.save_token(self._handled_token, force=True)
        except PyMongoError as exc:
            # The previous stored token stays: a restart re-reads a little more.
            self.events.warning("resume_token_unsaved", error=str(exc))

    async def run(self) -> None:
        """Read and handle events until cancelled, reopening after failures.

        An outage is logged once when it starts and once when it ends; the
        attempts in between back off from half a second to thirty.
        """
        delay_s = RETRY_INITIAL_S
        attempt = 0
        while True:
            try:
                if self._stream is None:
                    await self.open()
                    if attempt:
                        self.events.info("stream_resumed", attempt=attempt)
                    delay_s, attempt = RETRY_INITIAL_S, 0
                await self._read_and_handle()
            except asyncio.CancelledError:
                raise
            except _StreamEnded:
                await self._drop_stream()
            except PyMongoError as exc:
                await self._drop_stream()
                if is_history_lost(exc):
                    await self._report_history_lost(exc)
                    continue
                if is_too_large(exc):
                    await self._report_too_large(exc)
                    continue
                attempt += 1
                self._report_interruption(exc, attempt, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)

    def _report_interruption(
        self, exc: PyMongoError, attempt: int, delay_s: float
    ) -> None:
        """Mark the stream down; log the first failure of an outage only."""
        if attempt == 1:
            self.events.error("stream_interrupted", error=str(exc), retry_in_s=delay_s)
        else:
            self.events.debug(
                "stream_retried", error=str(exc), attempt=attempt, retry_in_s=delay_s
            )
        self.state.stream_healthy = False
        # A server that answered with an error is reachable; a lost
        # connection or an unreachable server is not.
        self.state.connected = not isinstance(exc, ConnectionFailure)
        self.state.touch()

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await stream.close()
            except PyMongoError:
                pass

    async def _read_and_handle(self) -> None:
        buffer: asyncio.Queue[Mapping[str, Any] | _IdleMark] = asyncio.Queue(
            EVENT_BUFFER
        )
        reader = asyncio.create_task(self._read(buffer))
        try:
            while True:
                batch = await self._next_batch(buffer, reader)
                if batch:
                    await self._handle(batch)
        finally:
            await self._stop_reader(reader)

    async def _stop_reader(self, reader: asyncio.Task[None]) -> None:
        """Cancel the reader; wait for it a bounded time, not for ever.

        A getMore cancelled in flight can leave the driver waiting on the
        server for its clean-up (seen with pymongo 4.20 against SecantusDB:
        about one stop in ten under load hung). Closing the client ends that
        wait: the monitor closes it on the way out; when the stream is only
        reopened after an error, the abandoned read ends with its connection.
        Called while unwinding, this never raises over what is on its way.
        """
        reader.cancel()
        await asyncio.wait({reader}, timeout=READER_STOP_TIMEOUT_S)
        if not reader.done():
            self.events.warning(
                "stream_reader_abandoned", timeout_s=READER_STOP_TIMEOUT_S
            )
            # Whatever it ends with later is looked at, so that asyncio does
            # not report it outside our logs.
            reader.add_done_callback(_retrieve_outcome)
            return
        if not reader.cancelled():
            error = reader.exception()
            if error is not None and not isinstance(error, PyMongoError):
                self.events.error("stream_reader_failed", error=repr(error))

    async def _read(self, buffer: asyncio.Queue[Mapping[str, Any] | _IdleMark]) -> None:
        assert self._stream is not None
        stream = self._stream
        while stream.alive:
            event = await stream.try_next()
            if event is None:
                await buffer.put(_IdleMark(stream.resume_token))
            else:
                await buffer.put(event)
        await buffer.put(_IdleMark(None))

    async def _next_batch(
        self,
        buffer: asyncio.Queue[Mapping[str, Any] | _IdleMark],
        reader: asyncio.Task[None],
    ) -> list[Mapping[str, Any]]:
        """Wait for an event, then gather what arrives within the batch window."""
        first = await self._get(buffer, reader, None)
        if isinstance(first, _IdleMark):
            await self._on_idle(first)
            return []

        batch = [first]
        deadline = time.monotonic() + self.batch_window_s
        while len(batch) < MAX_BATCH:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and buffer.empty():
                break
            try:
                item = await self._get(buffer, reader, max(remaining, 0.0))
            except TimeoutError:
                break
            if isinstance(item, _IdleMark):
                break
            batch.append(item)
        return batch

    async def _get(
        self,
        buffer: asyncio.Queue[Mapping[str, Any] | _IdleMark],
        reader: asyncio.Task[None],
        timeout_s: float | None,
    ) -> Mapping[str, Any] | _IdleMark:
        """The next buffered item; re-raises the reader's error when it died."""
        if not buffer.empty():
            return buffer.get_nowait()
        getter = asyncio.ensure_future(buffer.get())
        try:
            done, _ = await asyncio.wait(
                {getter, reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            # Also when this wait is cancelled: a getter left behind would
            # outlive the stream as a pending task.
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if reader in done:
            reader.result()  # raises the stream's error
            return _IdleMark(None)
        raise TimeoutError

    async def _on_idle(self, mark: _IdleMark) -> None:
        if mark.resume_token is None:
            # The stream ended (invalidated): open a new one from what we handled.
            await self._drop_stream()
            raise _StreamEnded
        self._handled_token = mark.resume_token
        await self.save_token(mark.resume_token)

    async def _handle(self, events: Sequence[Mapping[str, Any]]) -> None:
        writes: list[Write] = []
        for event in events:
            operation = event["operationType"]
            if operation in WRITE_OPERATIONS:
                writes.append(write_from_event(event))
                continue
            if writes:
                await self._flush(writes, event)
                writes = []
            await self._handle_ending(event)

        if writes:
            await self._flush(writes, events[-1])
        self._handled_token = events[-1]["_id"]
        await self.save_token(self._handled_token)

    async def _flush(self, writes: list[Write], last_event: Mapping[str, Any]) -> None:
        await self.on_writes(writes)
        self.state.stream_batches += 1
        self.state.last_event_at = time.time()
        cluster_time = last_event.get("clusterTime")
        if cluster_time is not None:
            self.state.stream_lag_s = max(0.0, time.time() - cluster_time.time)
        self.state.touch()

    async def _handle_ending(self, event: Mapping[str, Any]) -> None:
        operation = event["operationType"]
        namespace = event.get("ns", {})
        if operation in COLLECTION_ENDINGS:
            await self.on_collection_gone(namespace.get("coll", ""), operation)
            target = (event.get("to") or {}).get("coll")
            if operation == "rename" and target in self.collections:
                # Documents arrived in a watched collection without a write
                # event each (and replaced whatever it held): sweep them.
                await self.on_collection_gone(target, operation)
                await self.on_sweep_needed()
        elif operation == "dropDatabase":
            for name in self.collections:
                await self.on_collection_gone(name, operation)
        elif operation == "invalidate":
            self.events.warning("stream_invalidated")
            # Start after the invalidate event itself, as the docs advise.
            self._handled_token = event["_id"]
            self._start_after_invalidate = True
            raise _StreamEnded


def _retrieve_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _StreamEnded(Exception):
    """The stream was invalidated; `run` opens a new one without waiting."""
