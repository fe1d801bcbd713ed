"""The profiler reader: slow operations from `system.profile`, as violations.

While streamheal runs it can switch the watched database's profiler on
(level 1, `slowms` at the lowest threshold of the rules that manage it) and
puts the previous setting back when it stops. It reads `system.profile`
incrementally and keeps running statistics per query shape in memory, bounded
so that an application with endlessly varied queries cannot grow it forever.

See https://www.mongodb.com/docs/manual/reference/command/profile/ for the
command and https://www.mongodb.com/docs/manual/reference/database-profiler/
for the entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from bson import json_util
from pymongo import ReturnDocument

from streamheal._bson import to_json_text
from streamheal._events import ActivitySink, EventLog
from streamheal.rules import COMMENT, Database, Violation
from streamheal.rules._base import Document
from streamheal.rules._query_shape import QueryShape
from streamheal.rules.slow_query import ShapeStats, SlowQueryRule, read_profile
from streamheal.watchers.stream import STATE_COLLECTION


MAX_SHAPES = 1000
SOURCE = "profiler"
PROFILE_STATUS = -1
PROFILE_SLOW_OPERATIONS = 1
PROFILE_ALL_OPERATIONS = 2
# Every slow operation, not a sample of them, so the statistics are whole.
FULL_SAMPLE_RATE = 1.0

Reporter = Callable[[list[Violation], str], Awaitable[None]]
ShapeId = tuple[str, str]


class ProfilerWatcher:
    """Reads new `system.profile` entries and reports the slow shapes they show.

    Use `enable`/`restore` (or `async with watcher:`) around `run`. One
    watcher serves every `slow_query` rule of the database it watches.
    """

    def __init__(
        self,
        db: Database,
        rules: Sequence[SlowQueryRule],
        poll_interval_s: float,
        *,
        max_shapes: int = MAX_SHAPES,
        activity: ActivitySink | None = None,
    ) -> None:
        self.db = db
        self.rules = list(rules)
        self.poll_interval_s = poll_interval_s
        self.max_shapes = max_shapes
        self.events = EventLog(activity, "profiler")
        self._previous: dict[str, Any] | None = None
        self._last_ts: dt.datetime | None = None
        self._ids_at_last_ts: set[str] = set()
        self._shapes: OrderedDict[ShapeId, tuple[SlowQueryRule, QueryShape, ShapeStats]]
        self._shapes = OrderedDict()

    @property
    def _state_id(self) -> str:
        return f"profiler:{self.db.name}"

    async def __aenter__(self) -> ProfilerWatcher:
        await self.enable()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded: a second cancel while leaving must not leave the
        # database profiling at our threshold.
        await asyncio.shield(self.restore())

    async def enable(self) -> None:
        """Profile slow operations at the rules' threshold; remember the old setting.

        Does nothing when no rule manages the profiler, when it is already on,
        or when the database already profiles every operation (level 2): that
        records all we need, and lowering it would take from its owner.
        MongoDB's `slowms` and `sampleRate` are server-wide, which is why the
        previous values are put back too.
        """
        managed = [rule for rule in self.rules if rule.spec.manage_profiler]
        if not managed or self._previous is not None:
            return

        status = await self.db.command("profile", PROFILE_STATUS, comment=COMMENT)
        if status.get("was") == PROFILE_ALL_OPERATIONS:
            self.events.info(
                "profiler_kept", database=self.db.name, profiling_level=status["was"]
            )
            return

        found: dict[str, Any] = {
            name: status[name]
            for name in ("was", "slowms", "sampleRate", "filter")
            if name in status
        }
        # Stored before it is changed, so that a run killed before `restore`
        # leaves the owner's setting for the next run to put back, rather
        # than our own, which that run would find in place.
        stored = await self.db[STATE_COLLECTION].find_one_and_update(
            {"_id": self._state_id},
            # As Extended JSON text: a profile filter holds `$` operators,
            # which a stored document's field names should not.
            {"$setOnInsert": {"previous": json_util.dumps(found)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            comment=COMMENT,
        )
        previous = json_util.loads(stored["previous"]) if stored else found
        self._previous = previous

        slowms = min(rule.slowms for rule in managed)
        options: dict[str, Any] = {"slowms": slowms, "sampleRate": FULL_SAMPLE_RATE}
        # A profile filter overrides slowms (MongoDB 4.4.2+); lift it meanwhile.
        if "filter" in status:
            options["filter"] = "unset"
        await self.db.command(
            "profile", PROFILE_SLOW_OPERATIONS, comment=COMMENT, **options
        )
        self.events.info(
            "profiler_enabled",
            database=self.db.name,
            slowms=slowms,
            previous_level=previous.get("was"),
            previous_slowms=previous.get("slowms"),
        )

    async def restore(self) -> None:
        """Put back the profiler setting `enable` found; safe to call twice.

        The setting is forgotten only once the server took it, so a failed
        restore can be tried again.
        """
        previous = self._previous
        if previous is None:
            return

        options: dict[str, Any] = {"slowms": previous["slowms"]}
        if "sampleRate" in previous:
            options["sampleRate"] = previous["sampleRate"]
        if "filter" in previous:
            options["filter"] = previous["filter"]
        await self.db.command("profile", previous["was"], comment=COMMENT, **options)
        await self.db[STATE_COLLECTION].delete_one(
            {"_id": self._state_id}, comment=COMMENT
        )
        self._previous = None
        self.events.info(
            "profiler_restored",
            database=self.db.name,
            profiling_level=previous["was"],
            slowms=previous["slowms"],
        )

    async def poll_once(self) -> list[Violation]:
        """Read the entries added since the last poll; return the shapes they changed.

        `ts` has millisecond resolution, so entries written in the same
        millisecond as the last one read may still arrive: the read starts at
        that `ts` again and skips the entries it has already counted.
        """
        if not self.rules:
            return []
        query: dict[str, Any] = {
            "millis": {"$gte": min(rule.slowms for rule in self.rules)}
        }
        if self._last_ts is not None:
            query["ts"] = {"$gte": self._last_ts}

        changed: dict[ShapeId, None] = {}
        read = 0
        async for entry in read_profile(self.db, query):
            if not self._is_new(entry):
                continue
            read += 1
            for rule in self.rules:
                shape = rule.shape_for(entry)
                if shape is not None:
                    changed[self._record(rule, shape, entry)] = None

        if read:
            self.events.debug("profile_entries_read", entries=read, shapes=len(changed))
        # A shape whose index now exists is not reported, as the sweep does not.
        found: list[Violation] = []
        for shape_id in changed:
            if shape_id not in self._shapes:
                continue
            rule = self._shapes[shape_id][0]
            violation = self._violation(shape_id)
            if not await rule.is_served(self.db, violation):
                found.append(violation)
        return found

    async def run(self, report: Reporter, stop: asyncio.Event) -> None:
        """Poll, report what changed, wait; until `stop` is set or cancelled.

        A failed read or report is logged and the loop goes on: the next poll
        reads from the same point, so nothing is skipped.
        """
        while not stop.is_set():
            violations = await self._poll_logged()
            if violations:
                await self._report_logged(report, violations)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval_s)

    async def _poll_logged(self) -> list[Violation]:
        try:
            return await self.poll_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.events.warning(
                "profile_read_failed",
                database=self.db.name,
                error=str(exc),
                exc_info=True,
            )
            return []

    async def _report_logged(
        self, report: Reporter, violations: list[Violation]
    ) -> None:
        try:
            await report(violations, SOURCE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.events.warning(
                "violations_report_failed",
                violations=len(violations),
                error=str(exc),
                exc_info=True,
            )

    def _is_new(self, entry: Document) -> bool:
        """Whether the entry was not counted yet (entries arrive in `ts` order)."""
        ts = entry.get("ts")
        if not isinstance(ts, dt.datetime):
            return True
        entry_id = to_json_text(entry.get("_id"))
        if ts == self._last_ts:
            if entry_id in self._ids_at_last_ts:
                return False
            self._ids_at_last_ts.add(entry_id)
            return True
        self._last_ts = ts
        self._ids_at_last_ts = {entry_id}
        return True

    def _record(
        self, rule: SlowQueryRule, shape: QueryShape, entry: Document
    ) -> ShapeId:
        """Count the entry; the least recently seen shape goes when full."""
        shape_id = (rule.name, shape.text)
        if shape_id in self._shapes:
            self._shapes.move_to_end(shape_id)
        else:
            self._shapes[shape_id] = (rule, shape, ShapeStats())
            while len(self._shapes) > self.max_shapes:
                self._shapes.popitem(last=False)
        self._shapes[shape_id][2].add(entry)
        return shape_id

    def _violation(self, shape_id: ShapeId) -> Violation:
        rule, shape, stats = self._shapes[shape_id]
        return rule.violation_for(shape, stats)
