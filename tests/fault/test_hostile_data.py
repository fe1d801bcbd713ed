"""Bad data never crashes the monitor (issue 4, item 8).

Hypothesis writes hostile documents (see `hostile.py`) through the server
while a monitor runs one rule of every kind, in dry-run and in fix mode, so
that fix plans are built and applied too. Whatever the data, the monitor's
tasks stay alive, its stream stays healthy, a final bad write is still
detected, its state and logs stay valid JSON, and what a rule or a fix could
not handle is logged as `rule_failed` or `fix_failed` instead of crashing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from streamheal.fixer import EntryStatus
from streamheal.log import configure_logging
from streamheal.monitor import Monitor, open_client
from tests.fault.hostile import (
    DOCUMENTS,
    PARENTS,
    SPECIAL_VALUES,
    VALUES,
    mongodb_equality_form,
)
from tests.helpers import running_monitor, settings_for, wait_for_state


EXAMPLES = 10
# Not here: `unique` with `normalize`. Its per-write check sends the keys in a
# `$literal`, which SecantusDB 0.7.0b3 evaluates in time exponential in their
# nesting depth (a key 20 levels deep takes about 28 s; MongoDB is linear).
SETTLE_TIMEOUT_S = 60.0
SENTINEL_ID = "sentinel"
PARTS = ("stream", "sweep", "fixer", "profiler")
CLI = (sys.executable, "-m", "streamheal.cli")

RULES = """
  - name: required
    kind: required
    collection: items
    fields: [v]
    fix: set_default
    defaults: {{v: 1}}
    mode: {mode}
  - name: unique
    kind: unique
    collection: items
    keys: [v, n.v]
    fix: archive
    mode: {mode}
  - name: unique_plain
    kind: unique
    collection: items
    keys: [t]
    mode: {mode}
  - name: reference
    kind: reference
    collection: items
    field: r
    references: parents.code
    fix: unset
    mode: {mode}
  - name: allowed
    kind: allowed
    collection: items
    field: v
    values: [1, a, '$v']
    fix: set_default
    default: 1
    mode: {mode}
  - name: type
    kind: type
    collection: items
    field: n.v
    types: [int, long]
    fix: convert
    mode: {mode}
  - name: range
    kind: range
    collection: items
    field: v
    min: 0
    max: 5
    mode: {mode}
  - name: pattern
    kind: pattern
    collection: items
    field: n.v
    regex: '^a'
    options: i
    mode: {mode}
  - name: query
    kind: query
    collection: items
    filter: {{t: {{$exists: true}}}}
    fix: update
    update: {{$set: {{t_checked.by: streamheal}}}}
    mode: {mode}
  - name: slow
    kind: slow_query
    collection: '*'
    threshold: 0ms
    mode: {mode}
  - name: sentinel
    kind: query
    collection: items
    filter: {{sentinel: true}}
    mode: detect
"""
ENGINE = """\
  auto_fix: true
  dry_run: {dry_run}
  fix_delay: 0
  sweep_interval: 1h
  queue_max: 100000
  max_attempts: 1
  max_docs_per_fix: 100000"""

PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # Shrinking a failure here re-runs a monitor hundreds of times; the
    # failing example is printed whole instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
_example_numbers = itertools.count()


def no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """Parse JSON as a browser would: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=no_constants)


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """streamheal's production logging, JSON lines into a file of this test."""
    path = tmp_path / "streamheal.log"
    configure_logging("info", str(path), console=False)
    yield path
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


@pytest.fixture
async def hostile_client(mongo_uri: str) -> AsyncIterator[AsyncMongoClient[Any]]:
    """A client that reads every date, as streamheal's own does."""
    client = open_client(mongo_uri)
    yield client
    await client.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    return [strict_json(line) for line in path.read_text().splitlines()]


def assert_alive(monitor: Monitor) -> None:
    assert sorted(monitor.tasks) == sorted(PARTS)
    for name, task in monitor.tasks.items():
        assert not task.done(), f"the {name} task ended"
    assert monitor.state.stream_healthy


