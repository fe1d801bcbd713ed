"""`streamheal run` as a user runs it: a subprocess, its API, its logs, rollback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.process import get_json, streamheal_run


RULES = """\
mongodb:
  uri: ${{TEST_MONGODB_URI}}
  database: {database}
engine:
  fix_delay: 0
  auto_fix: true
  dry_run: false
dashboard:
  port: 0
logging:
  file: logs/streamheal.log
rules:
  - name: orders_need_status
    kind: required
    collection: orders
    fields: [status]
    fix: set_default
    defaults: {{status: pending}}
"""


async def test_run_detects_fixes_and_rolls_back(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(database=db.name))

    async with streamheal_run(rules, env={"TEST_MONGODB_URI": mongo_uri}) as streamheal:
        started = await streamheal.wait_for("dashboard_started")
        await streamheal.wait_for("sweep_completed")
        await db.orders.insert_one({"_id": "o1", "total": 12})

        detected = await streamheal.wait_for("violation_detected")
        state = await get_json(started["url"] + "api/state")
        fixed = await streamheal.wait_for("fix_applied")
        # The state records the fix before the fix_applied line is logged.
        after_fix = await get_json(started["url"] + "api/state")
        code = await streamheal.stop()

    assert detected["document_id"] == "o1"
    assert detected["source"] == "stream"
    assert state["counts"]["detected"] == 1
    assert state["recent_detections"][0]["documents"] == ["o1"]
    assert after_fix["counts"]["fixed"] == 1
    assert after_fix["counts"]["in_queue"] == 0
    [record] = after_fix["recent_fixes"]
    assert (record["_id"], record["rule"], record["status"]) == (
        fixed["fix_id"],
        "orders_need_status",
        "applied",
    )
    assert code == 0
    assert await db.orders.find_one({"_id": "o1"}) == {
        "_id": "o1",
        "total": 12,
        "status": "pending",
    }
    assert await db.streamheal_backups.count_documents({"fix_id": fixed["fix_id"]}) == 1
    assert (tmp_path / "logs" / "streamheal.log").exists()

    rollback = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "streamheal.cli",
            "rollback",
            fixed["fix_id"],
            str(rules),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TEST_MONGODB_URI": mongo_uri, "PATH": ""},
    )

    assert rollback.returncode == 0, rollback.stderr
    assert await db.orders.find_one({"_id": "o1"}) == {"_id": "o1", "total": 12}
