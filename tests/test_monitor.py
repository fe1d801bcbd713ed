"""The vertical slice: stream -> rule -> queue -> fixer -> state, on a real server."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from streamheal.fixer import BACKUPS, FIXES, EntryStatus, rollback_fix
from tests.helpers import running_monitor, settings_for, wait_for_state


REQUIRED_FIX = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {email: unknown@example.com}
    mode: fix
"""
ALLOWED_DRY_RUN = """
  - name: order_status_is_known
    kind: allowed
    collection: orders
    field: status
    values: [pending, paid]
    fix: set_default
    default: pending
    mode: dry_run
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h"


async def test_bad_write_is_detected_through_the_stream(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(
        db.name, REQUIRED_FIX.replace("mode: fix", "mode: detect"), FAST
    )
    async with running_monitor(mongo_uri, settings) as monitor:
        await db.users.insert_one({"_id": "u1", "name": "no mail"})

        await wait_for_state(monitor, lambda state: state.detected_total == 1)

        snapshot = monitor.state.snapshot()
        assert [v["documents"] for v in snapshot["queue"]] == [["u1"]]
        assert snapshot["recent_detections"][0]["source"] == "stream"
        # Seen by the stream between sweeps (the next is an hour away); how
        # soon is measured by benchmarks/latency.py, not asserted here.
        assert snapshot["counts"]["sweeps"] == 1


async def test_fix_applies_backs_up_and_rolls_back(db: Any, mongo_uri: str) -> None:
    settings = settings_for(db.name, REQUIRED_FIX, FAST)
    with capture_logs() as logs:
        async with running_monitor(mongo_uri, settings) as monitor:
            await db.users.insert_one({"_id": "u1", "name": "no mail"})
            await wait_for_state(monitor, lambda state: state.fixed_total == 1)

            assert await db.users.find_one({"_id": "u1"}) == {
                "_id": "u1",
                "name": "no mail",
                "email": "unknown@example.com",
            }
            backup = await db[BACKUPS].find_one({})
            assert backup["document"] == {"_id": "u1", "name": "no mail"}
            record = await db[FIXES].find_one({"_id": backup["fix_id"]})
            assert (record["status"], record["backups"]) == ("applied", 1)
            [written] = [log for log in logs if log["event"] == "backup_written"]
            assert {
                key: written[key]
                for key in (
                    "rule",
                    "collection",
                    "fix_id",
                    "backups",
                    "backup_collection",
                )
            } == {
                "rule": "users_need_email",
                "collection": "users",
                "fix_id": backup["fix_id"],
                "backups": 1,
                "backup_collection": "streamheal_backups",
            }

            await rollback_fix(
                monitor.client, monitor.db, backup["fix_id"], use_transaction=True
            )

            assert await db.users.find_one({"_id": "u1"}) == {
                "_id": "u1",
                "name": "no mail",
            }
            record = await db[FIXES].find_one({"_id": backup["fix_id"]})
            assert record["status"] == "rolled_back"


async def test_violation_fixed_by_someone_else_leaves_the_queue(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(
        db.name, REQUIRED_FIX.replace("mode: fix", "mode: detect"), FAST
    )
    await db.users.insert_one({"_id": "u1"})
    async with running_monitor(mongo_uri, settings) as monitor:
        assert len(monitor.queue) == 1

        await db.users.update_one({"_id": "u1"}, {"$set": {"email": "u1@example.com"}})
        await wait_for_state(monitor, lambda state: len(state.queue) == 0)


async def test_dry_run_changes_nothing_and_simulates_once(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(
        db.name, REQUIRED_FIX.replace("mode: fix", "mode: dry_run"), FAST
    )
    await db.users.insert_one({"_id": "u1", "name": "x"})
    async with running_monitor(mongo_uri, settings) as monitor:
        await wait_for_state(monitor, lambda state: state.simulated_total == 1)
        await monitor.sweeper.sweep_all()
        await wait_for_state(monitor, lambda state: state.fixer_status == "idle")

        records = await db[FIXES].find({}).to_list()
        assert len(records) == 1
        assert records[0]["status"] == "dry_run"
        assert records[0]["operations"][0]["before"] == {"_id": "u1", "name": "x"}
        assert records[0]["operations"][0]["after"] == {
            "_id": "u1",
            "name": "x",
            "email": "unknown@example.com",
        }
    assert await db.users.find({}).to_list() == [{"_id": "u1", "name": "x"}]
    assert await db[BACKUPS].count_documents({}) == 0


async def test_dry_run_is_simulated_again_only_when_the_data_changes(
    db: Any, mongo_uri: str
) -> None:
    """An unchanged re-detection is not simulated; a new bad value is, once."""
    settings = settings_for(db.name, ALLOWED_DRY_RUN, FAST)
    await db.orders.insert_one({"_id": "o1", "status": "bogus"})
    with capture_logs() as logs:
        async with running_monitor(mongo_uri, settings) as monitor:
            await wait_for_state(monitor, lambda state: state.simulated_total == 1)
            (entry,) = list(monitor.queue)

            await monitor.sweeper.sweep_all()

            assert entry.seen_count == 2
            assert entry.status is EntryStatus.SIMULATED
            assert monitor.state.simulated_total == 1

            await db.orders.update_one({"_id": "o1"}, {"$set": {"status": "weird"}})
            await wait_for_state(monitor, lambda state: state.simulated_total == 2)

            assert entry.status is EntryStatus.SIMULATED
            shown = monitor.state.snapshot()["recent_fixes"][0]

    # The fixer planned twice: once per value, never for the unchanged sweep.
    plans = [
        log
        for log in logs
        if log["event"] == "fix_step_started" and log["step"] == "plan"
    ]
    assert len(plans) == 2
    records = await db[FIXES].find({}).sort("_id", 1).to_list()
    assert [record["status"] for record in records] == ["dry_run", "dry_run"]
    assert [record["operations"][0]["before"] for record in records] == [
        {"_id": "o1", "status": "bogus"},
        {"_id": "o1", "status": "weird"},
    ]
    assert records[1]["operations"][0]["after"] == {"_id": "o1", "status": "pending"}
    # The dashboard's "last planned change" is the new plan.
    assert shown["_id"] == str(records[1]["_id"])
    assert shown["operations"][0]["before"] == {"_id": "o1", "status": "weird"}
    assert await db.orders.find({}).to_list() == [{"_id": "o1", "status": "weird"}]
    assert await db[BACKUPS].count_documents({}) == 0
