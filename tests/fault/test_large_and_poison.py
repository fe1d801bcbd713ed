"""Change events for documents near 16 MB, events too large, and poison writes."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from streamheal.monitor import Monitor
from tests.fault._support import all_alive, failing_command, observed_monitor
from tests.helpers import settings_for, wait_for_state


REQUIRED = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""
ENGINE = "  sweep_interval: 1h"
MAX_BSON_BYTES = 16 * 1024 * 1024
BLOB_BYTES = MAX_BSON_BYTES - 1024  # with _id and field names, just under
BSON_OBJECT_TOO_LARGE = 10334


def queued(monitor: Monitor) -> set[Any]:
    return {entry.violation.documents[0] for entry in monitor.queue}


@pytest.mark.slow
async def test_documents_near_16_mb_are_checked_on_insert_and_update(
    db: Any, mongo_uri: str
) -> None:
    """The stream carries no document, so the events stay small.

    Pre-images are on for the collection, so an update's event would carry
    the whole 16 MB document before the change: where that makes an event too
    large, the watcher reopens without pre-images.
    """
    await db.create_collection("users", changeStreamPreAndPostImages={"enabled": True})
    settings = settings_for(db.name, REQUIRED, ENGINE)
    blob = "x" * BLOB_BYTES
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            await db.users.insert_one({"_id": "good", "email": "a@b", "blob": blob})
            await db.users.insert_one({"_id": "bad", "blob": blob})
            await wait_for_state(monitor, lambda state: state.detected_total == 1)
            after_insert = queued(monitor)

            await db.users.update_one({"_id": "good"}, {"$unset": {"email": ""}})
            await db.users.update_one({"_id": "bad"}, {"$set": {"email": "c@d"}})
            await wait_for_state(
                monitor,
                lambda state: state.detected_total == 2 and queued(monitor) == {"good"},
            )
            alive = all_alive(monitor)

    names = [log["event"] for log in logs]
    assert after_insert == {"bad"}
    assert names.count("stream_interrupted") == 0
    assert alive


async def test_event_too_large_reopens_without_pre_images_then_skips_and_sweeps(
    db: Any, mongo_uri: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """BSONObjectTooLarge is injected on getMore: first the watcher drops
    pre-images and reads again; when it fails again it continues from now and
    sweeps, which finds what it could not read."""
    settings = settings_for(db.name, REQUIRED, ENGINE)
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            async with failing_command(
                mongo_client, "getMore", 1, errorCode=BSON_OBJECT_TOO_LARGE
            ):
                await db.users.insert_one({"_id": "first"})
                await wait_for_state(monitor, lambda state: state.detected_total == 1)

            async with failing_command(
                mongo_client, "getMore", 1, errorCode=BSON_OBJECT_TOO_LARGE
            ):
                await db.users.insert_one({"_id": "second"})
                await wait_for_state(monitor, lambda state: state.detected_total == 2)
            await wait_for_state(monitor, lambda state: state.sweeps == 2)
            await db.users.insert_one({"_id": "third"})
            await wait_for_state(monitor, lambda state: state.detected_total == 3)
            sources = {
                entry.violation.documents[0]: entry.source for entry in monitor.queue
            }
            alive = all_alive(monitor)

    too_large = [log for log in logs if log["event"] == "change_event_too_large"]
    assert [log["log_level"] for log in too_large] == ["warning", "error"]
    # "second" is found exactly once. Which part finds it depends on where the
    # server starts a stream opened "from now": at or before that insert (the
    # new stream delivers it) or after it (the sweep run for the skipped
    # event finds it). SecantusDB does either, depending on timing.
    assert sources.keys() == {"first", "second", "third"}
    assert (sources["first"], sources["third"]) == ("stream", "stream")
    assert sources["second"] in {"stream", "sweep"}
    assert [log["event"] for log in logs].count("stream_interrupted") == 0
    assert alive


DIVIDING = """
  - name: few_per_box
    kind: query
    collection: items
    filter: {$expr: {$gt: [{$divide: [100, "$per_box"]}, 10]}}
    mode: detect
"""


async def test_write_a_rule_cannot_evaluate_is_logged_and_the_rest_checked(
    db: Any, mongo_uri: str
) -> None:
    """`per_box: 0` makes the rule's $divide fail in the server for its batch."""
    settings = settings_for(
        db.name, DIVIDING, "  sweep_interval: 1h\n  batch_window: 200ms"
    )
    await db.items.insert_one({"_id": "seed", "per_box": 50})
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            await db.items.insert_many(
                [
                    {"_id": "ok", "per_box": 100},
                    {"_id": "few", "per_box": 5},
                    {"_id": "poison", "per_box": 0},
                    {"_id": "fewer", "per_box": 2},
                ]
            )
            await wait_for_state(monitor, lambda state: state.detected_total == 2)
            await db.items.insert_one({"_id": "later", "per_box": 1})
            await wait_for_state(monitor, lambda state: state.detected_total == 3)
            found = queued(monitor)
            alive = all_alive(monitor)

    failed = [log for log in logs if log["event"] == "write_check_failed"]
    assert found == {"few", "fewer", "later"}
    assert [(log["rule"], log["document_id"]) for log in failed] == [
        ("few_per_box", "poison")
    ]
    assert alive
