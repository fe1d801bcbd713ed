"""A watched collection is dropped or renamed, or the database dropped.

A change stream on a database is not invalidated by a collection's drop or
rename on MongoDB; only dropDatabase invalidates it. SecantusDB does the
same: `drop` and `rename` events arrive on an open stream, and dropDatabase
sends a `drop` per collection, `dropDatabase`, then `invalidate`. streamheal
handles an `invalidate` after any of them too (a collection-level stream
gets one after a drop), by opening a new stream after the invalidate.
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from streamheal.monitor import Monitor
from tests.fault._support import all_alive, observed_monitor
from tests.helpers import settings_for, wait_for_state


RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
  - name: orders_need_status
    kind: required
    collection: orders
    fields: [status]
    mode: detect
"""
ENGINE = "  sweep_interval: 1h"


def queued(monitor: Monitor) -> set[tuple[str, Any]]:
    return {
        (entry.violation.collection, entry.violation.documents[0])
        for entry in monitor.queue
    }


async def write_bad(
    db: Any, monitor: Monitor, users: list[str], orders: list[str]
) -> None:
    expected = monitor.state.detected_total + len(users) + len(orders)
    if users:
        await db.users.insert_many([{"_id": name} for name in users])
    if orders:
        await db.orders.insert_many([{"_id": name} for name in orders])
    await wait_for_state(monitor, lambda state: state.detected_total == expected)


async def test_dropped_collection_leaves_the_queue_and_is_watched_again(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(db.name, RULES, ENGINE)
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            await write_bad(db, monitor, ["u1", "u2", "u3"], ["o1"])
            await db.users.drop()
            await wait_for_state(monitor, lambda state: len(state.queue) == 1)
            after_drop = queued(monitor)

            await write_bad(db, monitor, ["u4", "u5"], [])
            final = queued(monitor)
            alive = all_alive(monitor)

    gone = [log for log in logs if log["event"] == "collection_gone"]
    assert after_drop == {("orders", "o1")}
    assert final == {("orders", "o1"), ("users", "u4"), ("users", "u5")}
    assert [(log["collection"], log["violations_cleared"]) for log in gone] == [
        ("users", 3)
    ]
    assert alive


async def test_renamed_collections_are_forgotten_and_swept(
    db: Any, mongo_uri: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Renaming away clears; renaming into a watched name sweeps what came in."""
    settings = settings_for(db.name, RULES, ENGINE)
    async with observed_monitor(mongo_uri, settings) as monitor:
        await write_bad(db, monitor, ["u1", "u2"], ["o1"])
        await db.users.rename("users_old")
        await wait_for_state(monitor, lambda state: len(state.queue) == 1)
        after_rename = queued(monitor)

        await db.staging.insert_many([{"_id": "s1"}, {"_id": "s2", "email": "a@b"}])
        await db.staging.rename("orders", dropTarget=True)
        await wait_for_state(monitor, lambda state: state.sweeps == 2)
        after_rename_in = queued(monitor)

        await write_bad(db, monitor, ["u3"], ["o2"])
        final = queued(monitor)
        alive = all_alive(monitor)

    assert after_rename == {("orders", "o1")}
    # o1 went with the old orders; s1 and s2 arrived as orders and lack status.
    assert after_rename_in == {("orders", "s1"), ("orders", "s2")}
    assert final == {
        ("orders", "s1"),
        ("orders", "s2"),
        ("users", "u3"),
        ("orders", "o2"),
    }
    assert alive


async def test_dropped_database_invalidates_and_the_stream_reopens(
    db: Any, mongo_uri: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings = settings_for(db.name, RULES, ENGINE)
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            await write_bad(db, monitor, ["u1", "u2"], ["o1"])
            await mongo_client.drop_database(db.name)
            await wait_for_state(monitor, lambda state: len(state.queue) == 0)

            await write_bad(db, monitor, ["u3"], ["o2", "o3"])
            final = queued(monitor)
            alive = all_alive(monitor)

    names = [log["event"] for log in logs]
    assert final == {("users", "u3"), ("orders", "o2"), ("orders", "o3")}
    assert names.count("stream_invalidated") == 1
    assert names.count("stream_interrupted") == 0
    assert alive