def is_settled(monitor: Monitor) -> bool:
    """Nothing is being fixed and nothing the fixer may take is waiting."""
    return (
        monitor.state.current_fix is None
        and monitor.queue.next_ready(monitor.fixer.fixable) is None
    )


async def write_hostile(
    db: Any, documents: list[dict[str, Any]], data: st.DataObject
) -> int:
    """Insert, replace, update and delete; return how many writes the server took."""
    accepted = 0
    for number, document in enumerate(documents):
        try:
            await db.items.insert_one({"_id": number, **document})
            accepted += 1
        except PyMongoError:
            continue  # the server refused it; nothing reached the stream
        action = data.draw(st.sampled_from(["keep", "replace", "set", "delete"]))
        try:
            if action == "replace":
                await db.items.replace_one({"_id": number}, data.draw(DOCUMENTS))
            elif action == "set":
                field = data.draw(st.sampled_from(["v", "n.v", "r", "t", "n"]))
                value = data.draw(VALUES)
                await db.items.update_one({"_id": number}, {"$set": {field: value}})
            elif action == "delete":
                await db.items.delete_one({"_id": number})
            accepted += action != "keep"
        except PyMongoError:
            pass
    return accepted


async def query_hostile(db: Any, values: list[Any]) -> None:
    """Queries the profiler records, for the slow_query rule to read."""
    for value in values:
        try:
            await db.items.find({"v": value, "n.v": {"$gte": value}}).to_list()
            await db.items.find({"t": {"$in": [value]}}, sort=[("r", -1)]).to_list()
        except PyMongoError:
            pass


@pytest.mark.parametrize("mode", ["dry_run", "fix"])
@PROPERTY_SETTINGS
@given(
    documents=st.lists(DOCUMENTS, min_size=1, max_size=8),
    parents=st.lists(PARENTS, max_size=3),
    queried=st.lists(VALUES, max_size=3),
    data=st.data(),
)
async def test_hostile_writes_never_stop_the_monitor(
    hostile_client: AsyncMongoClient[Any],
    mongo_uri: str,
    database_name: str,
    json_log: Path,
    mode: str,
    documents: list[dict[str, Any]],
    parents: list[dict[str, Any]],
    queried: list[Any],
    data: st.DataObject,
) -> None:
    name = f"{database_name}_{next(_example_numbers)}"
    db = hostile_client[name]
    config = settings_for(
        name,
        RULES.format(mode=mode),
        ENGINE.format(dry_run="true" if mode == "dry_run" else "false"),
    )
    try:
        async with running_monitor(mongo_uri, config) as monitor:
            for number, parent in enumerate(parents):
                try:
                    await db.parents.insert_one({"_id": number, **parent})
                except PyMongoError:
                    pass
            await write_hostile(db, documents, data)
            if parents:
                await db.parents.delete_one({"_id": 0})
            await query_hostile(db, queried)

            # The stream handles writes in order: once the sentinel is seen,
            # every write before it has been checked by every rule.
            await db.items.insert_one({"_id": SENTINEL_ID, "sentinel": True})
            await wait_for_state(
                monitor,
                lambda state: state.rule_stats["sentinel"].detected == 1,
                SETTLE_TIMEOUT_S,
            )
            await wait_for_state(
                monitor, lambda _: is_settled(monitor), SETTLE_TIMEOUT_S
            )

            assert_alive(monitor)
            snapshot = strict_json(json.dumps(monitor.state.snapshot()))
            assert snapshot["database"]["stream_healthy"] is True
            assert_failures_are_reported(monitor)
            if mode == "dry_run":
                await assert_stream_agrees_with_sweep(monitor, db)
    finally:
        await hostile_client.drop_database(name)

    logged = read_log(json_log)
    assert "streamheal_crashed" not in {event["event"] for event in logged}
    for event in logged:
        if event["event"] in ("rule_failed", "fix_failed"):
            assert event["rule"] and event["error"], event


