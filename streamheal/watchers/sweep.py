"""The safety net: every rule's full question, on a timer.

Each rule's sweep runs in the server as an aggregation pipeline and streams
its violations; nothing is loaded whole. A sweep also ends the violations
that it no longer finds (unless they were seen again while it ran), queued
or deferred.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from bson.errors import BSONError
from pymongo.errors import PyMongoError

from streamheal._events import EventLog
from streamheal.rules import Database, Rule, Violation
from streamheal.state import MonitorState


REPORT_EVERY = 100

Reporter = Callable[[list[Violation], str], Awaitable[None]]
Finisher = Callable[[Rule, set[str], float], Awaitable[None]]


class Sweeper:
    """Runs all rules' sweeps at start, every interval, and when asked."""

    def __init__(
        self,
        db: Database,
        rules: Sequence[Rule],
        state: MonitorState,
        *,
        interval_s: float,
        report: Reporter,
        finish_rule: Finisher,
    ) -> None:
        self.db = db
        self.rules = list(rules)
        self.state = state
        self.interval_s = interval_s
        self.report = report
        self.finish_rule = finish_rule
        self.events = EventLog(state, "sweep")
        self._requested = asyncio.Event()
        self.completed = 0
        self.first_sweep_done = asyncio.Event()

    def request(self) -> None:
        """Sweep as soon as possible (after lost history, for instance)."""
        self._requested.set()

    async def run(self) -> None:
        """Sweep now and then every interval, until cancelled."""
        while True:
            self._requested.clear()
            await self.sweep_all()
            try:
                await asyncio.wait_for(self._requested.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def sweep_all(self) -> dict[str, int]:
        """One sweep of every rule; a failing rule does not stop the others."""
        started = time.time()
        counts: dict[str, int] = {}
        for rule in self.rules:
            try:
                counts[rule.name] = await self.sweep_rule(rule)
            except asyncio.CancelledError:
                raise
            except (PyMongoError, BSONError, ValueError, TypeError) as exc:
                self.events.error(
                    "rule_failed",
                    rule=rule.name,
                    collection=rule.collection,
                    error=str(exc),
                )

        duration_s = time.time() - started
        self.completed += 1
        self.first_sweep_done.set()
        self.state.sweeps += 1
        self.state.last_sweep_at = time.time()
        self.state.last_sweep_duration_s = round(duration_s, 3)
        self.state.touch()
        self.events.info(
            "sweep_completed",
            duration_ms=round(duration_s * 1000, 1),
            violations=sum(counts.values()),
        )
        return counts

    async def sweep_rule(self, rule: Rule) -> int:
        """Sweep one rule, report in chunks, then end what it did not find.

        The deferred count is the sweep's to keep true: the queue only hears
        of violations that hold, so a deferred one that stopped holding is
        forgotten here, when its rule's sweep does not find it again.
        """
        started = time.time()
        seen: set[str] = set()
        pending: list[Violation] = []
        async for violation in rule.sweep(self.db):
            seen.add(violation.id)
            pending.append(violation)
            if len(pending) >= REPORT_EVERY:
                await self.report(pending, "sweep")
                pending = []
        if pending:
            await self.report(pending, "sweep")
        await self.finish_rule(rule, seen, started)

        forgotten = self.state.queue.forget_deferred_unseen(rule.name, seen, started)
        if forgotten:
            self.events.debug(
                "deferred_violations_forgotten",
                rule=rule.name,
                collection=rule.collection,
                violations=forgotten,
            )
            self.state.touch()

        return len(seen)
