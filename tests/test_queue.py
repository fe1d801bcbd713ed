"""The violation queue: order, de-duplication, bounds and readiness."""

from __future__ import annotations

from streamheal.fixer import EntryStatus, Offer, ViolationQueue
from streamheal.rules import Severity, Violation


def violation(
    subject: str, severity: Severity = Severity.MEDIUM, rule: str = "r"
) -> Violation:
    return Violation(
        rule, "required", "c", severity, subject, (subject,), [], "missing"
    )


class TestOrder:
    def test_severity_first_then_first_seen(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("low-old", Severity.LOW), "sweep", now=1.0)
        queue.offer(violation("med-new", Severity.MEDIUM), "sweep", now=3.0)
        queue.offer(violation("high-newest", Severity.HIGH), "stream", now=4.0)
        queue.offer(violation("med-old", Severity.MEDIUM), "sweep", now=2.0)

        subjects = [entry.violation.subject for entry in queue]

        assert subjects == ["high-newest", "med-old", "med-new", "low-old"]

    def test_equal_times_keep_arrival_order(self) -> None:
        queue = ViolationQueue(10)
        for subject in ["a", "b", "c"]:
            queue.offer(violation(subject), "sweep", now=1.0)

        assert [entry.violation.subject for entry in queue] == ["a", "b", "c"]


class TestDeduplication:
    def test_seen_again_updates_the_one_entry(self) -> None:
        queue = ViolationQueue(10)

        first = queue.offer(violation("a"), "stream", now=1.0)
        second = queue.offer(violation("a"), "sweep", now=5.0)

        entry = queue.get(violation("a").id)
        assert (first, second) == (Offer.ADDED, Offer.UPDATED)
        assert len(queue) == 1
        assert entry is not None
        assert (entry.first_seen, entry.last_seen, entry.seen_count) == (1.0, 5.0, 2)
        assert entry.source == "stream"

    def test_same_subject_of_another_rule_is_another_violation(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a", rule="one"), "sweep")
        queue.offer(violation("a", rule="two"), "sweep")

        assert len(queue) == 2


class TestBounds:
    def test_beyond_the_limit_violations_are_deferred_and_counted_once(self) -> None:
        queue = ViolationQueue(2)
        outcomes = [
            queue.offer(violation(s), "sweep") for s in ["a", "b", "c", "d", "c"]
        ]

        assert outcomes == [
            Offer.ADDED,
            Offer.ADDED,
            Offer.DEFERRED,
            Offer.DEFERRED,
            Offer.DEFERRED,
        ]
        assert len(queue) == 2
        assert queue.deferred_count == 2

    def test_a_deferred_violation_gets_in_when_room_frees(self) -> None:
        queue = ViolationQueue(1)
        queue.offer(violation("a"), "sweep")
        queue.offer(violation("b"), "sweep")

        queue.remove(violation("a").id)
        outcome = queue.offer(violation("b"), "sweep")

        assert outcome is Offer.ADDED
        assert queue.deferred_count == 0


class TestReadiness:
    def test_only_fixable_rules_and_ready_statuses_are_served(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("held", Severity.HIGH, rule="fix"), "sweep", now=1.0)
        queue.offer(
            violation("detect-only", Severity.HIGH, rule="detect"), "sweep", now=2.0
        )
        queue.offer(violation("ready", Severity.LOW, rule="fix"), "sweep", now=3.0)
        held = queue.get(violation("held", rule="fix").id)
        assert held is not None
        held.status = EntryStatus.HELD

        entry = queue.next_ready({"fix"}, now=10.0)

        assert entry is not None
        assert entry.violation.subject == "ready"

    def test_a_postponed_entry_waits_for_its_retry_time(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "sweep", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.retry_at = 20.0

        assert queue.next_ready({"r"}, now=19.0) is None
        assert queue.next_ready({"r"}, now=20.0) is entry
        assert queue.next_retry_at({"r"}) == 20.0
