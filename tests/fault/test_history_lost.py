"""The stored resume point fell out of the server's history while streamheal was down.

SecantusDB answers with 286 ChangeStreamHistoryLost, as MongoDB does, when
the resume token is older than the oldest oplog entry. Unlike MongoDB, which
truncates its capped oplog by size as it writes, SecantusDB trims the oplog
to `--oplog-max-entries` only every 1,000 oplog entries written (or when
asked with `secantusAdmin.pruneOplog`), so this test writes more than that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from streamheal.embedded import EmbeddedServer
from tests.fault._support import all_alive, failing_command, observed_monitor
from tests.helpers import settings_for, wait_for_state


RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""
ENGINE = "  sweep_interval: 1h\n  queue_max: 1000"
OPLOG_MAX_ENTRIES = 50
WRITTEN_WHILE_DOWN = 1500
BAD_EVERY = 10  # every tenth document written while down lacks its email
BAD_AFTER = 2


@pytest.mark.slow
async def test_lost_history_is_reported_swept_and_the_stream_continues(
    tmp_path: Path,
) -> None:
    server = EmbeddedServer(
        str(tmp_path / "data"),
        extra_args=["--oplog-max-entries", str(OPLOG_MAX_ENTRIES)],
        log_path=tmp_path / "server.log",
    )
    await server.start_async()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri)
    db = client["history"]
    settings = settings_for("history", RULES, ENGINE)
    bad_while_down = [n for n in range(WRITTEN_WHILE_DOWN) if n % BAD_EVERY == 0]
    try:
        async with observed_monitor(server.uri, settings) as first:
            await db.users.insert_one({"_id": "first", "email": "a@b"})
            await wait_for_state(first, lambda state: state.stream_batches == 1)
        stored = await db.streamheal_state.find_one({"_id": "stream:history"})

        await db.users.insert_many(
            {"_id": n} if n % BAD_EVERY == 0 else {"_id": n, "email": "a@b"}
            for n in range(WRITTEN_WHILE_DOWN)
        )

        with capture_logs() as logs:
            async with observed_monitor(server.uri, settings) as second:
                await wait_for_state(
                    second, lambda state: state.detected_total == len(bad_while_down)
                )
                from_sweep = {
                    entry.violation.documents[0]
                    for entry in second.queue
                    if entry.source == "sweep"
                }
                await db.users.insert_many(
                    [{"_id": f"after{n}"} for n in range(BAD_AFTER)]
                )
                await wait_for_state(
                    second,
                    lambda state: (
                        state.detected_total == len(bad_while_down) + BAD_AFTER
                    ),
                )
                history_lost = second.state.history_lost
                sweeps = second.state.sweeps
                alive = all_alive(second)
                from_stream = {
                    entry.violation.documents[0]
                    for entry in second.queue
                    if entry.source == "stream"
                }
    finally:
        await client.close()
        await server.stop_async()

    lost = [log for log in logs if log["event"] == "stream_history_lost"]
    assert stored is not None and stored["resume_token"]
    assert [log["log_level"] for log in lost] == ["error"]
    assert history_lost == 1
    assert sweeps == 1  # the start-up sweep is the full sweep it asked for
    assert from_sweep == set(bad_while_down)
    assert from_stream == {f"after{n}" for n in range(BAD_AFTER)}
    assert [log["event"] for log in logs].count("stream_interrupted") == 0
    assert alive


CHANGE_STREAM_HISTORY_LOST = 286


async def test_history_lost_on_an_open_stream_is_reported_once(
    db: Any, mongo_uri: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """MongoDB can also fail a getMore with 286 when a slow reader falls behind."""
    settings = settings_for(db.name, RULES, ENGINE)
    with capture_logs() as logs:
        async with observed_monitor(mongo_uri, settings) as monitor:
            async with failing_command(
                mongo_client,
                "getMore",
                1,
                errorCode=CHANGE_STREAM_HISTORY_LOST,
            ):
                await wait_for_state(monitor, lambda state: state.history_lost == 1)
                await wait_for_state(monitor, lambda state: state.sweeps == 2)
            await db.users.insert_one({"_id": "later"})
            await wait_for_state(monitor, lambda state: state.detected_total == 1)
            history_lost = monitor.state.history_lost

    assert history_lost == 1
    assert [log["event"] for log in logs].count("stream_history_lost") == 1
    assert [log["event"] for log in logs].count("stream_interrupted") == 0
