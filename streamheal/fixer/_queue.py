"""The one queue of open violations: ordered, de-duplicated, bounded.

The queue is a view, not a store (design principle 5): what falls off the end
is counted as deferred and comes back with the next sweep; a deferred
violation that its rule's next sweep does not find is no longer counted.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from streamheal.rules import Violation


class EntryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for the fixer (or for nothing, in detect mode)
    FIXING = "fixing"
    HELD = "held"  # too big: waits for a person to approve it
    APPROVED = "approved"
    SIMULATED = "simulated"  # dry run done; waits until the data changes
    FAILED = "failed"  # gave up after the allowed attempts
    SKIPPED = "skipped"  # a person said not to fix it


# The statuses that wait for the data to change: a failed fix gets its
# attempts afresh, a dry run is simulated again.
WAITING_FOR_CHANGE = frozenset({EntryStatus.FAILED, EntryStatus.SIMULATED})


SWEEP_SOURCE = "sweep"


class Offer(enum.StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    DEFERRED = "deferred"


def has_changed(before: Violation, after: Violation) -> bool:
    """Whether a violation seen again was built from different data.

    A violation's fields (its documents, key, description and details) are
    all read from the data it is about, so any difference means the data
    moved: a value rewritten, a document joining or leaving a duplicate group.
    The test is cheap and can say "changed" when only a statistic moved (a
    slow query's count); the fixer's plan fingerprint then decides whether a
    dry run is recorded again, so such a change costs a re-plan, never a
    second record of the same plan.
    """
    return before != after


class Deferral(NamedTuple):
    """A violation left out of the full queue: its rule, and when last offered."""

    rule: str
    deferred_at: float


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
    # Failed because the application kept changing the documents under it:
    # the next sweep gives it its attempts afresh, whatever the violation says.
    gave_up_on_conflict: bool = False
    sequence: int = field(default=0)

    @property
    def id(self) -> str:
        return self.violation.id

    @property
    def order(self) -> tuple[int, float, int]:
        return (self.violation.severity.rank, self.first_seen, self.sequence)

    def finish_dry_run(self, simulated: Violation, fingerprint: str) -> None:
        """Mark the dry run of `simulated` done, unless the violation moved since.

        While the dry run ran the entry was FIXING, which `offer` leaves alone;
        a change it brought in meanwhile sends the entry back to PENDING, so
        the new data is simulated too.
        """
        self.simulated_fingerprint = fingerprint
        if has_changed(simulated, self.violation):
            self.status = EntryStatus.PENDING
        else:
            self.status = EntryStatus.SIMULATED


class ViolationQueue:
    """Open violations by id, served severity first, then oldest first."""

    def __init__(
        self, max_size: int, detect_only_rules: Collection[str] = frozenset()
    ) -> None:
        self.max_size = max_size
        # Their violations only wait to be seen: when the queue is full, one
        # of them makes room for a violation the fixer can repair.
        self.detect_only_rules = frozenset(detect_only_rules)
        # Violations a person said not to fix (a rolled-back fix), queued as
        # skipped whenever found again; each with the status it had before,
        # for `allow_fixing` to put back.
        self._not_to_fix: dict[str, EntryStatus | None] = {}
        self._entries: dict[str, QueueEntry] = {}
        self._deferred: dict[str, Deferral] = {}
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
            changed = has_changed(entry.violation, violation)
            entry.violation = violation
            if violation.id in self._not_to_fix and entry.status is not (
                EntryStatus.FIXING
            ):
                entry.status = EntryStatus.SKIPPED
            if entry.status is EntryStatus.SKIPPED:
                return Offer.UPDATED
            retry_after_conflict = (
                entry.status is EntryStatus.FAILED
                and entry.gave_up_on_conflict
                and source == SWEEP_SOURCE
            )
            if (entry.status in WAITING_FOR_CHANGE and changed) or retry_after_conflict:
                # The data changed: the fixer takes the entry again, with its
                # attempts afresh.
                entry.status = EntryStatus.PENDING
                entry.attempts = 0
                entry.retry_at = 0.0
                entry.gave_up_on_conflict = False
            self._changed.set()
            return Offer.UPDATED

        if len(self._entries) >= self.max_size and not self._make_room_for(
            violation, now
        ):
            self._deferred[violation.id] = Deferral(violation.rule, now)
            return Offer.DEFERRED

        self._sequence += 1
        self._deferred.pop(violation.id, None)
        entry = QueueEntry(violation, source, now, now, sequence=self._sequence)
        if violation.id in self._not_to_fix:
            entry.status = EntryStatus.SKIPPED
        self._entries[violation.id] = entry
        self.high_water = max(self.high_water, len(self._entries))
        self._changed.set()
        return Offer.ADDED

    def keep_unfixed(self, violation_id: str) -> bool:
        """Skip this violation now and whenever it is found again in this run.

        Returns False when it was kept unfixed already.
        """
        if violation_id in self._not_to_fix:
            return False
        entry = self._entries.get(violation_id)
        self._not_to_fix[violation_id] = entry.status if entry else None
        if entry is not None and entry.status is not EntryStatus.FIXING:
            entry.status = EntryStatus.SKIPPED
        self._changed.set()
        return True

    def allow_fixing(self, violation_id: str) -> None:
        """Undo `keep_unfixed` (the rollback it was for did not happen).

        The entry gets back the status it had, so a violation a person had
        skipped, or a fix held for approval, stays so.
        """
        before = self._not_to_fix.pop(violation_id, None)
        entry = self._entries.get(violation_id)
        if entry is not None and entry.status is EntryStatus.SKIPPED:
            if before is None or before is EntryStatus.FIXING:
                entry.status = EntryStatus.PENDING
            else:
                entry.status = before
        self._changed.set()

    def _make_room_for(self, violation: Violation, now: float) -> bool:
        """Defer the last detect-only entry for a violation the fixer can repair.

        Without this, rules that only detect would fill a full queue for good
        (nothing ever repairs them), and no violation of a rule in fix or dry
        run mode would reach the fixer.
        """
        if violation.rule in self.detect_only_rules:
            return False
        waiting = [
            entry
            for entry in self._entries.values()
            if entry.violation.rule in self.detect_only_rules
            and entry.status is EntryStatus.PENDING
        ]
        if not waiting:
            return False
        last = max(waiting, key=lambda entry: entry.order)
        del self._entries[last.id]
        self._deferred[last.id] = Deferral(last.violation.rule, now)
        return True

    def remove(self, violation_id: str) -> QueueEntry | None:
        """Take a violation out: fixed, or no longer holding."""
        self._deferred.pop(violation_id, None)
        entry = self._entries.pop(violation_id, None)
        if entry is not None:
            self._changed.set()
        return entry

    def forget_deferred(self, violation_ids: Iterable[str]) -> None:
        """Stop counting these violations as deferred: they no longer hold."""
        for violation_id in violation_ids:
            self._deferred.pop(violation_id, None)

    def forget_deferred_unseen(
        self, rule: str, seen: Collection[str], since: float
    ) -> int:
        """End the rule's deferred violations that a sweep did not find again.

        Call it when the rule's sweep, started at `since`, is done; `seen` is
        every violation id it found. A violation deferred at or after `since`
        was offered during the sweep (by the sweep itself or by the change
        stream) and is kept. Returns how many were forgotten.
        """
        unseen = [
            violation_id
            for violation_id, deferral in self._deferred.items()
            if deferral.rule == rule
            and deferral.deferred_at < since
            and violation_id not in seen
        ]
        self.forget_deferred(unseen)

        return len(unseen)

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
            if entry.id in self._not_to_fix:
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
