"""Item 7: the application changes a document between detection and fix.

Every write of a fix is conditional on the document still being what the
plan saw. A `failCommand` fail point holds streamheal's first write of the
fix (the backups are already written in the transaction); meanwhile the test
changes the document from its own client. The fix must not overwrite the
newer data: its transaction is aborted, leaving nothing, and the violation is
planned again against the newer data, or dropped when the change fixed it.
"""

from __future__ import annotations

from typing import Any

from bson import decode
from structlog.testing import capture_logs

from streamheal.fixer import BACKUPS, FIXES, EntryStatus
from tests.fault.fixer_support import RAW, fail_point, raw_documents
from tests.helpers import running_monitor, settings_for, wait_for_state


HOLD_MS = 2000
QUARANTINE = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: quarantine
    mode: fix
"""
ARCHIVE_DUPLICATES = """
  - name: one_account_per_email
    kind: unique
    collection: users
    keys: [email]
    keep: oldest
    fix: archive
    mode: fix
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h\n  retry_backoff: 50ms"


def fix_is_at(step: str) -> Any:
    def at(state: Any) -> bool:
        current = state.current_fix
        return current is not None and current.get("step") == step

    return at


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [log for log in logs if log["event"] == name]


async def backups_by_id(db: Any) -> dict[Any, dict[str, Any]]:
    stored = await db.get_collection(BACKUPS, codec_options=RAW).find({}).to_list()
    return {b["document_id"]: decode(b["document"].raw) for b in stored}


class TestChangedBeforeTheWrite:
    async def test_a_change_that_keeps_the_violation_is_fixed_as_changed(
        self, db: Any, mongo_client: Any, mongo_uri: str
    ) -> None:
        await db.users.insert_one({"_id": "u1", "name": "first"})
        settings = settings_for(db.name, QUARANTINE, FAST)

        with capture_logs() as logs:
            # The quarantine is a copy then a delete; the delete is held.
            async with fail_point(mongo_client, ["delete"], block_ms=HOLD_MS):
                async with running_monitor(mongo_uri, settings) as monitor:
                    await wait_for_state(monitor, fix_is_at("apply"), 20)
                    await db.users.update_one(
                        {"_id": "u1"}, {"$set": {"name": "newer"}}
                    )
                    await wait_for_state(
                        monitor, lambda state: state.fixed_total == 1, 20
                    )

        conflicts = events(logs, "fix_conflicted")
        assert [(c["violation_id"], c["attempt"]) for c in conflicts] == [
            (events(logs, "fix_applied")[0]["violation_id"], 1)
        ]
        assert len(events(logs, "fix_started")) == 2
        assert await db.users.count_documents({}) == 0
        quarantined = await db.users_quarantine.find({}, {"_streamheal": 0}).to_list()
        assert quarantined == [{"_id": "u1", "name": "newer"}]
        assert await backups_by_id(db) == {"u1": {"_id": "u1", "name": "newer"}}
        assert await db[FIXES].count_documents({}) == 1
        assert await db[FIXES].count_documents({"status": "applied"}) == 1

    async def test_a_change_that_ends_the_violation_drops_it(
        self, db: Any, mongo_client: Any, mongo_uri: str
    ) -> None:
        await db.users.insert_one({"_id": "u1", "name": "first"})
        settings = settings_for(db.name, QUARANTINE, FAST)

        with capture_logs() as logs:
            async with fail_point(mongo_client, ["delete"], block_ms=HOLD_MS):
                async with running_monitor(mongo_uri, settings) as monitor:
                    await wait_for_state(monitor, fix_is_at("apply"), 20)
                    await db.users.update_one(
                        {"_id": "u1"}, {"$set": {"email": "u1@example.com"}}
                    )
                    # The stream may drop the violation first; the held fix
                    # then meets the changed document and gives up.
                    await wait_for_state(
                        monitor,
                        lambda state: (
                            len(state.queue) == 0 and state.current_fix is None
                        ),
                        20,
                    )
                    assert monitor.state.fixed_total == 0
                    assert monitor.state.failed_total == 0

        assert len(events(logs, "fix_conflicted")) == 1
        assert len(events(logs, "violation_resolved")) == 1
        assert events(logs, "fix_applied") == []
        assert await db.users.find({}).to_list() == [
            {"_id": "u1", "name": "first", "email": "u1@example.com"}
        ]
        # The aborted transaction took its copy, backup and audit record along.
        assert await db.users_quarantine.count_documents({}) == 0
        assert await db[BACKUPS].count_documents({}) == 0
        assert await db[FIXES].count_documents({}) == 0


class TestConflictInsideTheTransaction:
    async def test_a_conflict_on_the_second_document_leaves_nothing_written(
        self, db: Any, mongo_client: Any, mongo_uri: str
    ) -> None:
        """The first duplicate's archive is undone with the aborted transaction."""
        await db.users.insert_many(
            [{"_id": f"u{n}", "email": "a@example.com"} for n in (1, 2, 3)]
        )
        originals = await raw_documents(db, "users")
        settings = settings_for(
            db.name, ARCHIVE_DUPLICATES, FAST + "\n  max_attempts: 1"
        )

        with capture_logs() as logs:
            # Held: the delete of u3, after u2 was copied and deleted.
            async with fail_point(mongo_client, ["delete"], skip=1, block_ms=HOLD_MS):
                async with running_monitor(mongo_uri, settings) as monitor:
                    await wait_for_state(monitor, fix_is_at("apply"), 20)
                    await db.users.update_one(
                        {"_id": "u3"}, {"$set": {"name": "newer"}}
                    )
                    await wait_for_state(
                        monitor, lambda state: state.failed_total == 1, 20
                    )
                    entry = next(iter(monitor.queue))
                    assert entry.status is EntryStatus.FAILED
                    assert entry.attempts == 1
                    # Given up on a conflict: the next sweep tries it afresh.
                    assert entry.gave_up_on_conflict is True
                    stats = monitor.state.rule_stats[entry.violation.rule]
                    assert (stats.failed_attempts, stats.conflicts) == (1, 1)

        failed = events(logs, "fix_failed")
        assert len(failed) == 1
        assert failed[0]["error"] == (
            'Document "u3" of users changed after the fix was planned; '
            "nothing was written."
        )
        current = await raw_documents(db, "users")
        assert current["u1"] == originals["u1"]
        assert current["u2"] == originals["u2"]
        assert decode(current["u3"]) == {
            "_id": "u3",
            "email": "a@example.com",
            "name": "newer",
        }
        assert await db.users_duplicates.count_documents({}) == 0
        assert await db[BACKUPS].count_documents({}) == 0
        assert await db[FIXES].count_documents({}) == 0
