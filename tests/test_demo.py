"""`streamheal demo`, as the README's demo command runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.process import StreamhealProcess, get_json


ROOT = Path(__file__).resolve().parent.parent


async def test_demo_serves_state_with_violations_appearing(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """The demo runs on its own server, even with MONGODB_URI left in the shell."""
    await db.users.insert_one({"_id": "mine", "email": "keep@example.com"})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamheal.cli", "demo", "--port", "0",
        "--rules", str(ROOT / "rules.yaml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env={
            **os.environ,
            "STREAMHEAL_TOKEN": "demo-token",
            "MONGODB_URI": mongo_uri,
            "MONGODB_DATABASE": db.name,
        },
    )  # fmt: skip
    demo = StreamhealProcess(process)
    try:
        started = await demo.wait_for("dashboard_started")
        first_sweep = await demo.wait_for("sweep_completed")
        state = await get_json(started["url"] + "api/state")
        # The seed data holds 11 violations (counted in tests/test_dry_run.py);
        # live writes start only after the first sweep.
        assert first_sweep["violations"] == 11
        assert state["database"]["connected"] is True
        assert {rule["kind"] for rule in state["rules"]} == {
            "unique", "reference", "required", "allowed", "type",
            "range", "pattern", "query", "slow_query",
        }  # fmt: skip
        await demo.wait_for("fix_applied")
    finally:
        code = await demo.stop()
    assert code == 0
    assert await db.users.find({}).to_list() == [
        {"_id": "mine", "email": "keep@example.com"}
    ]
    assert sorted(await db.list_collection_names()) == ["users"]


def test_an_installed_package_carries_the_demo_rules(tmp_path: Path) -> None:
    """A wheel holds the root rules.yaml, so `streamheal demo` runs when installed."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("streamheal-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("streamheal/demo.rules.yaml")

    assert packaged == (ROOT / "rules.yaml").read_bytes()
