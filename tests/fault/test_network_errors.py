"""Transient network errors, injected with `failCommand` on every command kind.

Each case arms the fail point twice for streamheal's own connections (the
driver retries a read or a write once by itself, so two failures reach
streamheal's code), writes one bad document and asserts it is fixed exactly
once, that the two failures happened, and that every part is still running.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.fault._support import (
    FailedCommands,
    all_alive,
    applied_fixes_by_document,
    failing_command,
    observed_monitor,
)
from tests.helpers import settings_for, wait_for_state


RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {email: unknown@example.com}
    mode: fix
  - name: no_negative_orders
    kind: query
    collection: orders
    filter: {total: {$lt: 0}}
    fix: delete
    mode: fix
"""
ENGINE = "  fix_delay: 0\n  sweep_interval: 1h\n  max_attempts: 5"
FAILURES = 2
# HostUnreachable. A "not primary" code such as 91 ShutdownInProgress would
# also work but makes the driver forget the server and select it again,
# which costs the 5 s server selection timeout per failure.
HOST_UNREACHABLE = 6

CLOSE_CONNECTION = {"closeConnection": True}
RESUMABLE_ERROR = {
    "errorCode": HOST_UNREACHABLE,
    "errorLabels": ["ResumableChangeStreamError"],
}
# Which part sends each command: the stream (getMore; aggregate to reopen),
# the per-write check (aggregate), the fixer (find to plan; insert of the
# backup and audit record; update of the document; delete; commit).
COMMANDS = [
    "getMore",
    "aggregate",
    "find",
    "insert",
    "update",
    "delete",
    "commitTransaction",
]


@pytest.mark.parametrize(
    "failure", [CLOSE_CONNECTION, RESUMABLE_ERROR], ids=["closed", "resumable"]
)
@pytest.mark.parametrize("command", COMMANDS)
async def test_transient_error_is_survived_and_the_write_fixed_once(
    db: Any,
    mongo_uri: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    command: str,
    failure: dict[str, Any],
) -> None:
    listener = FailedCommands()
    settings = settings_for(db.name, RULES, ENGINE)
    bad_collection, bad_document = (
        ("orders", {"_id": "o1", "total": -5})
        if command == "delete"
        else ("users", {"_id": "u1", "name": "no mail"})
    )

    async with observed_monitor(mongo_uri, settings, listener) as monitor:
        async with failing_command(mongo_client, command, FAILURES, **failure):
            await db[bad_collection].insert_one(bad_document)
            await wait_for_state(
                monitor, lambda state: state.fixed_total == 1, timeout_s=20
            )
            # Counted now: closing the stream at the end fails its getMore.
            failed = listener.counts[command]
        await wait_for_state(
            monitor, lambda state: state.stream_healthy and state.connected
        )
        alive = all_alive(monitor)
        detected = monitor.state.detected_total

    assert failed == FAILURES
    assert alive
    assert detected == 1
    assert await applied_fixes_by_document(db) == {bad_document["_id"]: 1}
    if command == "delete":
        assert await db.orders.count_documents({}) == 0
    else:
        assert await db.users.find_one({"_id": "u1"}) == {
            "_id": "u1",
            "name": "no mail",
            "email": "unknown@example.com",
        }
