"""The database server stops and starts again on the same storage and port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from streamheal.embedded import EmbeddedServer
from tests.fault._support import all_alive, observed_monitor
from tests.helpers import settings_for, wait_for_state


RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""
# A long batch window holds the writes made just before the stop in the
# watcher, so that their check meets the outage and must be read again.
ENGINE = "  sweep_interval: 1h\n  batch_window: 2s"
OUTAGE_TIMEOUT_S = 30.0
BAD_BEFORE, BAD_AFTER, GOOD = 3, 4, 5


@pytest.mark.slow
async def test_outage_is_reported_once_and_no_write_is_missed(
    tmp_path: Path,
) -> None:
    server = EmbeddedServer(str(tmp_path / "data"), log_path=tmp_path / "server.log")
    await server.start_async()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri)
    db = client["outage"]
    settings = settings_for("outage", RULES, ENGINE)
    try:
        with capture_logs() as logs:
            async with observed_monitor(server.uri, settings) as monitor:
                await db.users.insert_many(
                    [{"_id": f"before{n}"} for n in range(BAD_BEFORE)]
                    + [{"_id": f"good{n}", "email": "x@y"} for n in range(GOOD)]
                )
                await server.stop_async()
                await wait_for_state(
                    monitor,
                    lambda state: not state.connected and not state.stream_healthy,
                    OUTAGE_TIMEOUT_S,
                )
                healthz_during = (monitor.state.connected, monitor.state.stream_healthy)
                detected_during = monitor.state.detected_total

                await server.start_async()
                await wait_for_state(
                    monitor,
                    lambda state: state.connected and state.stream_healthy,
                    OUTAGE_TIMEOUT_S,
                )
                await db.users.insert_many(
                    [{"_id": f"after{n}"} for n in range(BAD_AFTER)]
                )
                await wait_for_state(
                    monitor,
                    lambda state: state.detected_total == BAD_BEFORE + BAD_AFTER,
                    OUTAGE_TIMEOUT_S,
                )
                alive = all_alive(monitor)
                queued = sorted(entry.violation.documents[0] for entry in monitor.queue)
    finally:
        await client.close()
        await server.stop_async()

    names = [log["event"] for log in logs]
    retries = [log for log in logs if log["event"] == "stream_retried"]
    assert healthz_during == (False, False)  # /healthz answers 503 on this
    assert detected_during == 0  # the batch met the outage; it was not dropped
    assert names.count("stream_interrupted") == 1
    assert names.count("stream_resumed") == 1
    assert names.count("rule_failed") == 0
    assert [log["retry_in_s"] for log in retries] == [
        0.5 * 2**n for n in range(1, len(retries) + 1)
    ]
    assert alive
    assert queued == sorted(
        [f"before{n}" for n in range(BAD_BEFORE)]
        + [f"after{n}" for n in range(BAD_AFTER)]
    )
