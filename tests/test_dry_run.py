"""Dry run changes nothing: the whole database is the same before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from bson import CodecOptions
from bson.raw_bson import RawBSONDocument

from streamheal.config import parse_settings
from streamheal.demo import load_demo_data
from streamheal.fixer import EntryStatus
from tests.helpers import running_monitor, wait_for_state


ROOT_RULES = Path(__file__).resolve().parent.parent / "rules.yaml"


async def snapshot_database(db: Any) -> dict[str, list[bytes]]:
    """Raw BSON of every document of every collection but streamheal's own."""
    collections = {}
    for name in sorted(await db.list_collection_names()):
        if name.startswith(("streamheal_", "system.")):
            continue
        options = CodecOptions(document_class=RawBSONDocument)
        raw = db[name].with_options(codec_options=options)
        collections[name] = [doc.raw async for doc in raw.find({}).sort("_id", 1)]
    return collections


async def test_the_demo_rules_in_dry_run_change_nothing(
    db: Any, mongo_uri: str
) -> None:
    settings_data = yaml.safe_load(ROOT_RULES.read_text())
    settings_data["mongodb"] = {"uri": "unused", "database": db.name}
    settings_data["engine"].update(fix_delay=0, sweep_interval="1h")
    for rule in settings_data["rules"]:
        rule["mode"] = "dry_run"
    settings = parse_settings(yaml.safe_dump(settings_data))
    await load_demo_data(db)
    before = await snapshot_database(db)

    async with running_monitor(mongo_uri, settings) as monitor:

        def all_simulated(state: Any) -> bool:
            entries = list(monitor.queue)
            return bool(entries) and all(
                entry.status is EntryStatus.SIMULATED for entry in entries
            )

        await wait_for_state(monitor, all_simulated, timeout_s=30)
        simulated = monitor.state.simulated_total
        queued = len(monitor.queue)

    after = await snapshot_database(db)
    assert after == before
    assert await db.streamheal_backups.count_documents({}) == 0
    assert await db.streamheal_fixes.count_documents({"status": "dry_run"}) == simulated
    # Every open violation was simulated once: two duplicate groups, two
    # orphans, two users missing fields, one bad status, one negative total,
    # one text price, one negative stock, and the email that is "".
    assert queued == simulated == 11
