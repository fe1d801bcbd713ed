"""Wire the parts together and own their lifecycles.

The monitor connects to MongoDB, builds the rules, opens the change stream
before the first sweep, and runs the stream watcher, the sweeper, the
profiler reader, the fixer and the web server as tasks of one event loop.
It holds no business logic of its own: it routes violations between parts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bson.errors import BSONError
from pymongo import AsyncMongoClient
from pymongo.errors import ConfigurationError, PyMongoError

from streamheal._bson import to_json_value
from streamheal._events import EventLog
from streamheal.config import Settings, describe_invalid_uri, redact_uri
from streamheal.errors import ConnectionFailedError
from streamheal.fixer import Fixer, Offer, ViolationQueue, supports_transactions
from streamheal.rules import Database, Rule, Violation, Write
from streamheal.rules.slow_query import SlowQueryRule
from streamheal.state import MonitorState
from streamheal.watchers import ProfilerWatcher, StreamWatcher, Sweeper, is_transient


SERVER_SELECTION_TIMEOUT_MS = 5000
# Where a connection string the driver refuses came from: it is not shown.
INVALID_URI_ADDRESS = "the URI given in mongodb.uri"
# What a rule may raise on data it cannot handle: a server error, or a value
# the driver cannot decode (MongoDB stores invalid UTF-8 that pymongo refuses).
RECHECK_ERRORS = (PyMongoError, BSONError, ValueError, TypeError)
# On stop, the fixer may finish the fix it is applying for this long.
FIXER_GRACE_S = 30.0
START_RETRY_INITIAL_S = 0.5
START_RETRY_MAX_S = 30.0


def open_client(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        # Dates outside Python's datetime range must not make a document
        # unreadable: they decode to DatetimeMS and encode back unchanged.
        datetime_conversion="DATETIME_AUTO",
        appname="streamheal",
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
    )


async def connect(uri: str) -> tuple[AsyncMongoClient[dict[str, Any]], dict[str, Any]]:
    """A client that has answered `hello`, or ConnectionFailedError.

    A connection string the driver refuses (a port that is not a number, an
    unescaped / in the password, another scheme) is a ConnectionFailedError
    too; its message never repeats the string, which may hold a password.
    """
    try:
        client = open_client(uri)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise ConnectionFailedError(
            INVALID_URI_ADDRESS, describe_invalid_uri(uri, exc)
        ) from None
    try:
        hello = await client.admin.command("hello")
        build = await client.admin.command("buildInfo")
    except PyMongoError as exc:
        await client.close()
        raise ConnectionFailedError(
            redact_uri(uri), str(exc).split(", Timeout:")[0]
        ) from None
    hello["version"] = build.get("version")
    return client, hello


class Monitor:
    """One watched database: its rules, queue, fixer and state."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncMongoClient[dict[str, Any]],
        *,
        uri: str,
        hello: dict[str, Any] | None = None,
        token: str = "",
    ) -> None:
        self.settings = settings
        self.token = token
        self.dashboard_url: str | None = None
        self.client = client
        self.db: Database = client[settings.mongodb.database]
        self.rules: list[Rule] = settings.build_rules()
        self.rules_by_name = {rule.name: rule for rule in self.rules}
        self.queue = ViolationQueue(
            settings.engine.queue_max,
            detect_only_rules={r.name for r in self.rules if r.mode == "detect"},
        )
        self.state = MonitorState(
            database=settings.mongodb.database,
            server_address=redact_uri(uri),
            queue=self.queue,
            rules=self.rules,
        )
        if hello is not None:
            self.state.connected = True
            self.state.server_version = hello.get("version")
            self.state.replica_set = hello.get("setName")
        self.events = EventLog(self.state, "monitor")
        self.tasks: dict[str, asyncio.Task[Any]] = {}

        engine = settings.engine
        write_rules = [rule for rule in self.rules if rule.checks_writes]
        collections = {
            name for rule in write_rules for name in rule.watched_collections()
        }
        self.stream = StreamWatcher(
            client,
            self.db,
            collections,
            self.state,
            on_writes=self.handle_writes,
            on_collection_gone=self.forget_collection,
            on_history_lost=self._sweep_soon,
            batch_window_s=engine.batch_window,
            on_sweep_needed=self._sweep_soon,
        )
        self.sweeper = Sweeper(
            self.db,
            self.rules,
            self.state,
            interval_s=engine.sweep_interval,
            report=self.report,
            finish_rule=self.finish_sweep,
        )
        profile_rules = [rule for rule in self.rules if isinstance(rule, SlowQueryRule)]
        self.profiler = (
            ProfilerWatcher(
                self.db, profile_rules, engine.profiler_poll, activity=self.state
            )
            if profile_rules
            else None
        )
        self.fixer = Fixer(
            client,
            self.db,
            self.rules_by_name,
            self.queue,
            self.state,
            fix_delay_s=engine.fix_delay,
            max_docs_per_fix=engine.max_docs_per_fix,
            max_attempts=engine.max_attempts,
            retry_backoff_s=engine.retry_backoff,
            backup=engine.backup,
            use_transaction=bool(
                hello and (hello.get("setName") or hello.get("msg") == "isdbgrid")
            ),
        )

    # Routing violations.

    async def report(self, violations: Sequence[Violation], source: str) -> None:
        """Queue what a watcher found; log each violation the first time."""
        for violation in violations:
            outcome = self.queue.offer(violation, source)
            if outcome is Offer.ADDED:
                self.state.record_detection(violation, source)
                self.events.info(
                    "violation_detected",
                    rule=violation.rule,
                    collection=violation.collection,
                    violation_id=violation.id,
                    document_id=to_json_value(violation.documents[0])
                    if violation.documents
                    else None,
                    source=source,
                    description=violation.description,
                )
            elif outcome is Offer.DEFERRED:
                self.events.debug(
                    "violation_deferred", rule=violation.rule, violation_id=violation.id
                )
        self.state.touch()

    def resolve(self, violation_id: str, reason: str) -> None:
        entry = self.queue.remove(violation_id)
        if entry is not None:
            self.events.info(
                "violation_resolved",
                rule=entry.violation.rule,
                collection=entry.violation.collection,
                violation_id=violation_id,
                reason=reason,
            )

    async def handle_writes(self, writes: list[Write]) -> None:
        """Check a batch of writes against every rule it can affect."""
        self.state.record_write_batch(len(writes))
        written = {write.collection for write in writes}
        for rule in self.rules:
            if not rule.checks_writes or not written & rule.watched_collections():
                continue
            try:
                await self._check_writes(rule, writes)
            except asyncio.CancelledError:
                raise
            except RECHECK_ERRORS as exc:
                if is_transient(exc):
                    raise  # the stream reads the batch again once it can
                await self._check_writes_one_by_one(rule, writes)

    async def _check_writes(self, rule: Rule, writes: Sequence[Write]) -> None:
        found = await rule.check_writes(self.db, writes)
        await self.report(found, "stream")
        await self._recheck_touched(rule, writes, {v.id for v in found})

    async def _check_writes_one_by_one(
        self, rule: Rule, writes: Sequence[Write]
    ) -> None:
        """A batch the rule could not check: find the writes it fails on.

        One document the rule cannot evaluate (a poison write) must not hide
        the violations of the others in its batch; each failing write is
        logged with its document and left to the sweep's report.
        """
        for write in writes:
            if write.collection not in rule.watched_collections():
                continue
            try:
                await self._check_writes(rule, [write])
            except asyncio.CancelledError:
                raise
            except RECHECK_ERRORS as exc:
                if is_transient(exc):
                    raise
                self.events.error(
                    "write_check_failed",
                    rule=rule.name,
                    collection=write.collection,
                    document_id=to_json_value(write.document_id),
                    error=str(exc),
                )

    async def _recheck_touched(
        self, rule: Rule, writes: Sequence[Write], found: set[str]
    ) -> None:
        """Open violations the writes may have ended are asked again."""
        for entry in self.queue.entries_for(rule.name):
            if entry.id in found or not rule.is_touched_by(entry.violation, writes):
                continue
            current = await rule.recheck(self.db, entry.violation)
            if current is None:
                self.resolve(entry.id, "no longer holds after a write")
            else:
                await self.report([current], "stream")

    async def finish_sweep(self, rule: Rule, seen: set[str], started_at: float) -> None:
        """End the rule's violations that the sweep did not find again."""
        for entry in self.queue.entries_for(rule.name):
            if entry.id not in seen and entry.last_seen < started_at:
                self.resolve(entry.id, "not found by the sweep")

    async def forget_collection(self, collection: str, operation: str) -> None:
        """A watched collection was dropped or renamed: its violations go."""
        gone = [
            entry.id for entry in self.queue if entry.violation.collection == collection
        ]
        for violation_id in gone:
            self.queue.remove(violation_id)
        self.events.warning(
            "collection_gone",
            collection=collection,
            action=operation,
            violations_cleared=len(gone),
        )

    async def _sweep_soon(self) -> None:
        self.sweeper.request()

    # Lifecycle.

    async def run(self, stop: asyncio.Event, *, serve_web: bool = True) -> None:
        """Run every part until `stop` is set, then stop them cleanly."""
        self.events.info(
            "monitor_started",
            database=self.settings.mongodb.database,
            address=self.state.server_address,
            rules=len(self.rules),
        )
        if not await self._start_up(stop):
            self.events.info("monitor_stopped")
            return
        tasks = [
            asyncio.create_task(self.stream.run(), name="stream"),
            asyncio.create_task(self.sweeper.run(), name="sweep"),
            asyncio.create_task(self.fixer.run(), name="fixer"),
        ]
        async with self._profiler_enabled():
            if self.profiler is not None:
                tasks.append(
                    asyncio.create_task(
                        self.profiler.run(self.report, stop), name="profiler"
                    )
                )
            if serve_web:
                from streamheal.web import serve

                tasks.append(asyncio.create_task(serve(self, stop), name="web"))
            # Exposed so that a test (or a health check) can see a part alive.
            self.tasks = {task.get_name(): task for task in tasks}
            await self._wait(stop, tasks)
        await self.stream.close()
        self.events.info("monitor_stopped")

    async def _start_up(self, stop: asyncio.Event) -> bool:
        """Open the stream and recover cut-short fixes; False if stopped first.

        A stop request (SIGINT, SIGTERM) is honoured even while the database
        keeps these steps waiting.
        """

        async def start_up() -> None:
            await self._retrying("stream_open", self.stream.open)
            # Fixes a crash cut short (without transactions) are undone before
            # the first sweep, so that it finds their violations again.
            await self._retrying("fix_recovery", self.fixer.recover)

        starting = asyncio.create_task(start_up(), name="start_up")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait(
                {starting, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
            await asyncio.gather(starting, stopping, return_exceptions=True)
        if starting.cancelled():
            return False
        starting.result()
        return True

    async def _retrying(self, step: str, call: Any) -> None:
        """Run a start-up step, retrying while the database is briefly away."""
        delay_s = START_RETRY_INITIAL_S
        while True:
            try:
                await call()
                return
            except PyMongoError as exc:
                if not is_transient(exc):
                    raise
                self.events.warning(
                    "startup_retried", step=step, error=str(exc), retry_in_s=delay_s
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, START_RETRY_MAX_S)

    async def _stop_fixer(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Let the fix in progress finish (or not start), then go on stopping."""
        self.fixer.request_stop()
        fixer = [task for task in tasks if task.get_name() == "fixer"]
        if fixer and not fixer[0].done():
            await asyncio.wait(fixer, timeout=FIXER_GRACE_S)

    async def _wait(self, stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [stopper, *tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if (
                    task is not stopper
                    and not task.cancelled()
                    and task.exception() is not None
                ):
                    raise task.exception()  # type: ignore[misc]  # re-raise a part's crash
        finally:
            await self._stop_fixer(tasks)
            for task in [stopper, *tasks]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _profiler_enabled(self) -> AsyncIterator[None]:
        if self.profiler is None:
            yield
            return
        await self.profiler.enable()
        try:
            yield
        finally:
            await asyncio.shield(self.profiler.restore())

    async def supports_transactions(self) -> bool:
        return await supports_transactions(self.client)
