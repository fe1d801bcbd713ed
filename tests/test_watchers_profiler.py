"""The profiler reader against a real SecantusDB: settings, polling, the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamheal.config import parse_settings
from streamheal.rules import Violation
from streamheal.rules.slow_query import SlowQueryRule
from streamheal.watchers import ProfilerWatcher


WAIT_S = 5.0


def make_rules(*bodies: str) -> list[SlowQueryRule]:
    text = "".join(f"  - {body}\n" for body in bodies)
    rules = parse_settings(f"mongodb: {{database: x}}\nrules:\n{text}").build_rules()
    slow_query_rules = [rule for rule in rules if isinstance(rule, SlowQueryRule)]
    assert len(slow_query_rules) == len(rules)
    return slow_query_rules


USERS = "{name: slow_users, kind: slow_query, collection: users, threshold: 0ms}"
EVERYWHERE = "{name: slow_any, kind: slow_query, collection: '*', threshold: 0ms}"


async def profile_status(db: Any) -> tuple[int, int]:
    status = await db.command("profile", -1)
    return status["was"], status["slowms"]


@pytest.fixture
async def profiler_reset(db: Any) -> AsyncIterator[None]:
    """Whatever a test does to the profiler, the server's defaults come back."""
    yield
    await db.command("profile", 0, slowms=100, sampleRate=1.0)


@pytest.fixture
async def watcher(db: Any, profiler_reset: None) -> AsyncIterator[ProfilerWatcher]:
    """A watcher for a 0 ms `users` rule, its profiler enabled."""
    await db.users.insert_many([{"_id": i, "user": i, "age": i % 3} for i in range(12)])
    profiler = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=60)
    await profiler.enable()
    yield profiler
    await profiler.restore()


def counts(violations: list[Violation]) -> dict[str, int]:
    return {violation.subject: violation.details["count"] for violation in violations}


class TestProfilerSetting:
    async def test_enable_sets_level_one_at_the_lowest_threshold(
        self, db: Any, profiler_reset: None
    ) -> None:
        rules = make_rules(
            "{name: a, kind: slow_query, collection: users, threshold: 250ms}",
            "{name: b, kind: slow_query, collection: orders, threshold: 40ms}",
        )
        profiler = ProfilerWatcher(db, rules, poll_interval_s=1)

        await profiler.enable()

        assert await profile_status(db) == (1, 40)

    async def test_restore_puts_the_previous_setting_back(
        self, db: Any, profiler_reset: None
    ) -> None:
        await db.command("profile", 1, slowms=250)
        profiler = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=1)

        await profiler.enable()
        assert await profile_status(db) == (1, 0)
        with capture_logs() as logs:
            await profiler.restore()

        assert await profile_status(db) == (1, 250)
        [restored] = [log for log in logs if log["event"] == "profiler_restored"]
        # Not `level`: the log line's own level would overwrite it.
        assert (restored["profiling_level"], restored["slowms"]) == (1, 250)

    async def test_a_run_killed_before_restoring_leaves_the_setting_to_the_next(
        self, db: Any, profiler_reset: None
    ) -> None:
        """The owner's setting survives a crash: it is stored before it changes."""
        await db.command("profile", 0, slowms=250)
        crashed = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=1)
        await crashed.enable()  # and never restored, as after a kill -9
        assert await profile_status(db) == (1, 0)

        next_run = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=1)
        await next_run.enable()
        await next_run.restore()

        assert await profile_status(db) == (0, 250)
        assert await db.streamheal_state.count_documents({}) == 0

    async def test_context_manager_restores_the_level_off(
        self, db: Any, profiler_reset: None
    ) -> None:
        before = await profile_status(db)

        async with ProfilerWatcher(db, make_rules(USERS), poll_interval_s=1):
            assert await profile_status(db) == (1, 0)

        assert before == (0, 100)
        assert await profile_status(db) == before

    async def test_unmanaged_rules_leave_the_profiler_alone(
        self, db: Any, profiler_reset: None
    ) -> None:
        rules = make_rules(
            "{name: s, kind: slow_query, collection: u, manage_profiler: false}"
        )
        profiler = ProfilerWatcher(db, rules, poll_interval_s=1)

        await profiler.enable()
        assert await profile_status(db) == (0, 100)
        await profiler.restore()

        assert await profile_status(db) == (0, 100)

    async def test_full_profiling_is_kept(self, db: Any, profiler_reset: None) -> None:
        await db.command("profile", 2, slowms=100)
        profiler = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=1)

        with capture_logs() as logs:
            await profiler.enable()
            await profiler.restore()

        assert await profile_status(db) == (2, 100)
        assert [log["event"] for log in logs] == ["profiler_kept"]


