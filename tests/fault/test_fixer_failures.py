"""Item 10: fixes that fail, and rules that fail.

A failing fix is retried with a doubling backoff, stops after
`engine.max_attempts`, is marked failed with its reason on the state and in
the log, leaves no trace in the data, and the fixer moves on. A failing rule
is reported and the other rules keep running, in the sweep and per write.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import OperationFailure
from structlog.testing import capture_logs

from streamheal.fixer import BACKUPS, FIXES, EntryStatus
from streamheal.rules import Violation
from streamheal.rules.query import QueryRule
from tests.fault.fixer_support import fail_point, raw_documents
from tests.helpers import running_monitor, settings_for, wait_for_state


def rule(fix: str, extra: str = "") -> str:
    return f"""
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: {fix}
    mode: fix
{extra}"""


DEFAULT_EMAIL = "    defaults: {email: unknown@example.com}\n"
ENGINE = "  fix_delay: 0\n  sweep_interval: 1h\n  retry_backoff: 50ms\n"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [log for log in logs if log["event"] == name]


def attempts_of(logs: list[dict[str, Any]], violation_id: str) -> list[str]:
    """The outcome events of one violation's fix attempts, in order."""
    outcomes = ("fix_retried", "fix_failed", "fix_conflicted", "fix_applied")
    return [
        log["event"]
        for log in logs
        if log["event"] in outcomes and log.get("violation_id") == violation_id
    ]


class TestFailingFixes:
    async def test_a_duplicate_key_in_the_quarantine_fails_after_three_attempts(
        self, db: Any, mongo_uri: str
    ) -> None:
        await db.users.insert_many([{"_id": "u1", "n": 1}, {"_id": "u2", "n": 2}])
        await db.users_quarantine.insert_one({"_id": "u1", "n": "earlier"})
        before = await raw_documents(db, "users")
        settings = settings_for(
            db.name, rule("quarantine"), ENGINE + "  max_attempts: 3"
        )

        with capture_logs() as logs:
            async with running_monitor(mongo_uri, settings) as monitor:
                await wait_for_state(
                    monitor,
                    lambda state: state.failed_total == 1 and state.fixed_total == 1,
                    20,
                )
                snapshot = monitor.state.snapshot()
                entry = next(
                    e for e in monitor.queue if e.violation.documents == ("u1",)
                )
                stats = monitor.state.rule_stats["users_need_email"]

        # Three failed tries of u1 (two retried, the last given up), none a
        # conflict; u2's fix went through.
        assert (stats.failed_attempts, stats.conflicts) == (3, 0)
        failed = events(logs, "fix_failed")
        assert len(failed) == 1
        violation_id = failed[0]["violation_id"]
        assert attempts_of(logs, violation_id) == [
            "fix_retried",
            "fix_retried",
            "fix_failed",
        ]
        started = [
            s for s in events(logs, "fix_started") if s["violation_id"] == violation_id
        ]
        assert len(started) == 3
        retried = [
            r for r in events(logs, "fix_retried") if r["violation_id"] == violation_id
        ]
        assert [(r["attempt"], r["retry_in_s"]) for r in retried] == [
            (1, 0.05),
            (2, 0.1),
        ]
        assert failed[0]["log_level"] == "error"
        assert failed[0]["attempt"] == 3
        assert failed[0]["rule"] == "users_need_email"
        assert failed[0]["collection"] == "users"
        assert failed[0]["document_id"] == "u1"
        assert failed[0]["fix_id"] == started[-1]["fix_id"]
        assert failed[0]["error"].startswith("DuplicateKeyError (code 11000): ")

        assert entry.status is EntryStatus.FAILED
        assert entry.attempts == 3
        assert entry.last_error == failed[0]["error"]
        queued = {q["documents"][0]: q for q in snapshot["queue"]}
        assert queued["u1"]["status"] == "failed"
        assert queued["u1"]["last_error"] == failed[0]["error"]
        assert snapshot["counts"]["failed"] == 1
        assert snapshot["counts"]["fixed"] == 1
        assert [f["status"] for f in snapshot["recent_fixes"]].count("failed") == 1

        # The next violation was fixed; the failed one left no trace.
        assert await raw_documents(db, "users") == {"u1": before["u1"]}
        assert await db.users_quarantine.find({}, {"_streamheal": 0}).sort(
            "_id"
        ).to_list() == [{"_id": "u1", "n": "earlier"}, {"_id": "u2", "n": 2}]
        assert await db[BACKUPS].distinct("document_id") == ["u2"]
        assert await db[FIXES].distinct("status") == ["applied"]
        assert await db[FIXES].count_documents({}) == 1

    async def test_a_validator_rejecting_the_repaired_document_fails_the_fix(
        self, db: Any, mongo_uri: str
    ) -> None:
        schema = {"properties": {"email": {"bsonType": "string", "pattern": "@corp$"}}}
        await db.create_collection("users", validator={"$jsonSchema": schema})
        await db.users.insert_one({"_id": "u1"})
        before = await raw_documents(db, "users")
        settings = settings_for(
            db.name, rule("set_default", DEFAULT_EMAIL), ENGINE + "  max_attempts: 2"
        )

        with capture_logs() as logs:
            async with running_monitor(mongo_uri, settings) as monitor:
                await wait_for_state(monitor, lambda state: state.failed_total == 1, 20)

        failed = events(logs, "fix_failed")
        assert attempts_of(logs, failed[0]["violation_id"]) == [
            "fix_retried",
            "fix_failed",
        ]
        assert failed[0]["attempt"] == 2
        assert failed[0]["error"].startswith("WriteError (code 121): ")
        assert await raw_documents(db, "users") == before
        assert await db[BACKUPS].count_documents({}) == 0
        assert await db[FIXES].count_documents({}) == 0

    async def test_a_write_error_fails_the_fix(
        self, db: Any, mongo_client: Any, mongo_uri: str
    ) -> None:
        await db.users.insert_one({"_id": "u1"})
        before = await raw_documents(db, "users")
        settings = settings_for(db.name, rule("delete"), ENGINE + "  max_attempts: 2")

        with capture_logs() as logs:
            async with fail_point(mongo_client, ["delete"], times=2, error_code=2):
                async with running_monitor(mongo_uri, settings) as monitor:
                    await wait_for_state(
                        monitor, lambda state: state.failed_total == 1, 20
                    )

        failed = events(logs, "fix_failed")
        assert attempts_of(logs, failed[0]["violation_id"]) == [
            "fix_retried",
            "fix_failed",
        ]
        assert failed[0]["error"] == (
            "OperationFailure (code 2): Failing command via 'failCommand' failpoint"
        )
        assert await raw_documents(db, "users") == before
        assert await db[BACKUPS].count_documents({}) == 0
        assert await db[FIXES].count_documents({}) == 0