def assert_failures_are_reported(monitor: Monitor) -> None:
    """Every entry the fixer gave up on carries its reason."""
    for entry in monitor.queue:
        if entry.status is EntryStatus.FAILED:
            assert entry.last_error, entry
        if entry.violation.rule in monitor.fixer.fixable:
            assert entry.status in (
                EntryStatus.SIMULATED,
                EntryStatus.FAILED,
                EntryStatus.HELD,
            ), (entry.violation, entry.status)


async def assert_stream_agrees_with_sweep(monitor: Monitor, db: Any) -> None:
    """What the stream queued is what a sweep finds now (design principle 1).

    Only in dry run, where nothing changes the data after the writes.
    """
    for rule in monitor.rules:
        if not rule.checks_writes:
            continue
        try:
            if rule.kind == "unique":
                swept = await unique_groups_as_mongodb_makes_them(rule, db)
            else:
                swept = {v.id async for v in rule.sweep(db)}
        except PyMongoError as exc:
            pytest.fail(f"rule {rule.name} cannot sweep this data: {exc}")
        queued = {entry.id for entry in monitor.queue.entries_for(rule.name)}
        assert queued == swept, rule.name


async def unique_groups_as_mongodb_makes_them(rule: Any, db: Any) -> set[str]:
    """The ids of the `unique` violations a sweep on MongoDB would report.

    SecantusDB 0.7.0b3 differs from MongoDB here: its `$group` keys a bucket
    by the document's items sorted, so it puts `[]` with `{}`, `{a: 1}` with
    `[["a", 1]]` and `{a: 1, b: 2}` with `{b: 2, a: 1}`, all of which MongoDB
    keeps apart. So the server only works out each document's key, and the
    grouping is done here with MongoDB's equality.
    """
    present = {"$or": [{path: {"$exists": True}} for path in rule.spec.keys]}
    pipeline = [
        {"$match": present},
        {"$sort": {"_id": 1}},
        {"$project": {"key": rule.group_key()}},
    ]
    groups: dict[Any, tuple[dict[str, Any], list[Any]]] = {}
    async for row in await db[rule.collection].aggregate(pipeline):
        if any(value is not None for value in row["key"].values()):
            form = mongodb_equality_form(row["key"])
            groups.setdefault(form, (row["key"], []))[1].append(row["_id"])
    return {
        rule.violation_from_row({"_id": key, "documents": ids}).id
        for key, ids in groups.values()
        if len(ids) > 1
    }


def test_check_prints_valid_json_for_every_bson_type(
    tmp_path: Path, mongo_uri: str, database_name: str
) -> None:
    """`streamheal check --format json` reports hostile values as valid JSON."""
    documents = [
        {"_id": number, "v": value, "n": {"v": value}, "t": value, "r": value}
        for number, value in enumerate(SPECIAL_VALUES)
    ]
    rules = tmp_path / "rules.yaml"
    config = settings_for(database_name, RULES.format(mode="detect"))
    rules.write_text(
        f"mongodb:\n  uri: {mongo_uri}\n  database: {database_name}\n"
        "logging:\n  file: null\nrules:\n" + RULES.format(mode="detect")
    )

    async def fill() -> list[str]:
        client = open_client(mongo_uri)
        try:
            await client[database_name].items.insert_many(documents)
            await client[database_name].parents.insert_one({"_id": 0, "code": 1})
            db = client[database_name]
            return sorted(
                [v.id for rule in config.build_rules() async for v in rule.sweep(db)]
            )
        finally:
            await client.close()

    async def drop() -> None:
        client = open_client(mongo_uri)
        await client.drop_database(database_name)
        await client.close()

    expected = asyncio.run(fill())
    try:
        result = subprocess.run(
            [*CLI, "check", str(rules)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        result_json = subprocess.run(
            [*CLI, "check", "--format", "json", str(rules)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        asyncio.run(drop())

    assert result.returncode == 1, result.stderr
    assert result_json.returncode == 1, result_json.stderr
    assert "Traceback" not in result_json.stderr
    report = strict_json(result_json.stdout)
    assert sorted(v["id"] for v in report["violations"]) == expected
    assert report["summary"]["total"] == len(expected)