class TestPollOnce:
    async def test_groups_new_entries_by_shape(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        await db.users.find({"user": {"$gt": 9}}).sort("age", -1).to_list()
        await db.users.find({"user": {"$gt": 3}}).sort("age", -1).to_list()
        await db.users.find({"user": {"$gt": 3}}).sort("age", 1).to_list()
        await db.users.find({"user": 5}).to_list()
        await db.users.find({"user": 6}).to_list()
        await db.users.find({"user": 7}).to_list()
        await db.users.count_documents({"age": 2})
        await db.orders.find({"user": 5}).to_list()

        found = await watcher.poll_once()

        users = f"{db.name}.users"
        assert counts(found) == {
            f'{users} query/find filter={{"user":{{"$gt":"?"}}}} sort={{"age":-1}}': 2,
            f'{users} query/find filter={{"user":{{"$gt":"?"}}}} sort={{"age":1}}': 1,
            f'{users} query/find filter={{"user":"?"}}': 3,
            # pymongo counts with an aggregate: $match, then $group.
            f'{users} command/aggregate filter={{"age":"?"}}': 1,
        }

    async def test_reports_only_shapes_with_new_entries(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        await db.users.find({"user": 5}).to_list()
        await db.users.find({"age": 1}).to_list()
        await watcher.poll_once()

        nothing_new = await watcher.poll_once()
        await db.users.find({"user": 8}).to_list()
        one_new = await watcher.poll_once()

        assert nothing_new == []
        assert counts(one_new) == {
            f'{db.name}.users query/find filter={{"user":"?"}}': 2
        }

    async def test_shapes_an_existing_index_serves_are_not_reported(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        await db.users.create_index([("user", 1)])
        await db.users.find({"user": 5}).to_list()
        await db.users.find({"age": 1}).to_list()

        found = await watcher.poll_once()

        assert counts(found) == {f'{db.name}.users query/find filter={{"age":"?"}}': 1}

    async def test_ignores_its_own_commands(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        await db.users.find({"user": 5}, comment="streamheal").to_list()
        await db.users.find({"user": 5}, comment="the application").to_list()

        found = await watcher.poll_once()

        assert counts(found) == {f'{db.name}.users query/find filter={{"user":"?"}}': 1}

    async def test_each_rule_counts_its_own_collections(
        self, db: Any, profiler_reset: None
    ) -> None:
        profiler = ProfilerWatcher(db, make_rules(USERS, EVERYWHERE), poll_interval_s=1)
        await profiler.enable()
        await db.users.find({"a": 1}).to_list()
        await db.orders.find({"a": 1}).to_list()

        found = await profiler.poll_once()
        await profiler.restore()

        assert sorted((v.rule, v.collection) for v in found) == [
            ("slow_any", "orders"),
            ("slow_any", "users"),
            ("slow_users", "users"),
        ]

    async def test_statistics_are_bounded_oldest_dropped(
        self, db: Any, profiler_reset: None
    ) -> None:
        profiler = ProfilerWatcher(
            db, make_rules(USERS), poll_interval_s=1, max_shapes=2
        )
        await profiler.enable()
        await db.users.find({"a": 1}).to_list()
        await db.users.find({"b": 1}).to_list()
        await db.users.find({"c": 1}).to_list()
        await profiler.poll_once()

        await db.users.find({"a": 1}).to_list()
        await db.users.find({"c": 1}).to_list()
        found = await profiler.poll_once()
        await profiler.restore()

        users = f"{db.name}.users query/find"
        # `a` was dropped to make room for `c`, so its count starts again.
        assert counts(found) == {
            f'{users} filter={{"a":"?"}}': 1,
            f'{users} filter={{"c":"?"}}': 2,
        }


class TestRun:
    async def test_reports_with_the_profiler_source_until_stopped(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        await db.users.find({"user": 5}).to_list()
        stop = asyncio.Event()
        reports: list[tuple[list[Violation], str]] = []

        async def report(violations: list[Violation], source: str) -> None:
            reports.append((violations, source))
            stop.set()

        await asyncio.wait_for(watcher.run(report, stop), WAIT_S)

        assert [(counts(found), source) for found, source in reports] == [
            ({f'{db.name}.users query/find filter={{"user":"?"}}': 1}, "profiler")
        ]

    async def test_a_failed_read_is_logged_and_the_loop_goes_on(
        self, db: Any, profiler_reset: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        profiler = ProfilerWatcher(db, make_rules(USERS), poll_interval_s=0)
        outcomes: list[Any] = [RuntimeError("profile unreadable"), ["a violation"]]

        async def poll_once() -> Any:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        monkeypatch.setattr(profiler, "poll_once", poll_once)
        stop = asyncio.Event()
        reported: list[Any] = []

        async def report(violations: list[Violation], source: str) -> None:
            reported.append(violations)
            stop.set()

        with capture_logs() as logs:
            await asyncio.wait_for(profiler.run(report, stop), WAIT_S)

        assert reported == [["a violation"]]
        failures = [log for log in logs if log["event"] == "profile_read_failed"]
        assert [(log["log_level"], log["error"]) for log in failures] == [
            ("warning", "profile unreadable")
        ]

    async def test_cancellation_goes_through(
        self, db: Any, watcher: ProfilerWatcher
    ) -> None:
        """Cancelled while waiting for the next poll, `run` ends with the cancel."""
        await db.users.find({"user": 5}).to_list()
        stop = asyncio.Event()
        reported = asyncio.Event()

        async def report(violations: list[Violation], source: str) -> None:
            reported.set()

        task = asyncio.create_task(watcher.run(report, stop))
        await asyncio.wait_for(reported.wait(), WAIT_S)
        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)