INEFFECTIVE_RULES = """
  - name: no_negative_totals
    kind: query
    collection: orders
    filter: {total: {$lt: 0}}
    fix: update
    update: {$set: {flag: true}}
    mode: fix
  - name: markers_need_label
    kind: required
    collection: markers
    fields: [label]
    mode: detect
"""


class TestIneffectiveFixes:
    async def test_a_fix_that_leaves_the_violation_is_applied_once(
        self, db: Any, mongo_uri: str
    ) -> None:
        """Setting `flag` leaves `total` negative: the violation outlives its fix."""
        await db.orders.insert_one({"_id": "o1", "total": -5})
        settings = settings_for(db.name, INEFFECTIVE_RULES, ENGINE)

        with capture_logs() as logs:
            async with running_monitor(mongo_uri, settings) as monitor:
                await wait_for_state(
                    monitor,
                    lambda state: state.failed_total == 1 and state.fixed_total == 1,
                    20,
                )
                # The change stream delivers the fix's own write before this
                # later one: once the marker is detected, the stream has seen
                # the fixed order again.
                await db.markers.insert_one({"_id": "m1"})
                await wait_for_state(
                    monitor, lambda state: state.detected_total == 2, 20
                )
                await monitor.sweeper.sweep_all()
                await wait_for_state(
                    monitor, lambda state: state.fixer_status == "idle", 20
                )

                (entry,) = monitor.queue.entries_for("no_negative_totals")
                status_after_sweep = entry.status
                seen_count = entry.seen_count
                snapshot = monitor.state.snapshot()

        [started] = events(logs, "fix_started")
        fix_id = started["fix_id"]
        [ineffective] = events(logs, "fix_ineffective")
        assert {
            key: ineffective[key]
            for key in (
                "rule",
                "collection",
                "violation_id",
                "document_id",
                "fix_id",
                "log_level",
            )
        } == {
            "rule": "no_negative_totals",
            "collection": "orders",
            "violation_id": entry.id,
            "document_id": "o1",
            "fix_id": fix_id,
            "log_level": "error",
        }
        expected_error = (
            f"Fix {fix_id} was applied but the violation still holds, so the "
            'rule\'s fix (update the document with {"$set":{"flag":true}}) does '
            "not repair it."
        )
        assert ineffective["error"] == expected_error
        assert attempts_of(logs, entry.id) == ["fix_applied"]
        assert events(logs, "fix_failed") == []

        # Seen by the first sweep, then again by the stream (the fix's own
        # write) and by the second sweep, and left alone both times.
        assert status_after_sweep is EntryStatus.FAILED
        assert seen_count == 3
        assert entry.attempts == 1
        assert entry.last_error == expected_error
        queued = {q["id"]: q for q in snapshot["queue"]}
        assert queued[entry.id]["status"] == "failed"
        assert queued[entry.id]["last_error"] == expected_error
        assert snapshot["counts"]["fixed"] == 1
        assert snapshot["counts"]["failed"] == 1
        assert snapshot["counts"]["detected"] == 2
        assert [(f["_id"], f["status"]) for f in snapshot["recent_fixes"]] == [
            (fix_id, "failed"),
            (fix_id, "applied"),
        ]
        [stats] = [r for r in snapshot["rules"] if r["name"] == "no_negative_totals"]
        assert {key: stats[key] for key in ("fixed", "failed", "open")} == {
            "fixed": 1,
            "failed": 1,
            "open": 1,
        }

        # The fix was applied exactly once and stays recorded, to be rolled back.
        assert await db.orders.find({}).to_list() == [
            {"_id": "o1", "total": -5, "flag": True}
        ]
        records = await db[FIXES].find({}).to_list()
        assert [(r["_id"], r["status"]) for r in records] == [(fix_id, "applied")]
        assert await db[BACKUPS].count_documents({}) == 1
        assert await db[BACKUPS].distinct("document_id") == ["o1"]

    async def test_a_failing_recheck_after_the_fix_does_not_repeat_it(
        self, db: Any, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The re-check fails once the order is flagged, that is after the fix."""
        recheck = QueryRule.recheck

        async def failing_once_fixed(
            rule: QueryRule, database: Any, violation: Violation
        ) -> Violation | None:
            if await database.orders.count_documents({"flag": True}):
                raise OperationFailure("re-check refused", code=2)
            return await recheck(rule, database, violation)

        monkeypatch.setattr(QueryRule, "recheck", failing_once_fixed)
        await db.orders.insert_one({"_id": "o1", "total": -5})
        settings = settings_for(
            db.name, INEFFECTIVE_RULES, ENGINE + "  max_attempts: 2"
        )

        with capture_logs() as logs:
            async with running_monitor(mongo_uri, settings) as monitor:
                await wait_for_state(
                    monitor,
                    lambda state: any(
                        a["event"] == "fix_recheck_failed" for a in state.activity
                    ),
                    20,
                )
                # The stream may have found the order again while the entry
                # was being taken out; a sweep finds it in any case.
                await monitor.sweeper.sweep_all()
                await wait_for_state(
                    monitor,
                    lambda state: state.failed_total == 1 and state.fixed_total == 1,
                    20,
                )

        [started] = events(logs, "fix_started")
        [recheck_failed] = events(logs, "fix_recheck_failed")
        assert recheck_failed["log_level"] == "warning"
        assert recheck_failed["fix_id"] == started["fix_id"]
        assert recheck_failed["error"] == "OperationFailure (code 2): re-check refused"
        # The stream found the flagged order again; planning it failed on the
        # same re-check, so the fix was never applied a second time.
        assert attempts_of(logs, started["violation_id"]) == [
            "fix_applied",
            "fix_retried",
            "fix_failed",
        ]
        assert events(logs, "fix_ineffective") == []
        records = await db[FIXES].find({}).to_list()
        assert [r["status"] for r in records] == ["applied"]
        assert await db[BACKUPS].count_documents({}) == 1


BREAKING_RULE = """
  - name: big_orders
    kind: query
    collection: orders
    filter: {$expr: {$gt: [{$toInt: "$qty"}, 100]}}
    mode: detect
  - name: orders_need_status
    kind: required
    collection: orders
    fields: [status]
    mode: detect
"""


class TestFailingRules:
    async def test_a_rule_failing_on_data_is_reported_and_others_run(
        self, db: Any, mongo_uri: str
    ) -> None:
        """`$toInt` of "many" is an aggregation error, in the sweep and per write."""
        await db.orders.insert_one({"_id": "o1", "qty": "many"})
        settings = settings_for(db.name, BREAKING_RULE, ENGINE)

        with capture_logs() as logs:
            async with running_monitor(mongo_uri, settings) as monitor:
                await db.orders.insert_one({"_id": "o2", "qty": "lots"})
                await wait_for_state(
                    monitor, lambda state: state.detected_total == 2, 20
                )
                await wait_for_state(
                    monitor,
                    lambda state: any(
                        a["event"] == "write_check_failed" for a in state.activity
                    ),
                    20,
                )

        detected = events(logs, "violation_detected")
        assert [(d["rule"], d["document_id"], d["source"]) for d in detected] == [
            ("orders_need_status", "o1", "sweep"),
            ("orders_need_status", "o2", "stream"),
        ]
        # The sweep reports the rule; the per-write check narrows the failure
        # down to the write it failed on (monitor.handle_writes).
        failed = events(logs, "rule_failed")
        assert [(f["rule"], f["collection"], f["log_level"]) for f in failed] == [
            ("big_orders", "orders", "error")
        ]
        assert "Failed to parse number 'many'" in failed[0]["error"]
        per_write = events(logs, "write_check_failed")
        assert [
            (f["rule"], f["collection"], f["document_id"], f["log_level"])
            for f in per_write
        ] == [("big_orders", "orders", "o2", "error")]
        assert "Failed to parse number 'lots'" in per_write[0]["error"]
