"""The one queue of open violations: ordered, de-duplicated, bounded.

The queue is a view, not a store (design principle 5): what falls off the end
is counted as deferred and comes back with the next sweep.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from streamheal.rules import Violation


class EntryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for the fixer (or for nothing, in detect mode)
    FIXING = "fixing"
    HELD = "held"  # too big: waits for a person to approve it
    APPROVED = "approved"
    SIMULATED = "simulated"  # dry run done; waits until the data changes
    FAILED = "failed"  # gave up after the allowed attempts
    SKIPPED = "skipped"  # a person said not to fix it


class Offer(enum.StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    DEFERRED = "deferred"


@dataclass
class QueueEntry:
    """A violation in the queue, with what the queue knows about it."""

    violation: Violation
    source: str
    first_seen: float
    last_seen: float
    seen_count: int = 1
    status: EntryStatus = EntryStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    simulated_fingerprint: str | None = None
    held_fix_id: str | None = None
    approved: bool = False  # a person allowed this fix despite its size
    sequence: int = field(default=0)

    @property
    def id(self) -> str:
        return self.violation.id

    @property
    def order(self) -> tuple[int, float, int]:
        return (self.violation.severity.rank, self.first_seen, self.sequence)


class ViolationQueue:
    """Open violations by id, served severity first, then oldest first."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: dict[str, QueueEntry] = {}
        self._deferred: set[str] = set()
        self._sequence = 0
        self._changed = asyncio.Event()
        # The most entries ever held at once: never more than max_size.
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, violation_id: object) -> bool:
        return violation_id in self._entries

    def __iter__(self) -> Iterator[QueueEntry]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.order))

    @property
    def deferred_count(self) -> int:
        return len(self._deferred)

    def deferred_ids(self) -> frozenset[str]:
        """The violations turned away because the queue was full."""
        return frozenset(self._deferred)

    def get(self, violation_id: str) -> QueueEntry | None:
        return self._entries.get(violation_id)

    def offer(
        self, violation: Violation, source: str, now: float | None = None
    ) -> Offer:
        """Add a violation, or refresh it when it is already queued."""
        now = time.time() if now is None else now
        entry = self._entries.get(violation.id)
        if entry is not None:
            entry.last_seen = now
            entry.seen_count += 1
            changed = violation != entry.violation
            entry.violation = violation
            if entry.status is EntryStatus.SKIPPED:
                return Offer.UPDATED
            if entry.status is EntryStatus.FAILED and changed:
                # The data changed: the fix gets its attempts afresh.
                entry.status = EntryStatus.PENDING
                entry.attempts = 0
                entry.retry_at = 0.0
            self._changed.set()
            return Offer.UPDATED

        if len(self._entries) >= self.max_size:
            self._deferred.add(violation.id)
            return Offer.DEFERRED

        self._sequence += 1
        self._deferred.discard(violation.id)
        self._entries[violation.id] = QueueEntry(
            violation, source, now, now, sequence=self._sequence
        )
        self.high_water = max(self.high_water, len(self._entries))
        self._changed.set()
        return Offer.ADDED

    def remove(self, violation_id: str) -> QueueEntry | None:
        """Take a violation out: fixed, or no longer holding."""
        self._deferred.discard(violation_id)
        entry = self._entries.pop(violation_id, None)
        if entry is not None:
            self._changed.set()
        return entry

    def forget_deferred(self, violation_ids: Iterable[str]) -> None:
        self._deferred.difference_update(violation_ids)

    def clear_deferred(self) -> None:
        """A new sweep counts the deferred afresh."""
        self._deferred.clear()

    def entries_for(self, rule: str) -> list[QueueEntry]:
        return [
            entry for entry in self._entries.values() if entry.violation.rule == rule
        ]

    def next_ready(
        self, fixable_rules: set[str], now: float | None = None
    ) -> QueueEntry | None:
        """The first entry the fixer may work on now, in queue order."""
        now = time.time() if now is None else now
        for entry in self:
            if entry.violation.rule not in fixable_rules:
                continue
            if (
                entry.status in (EntryStatus.PENDING, EntryStatus.APPROVED)
                and entry.retry_at <= now
            ):
                return entry
        return None

    def next_retry_at(self, fixable_rules: set[str]) -> float | None:
        """When the earliest postponed entry becomes ready, if any is waiting."""
        times = [
            entry.retry_at
            for entry in self._entries.values()
            if entry.violation.rule in fixable_rules
            and entry.status in (EntryStatus.PENDING, EntryStatus.APPROVED)
        ]
        return min(times) if times else None

    async def wait_changed(self, timeout_s: float | None) -> None:
        """Return when the queue changes, or after the timeout."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            pass
        self._changed.clear()

    def notify(self) -> None:
        self._changed.set()
