"""The violation queue: order, de-duplication, bounds and readiness."""

from __future__ import annotations

from streamheal.fixer import EntryStatus, Offer, QueueEntry, ViolationQueue
from streamheal.rules import Severity, Violation


def violation(
    subject: str,
    severity: Severity = Severity.MEDIUM,
    rule: str = "r",
    key: object = None,
    description: str = "missing",
) -> Violation:
    return Violation(
        rule, "required", "c", severity, subject, (subject,), key, description
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


class TestDeferredRecount:
    """A sweep of a rule forgets that rule's deferred violations it did not find."""

    def test_deferred_violations_the_sweep_did_not_find_are_forgotten(
        self,
    ) -> None:
        queue = ViolationQueue(1)
        queue.offer(violation("queued"), "sweep", now=1.0)
        for subject in ["fixed", "still-bad", "also-fixed"]:
            queue.offer(violation(subject), "sweep", now=2.0)
        queue.offer(violation("other-rule", rule="other"), "sweep", now=2.0)
        assert queue.deferred_count == 4

        # The next sweep of "r" starts at 10.0 and finds only these two again.
        sweep_started = 10.0
        queue.offer(violation("queued"), "sweep", now=11.0)
        queue.offer(violation("still-bad"), "sweep", now=11.0)
        seen = {violation("queued").id, violation("still-bad").id}
        forgotten = queue.forget_deferred_unseen("r", seen, sweep_started)

        assert forgotten == 2
        assert queue.deferred_ids() == {
            violation("still-bad").id,
            violation("other-rule", rule="other").id,
        }
        assert queue.deferred_count == 2

    def test_a_violation_the_stream_deferred_during_the_sweep_is_kept(
        self,
    ) -> None:
        queue = ViolationQueue(1)
        queue.offer(violation("queued"), "sweep", now=1.0)
        queue.offer(violation("old"), "sweep", now=2.0)

        sweep_started = 10.0
        queue.offer(violation("written-mid-sweep"), "stream", now=10.5)
        forgotten = queue.forget_deferred_unseen(
            "r", {violation("queued").id}, sweep_started
        )

        assert forgotten == 1
        assert queue.deferred_ids() == {violation("written-mid-sweep").id}

    def test_a_deferred_violation_offered_again_before_the_sweep_is_forgotten(
        self,
    ) -> None:
        """Only a sighting during the sweep counts, not one before it."""
        queue = ViolationQueue(1)
        queue.offer(violation("queued"), "sweep", now=1.0)
        queue.offer(violation("gone"), "sweep", now=2.0)
        queue.offer(violation("gone"), "stream", now=9.0)

        forgotten = queue.forget_deferred_unseen("r", set(), since=10.0)

        assert forgotten == 1
        assert queue.deferred_count == 0


class TestSeenAgainAfterADryRun:
    """A simulated violation is simulated again only when its data changes."""

    def simulated_entry(self, queue: ViolationQueue) -> QueueEntry:
        queue.offer(violation("a", key="bogus"), "sweep", now=1.0)
        entry = queue.next_ready({"r"}, now=1.0)
        assert entry is not None
        entry.status = EntryStatus.FIXING
        entry.finish_dry_run(violation("a", key="bogus"), "plan-1")
        assert entry.status is EntryStatus.SIMULATED
        return entry

    def test_the_same_violation_seen_again_stays_simulated(self) -> None:
        queue = ViolationQueue(10)
        entry = self.simulated_entry(queue)

        outcome = queue.offer(violation("a", key="bogus"), "sweep", now=2.0)

        assert outcome is Offer.UPDATED
        assert entry.status is EntryStatus.SIMULATED
        assert entry.seen_count == 2
        assert queue.next_ready({"r"}, now=2.0) is None

    def test_a_new_bad_value_puts_it_back_for_the_fixer(self) -> None:
        queue = ViolationQueue(10)
        entry = self.simulated_entry(queue)
        changed = violation(
            "a", key="weird", description='status is "weird"; it must be one of'
        )

        outcome = queue.offer(changed, "stream", now=2.0)

        assert outcome is Offer.UPDATED
        assert entry.status is EntryStatus.PENDING
        assert entry.violation == changed
        assert queue.next_ready({"r"}, now=2.0) is entry
        # Until the fixer records the new plan, the old fingerprint stays.
        assert entry.simulated_fingerprint == "plan-1"

    def test_a_change_during_the_dry_run_sends_it_back_to_pending(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a", key="bogus"), "sweep", now=1.0)
        entry = queue.next_ready({"r"}, now=1.0)
        assert entry is not None
        entry.status = EntryStatus.FIXING

        # The stream sees a new value while the fixer is recording the old plan;
        # a FIXING entry keeps its status when offered.
        queue.offer(violation("a", key="weird"), "stream", now=2.0)
        assert entry.status is EntryStatus.FIXING
        entry.finish_dry_run(violation("a", key="bogus"), "plan-1")

        assert entry.status is EntryStatus.PENDING
        assert queue.next_ready({"r"}, now=2.0) is entry

    def test_a_changed_skipped_violation_stays_skipped(self) -> None:
        queue = ViolationQueue(10)
        entry = self.simulated_entry(queue)
        entry.status = EntryStatus.SKIPPED

        queue.offer(violation("a", key="weird"), "stream", now=2.0)

        assert entry.status is EntryStatus.SKIPPED

    def test_a_changed_failed_violation_gets_its_attempts_afresh(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a", key="bogus"), "sweep", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.status = EntryStatus.FAILED
        entry.attempts = 3
        entry.retry_at = 50.0

        queue.offer(violation("a", key="bogus"), "sweep", now=2.0)
        assert entry.status is EntryStatus.FAILED
        queue.offer(violation("a", key="weird"), "sweep", now=3.0)

        assert (entry.status, entry.attempts, entry.retry_at) == (
            EntryStatus.PENDING,
            0,
            0.0,
        )


class TestRoomForRepairs:
    """Detect-only violations give way, when the queue is full, to repairable ones."""

    def test_the_last_detect_only_entry_is_deferred_for_a_fixable_one(self) -> None:
        queue = ViolationQueue(3, detect_only_rules={"watch"})
        queue.offer(violation("w-high", Severity.HIGH, rule="watch"), "sweep", now=1.0)
        queue.offer(
            violation("w-low-old", Severity.LOW, rule="watch"), "sweep", now=2.0
        )
        queue.offer(
            violation("w-low-new", Severity.LOW, rule="watch"), "sweep", now=3.0
        )

        outcome = queue.offer(violation("f", rule="fix"), "sweep", now=4.0)

        assert outcome is Offer.ADDED
        assert [entry.violation.subject for entry in queue] == [
            "w-high",
            "f",
            "w-low-old",
        ]
        assert queue.deferred_ids() == {violation("w-low-new", rule="watch").id}

    def test_a_detect_only_violation_never_pushes_another_out(self) -> None:
        queue = ViolationQueue(1, detect_only_rules={"watch"})
        queue.offer(violation("a", rule="watch"), "sweep", now=1.0)

        outcome = queue.offer(violation("b", Severity.HIGH, rule="watch"), "sweep")

        assert outcome is Offer.DEFERRED
        assert [entry.violation.subject for entry in queue] == ["a"]

    def test_a_full_queue_of_repairable_entries_defers_as_before(self) -> None:
        queue = ViolationQueue(1, detect_only_rules={"watch"})
        queue.offer(violation("f1", rule="fix"), "sweep", now=1.0)

        outcome = queue.offer(violation("f2", rule="fix"), "sweep", now=2.0)

        assert outcome is Offer.DEFERRED
        assert queue.deferred_ids() == {violation("f2", rule="fix").id}


class TestKeptUnfixed:
    def test_a_violation_kept_unfixed_comes_back_skipped(self) -> None:
        queue = ViolationQueue(10)
        queue.keep_unfixed(violation("a").id)

        queue.offer(violation("a"), "stream", now=1.0)

        entry = queue.get(violation("a").id)
        assert entry is not None and entry.status is EntryStatus.SKIPPED
        assert queue.next_ready({"r"}) is None

    def test_allow_fixing_undoes_it(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "stream", now=1.0)
        assert queue.keep_unfixed(violation("a").id) is True
        assert queue.keep_unfixed(violation("a").id) is False

        queue.allow_fixing(violation("a").id)

        entry = queue.next_ready({"r"})
        assert entry is not None and entry.status is EntryStatus.PENDING


class TestRetryAfterConflicts:
    def test_the_next_sweep_retries_a_fix_that_gave_up_on_conflicts(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "stream", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.status, entry.attempts = EntryStatus.FAILED, 3
        entry.gave_up_on_conflict = True

        queue.offer(violation("a"), "stream", now=2.0)
        status_after_stream = entry.status
        queue.offer(violation("a"), "sweep", now=3.0)

        assert status_after_stream is EntryStatus.FAILED
        assert (entry.status, entry.attempts) == (EntryStatus.PENDING, 0)
        assert entry.gave_up_on_conflict is False

    def test_other_failures_still_wait_for_the_data_to_change(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "stream", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.status, entry.attempts = EntryStatus.FAILED, 3

        queue.offer(violation("a"), "sweep", now=2.0)

        assert (entry.status, entry.attempts) == (EntryStatus.FAILED, 3)


class TestKeptUnfixedStatuses:
    def test_allow_fixing_gives_back_a_persons_skip(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "stream", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.status = EntryStatus.SKIPPED

        queue.keep_unfixed(violation("a").id)
        queue.allow_fixing(violation("a").id)

        assert entry.status is EntryStatus.SKIPPED

    def test_an_entry_in_progress_is_not_handed_out_again(self) -> None:
        queue = ViolationQueue(10)
        queue.offer(violation("a"), "stream", now=1.0)
        entry = queue.get(violation("a").id)
        assert entry is not None
        entry.status = EntryStatus.FIXING
        queue.keep_unfixed(violation("a").id)

        entry.status = EntryStatus.PENDING  # as the fixer leaves a retried entry
        queue.offer(violation("a"), "stream", now=2.0)

        assert queue.next_ready({"r"}) is None
        assert entry.status is EntryStatus.SKIPPED
