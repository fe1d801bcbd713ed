"""The `slow_query` rule: its spec, profile statistics, sweeps and fixes."""

from __future__ import annotations

from typing import Any

import pytest

from streamheal.config import parse_settings
from streamheal.errors import FixError, RuleFileError
from streamheal.rules import Operation
from streamheal.rules.slow_query import ShapeStats, SlowQueryRule
from tests.helpers import find_entry


def make_rule(body: str) -> SlowQueryRule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    rule = settings.build_rules()[0]
    assert isinstance(rule, SlowQueryRule)
    return rule


RULE = """
  - name: slow_users
    kind: slow_query
    collection: users
    threshold: 0ms
"""


class TestSpec:
    def test_defaults_follow_the_issue(self) -> None:
        rule = make_rule("  - {name: s, kind: slow_query, collection: users}\n")

        assert rule.spec.threshold == 0.1
        assert rule.threshold_ms == 100
        assert rule.slowms == 100
        assert rule.spec.manage_profiler is True
        assert rule.spec.fix == "recommend"
        assert rule.severity.value == "low"
        assert rule.checks_writes is False
        assert rule.watched_collections() == frozenset()

    def test_threshold_takes_a_duration(self) -> None:
        rule = make_rule(
            "  - {name: s, kind: slow_query, collection: '*', threshold: 1.5ms}\n"
        )

        assert rule.threshold_ms == 1.5
        assert rule.slowms == 1

    def test_unknown_fix_is_a_rule_file_error(self) -> None:
        with pytest.raises(RuleFileError) as caught:
            make_rule("  - {name: s, kind: slow_query, collection: u, fix: drop}\n")

        assert [problem.field for problem in caught.value.problems] == ["rules[0].fix"]


def test_shape_stats_sum_what_the_profiler_gives() -> None:
    stats = ShapeStats()
    stats.add({"millis": 10, "docsExamined": 5})
    stats.add({"millis": 20, "docsExamined": 7, "nreturned": 1})
    stats.add({"millis": 40})

    assert (stats.count, stats.mean_ms, stats.max_ms) == (3, 23.3, 40.0)
    assert (stats.docs_examined, stats.returned) == (12, 1)


class TestShapeFor:
    def test_threshold_and_collection_decide(self) -> None:
        rule = make_rule(
            "  - {name: s, kind: slow_query, collection: users, threshold: 5ms}\n"
        )
        orders = {"op": "query", "ns": "shop.orders", "command": {"find": "orders"}}

        assert rule.shape_for({**find_entry({"a": 1}), "millis": 5}) is not None
        assert rule.shape_for({**find_entry({"a": 1}), "millis": 4}) is None
        assert rule.shape_for({**orders, "millis": 50}) is None

    def test_star_counts_every_collection(self) -> None:
        rule = make_rule("  - {name: s, kind: slow_query, collection: '*'}\n")
        orders = {"op": "query", "ns": "shop.orders", "command": {"find": "orders"}}

        found = rule.shape_for({**orders, "millis": 100})

        assert found is not None and found.collection == "orders"


async def run_finds(db: Any) -> None:
    await db.users.find({"user": {"$gt": 9}}).sort("age", -1).to_list()
    await db.users.find({"user": {"$gt": 3}}).sort("age", -1).to_list()
    await db.users.find({"user": 4}, comment="streamheal").to_list()


async def test_sweep_groups_the_profile_by_shape(db: Any, profiling: None) -> None:
    await db.users.insert_many([{"_id": i, "user": i, "age": i % 3} for i in range(12)])
    await run_finds(db)
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(db)]

    subject = f'{db.name}.users query/find filter={{"user":{{"$gt":"?"}}}}'
    assert [(v.subject, v.details["count"]) for v in found] == [
        (f'{subject} sort={{"age":-1}}', 2)
    ]
    violation = found[0]
    assert violation.collection == "users"
    assert violation.documents == ()
    assert violation.key == {
        "ns": f"{db.name}.users",
        "op": "query",
        "command": "find",
        "filter": {"user": {"$gt": "?"}},
        "sort": {"age": -1},
    }
    assert violation.details["recommended_index"] == [["age", -1], ["user", 1]]
    # SecantusDB 0.7.0b3 profiles only millis and command: docsExamined and
    # nreturned are absent, so their sums stay None (MongoDB would give them).
    assert violation.details["docs_examined"] is None
    assert violation.details["returned"] is None


async def test_recheck_holds_while_the_profile_has_the_shape(
    db: Any, profiling: None
) -> None:
    await db.users.insert_many([{"_id": 1, "user": 1, "age": 1}])
    await run_finds(db)
    rule = make_rule(RULE)
    [violation] = [v async for v in rule.sweep(db)]

    assert await rule.recheck(db, violation) == violation

    await db.command("profile", 0)
    await db.drop_collection("system.profile")
    assert await rule.recheck(db, violation) is None


async def test_create_index_plan_names_the_keys(db: Any, profiling: None) -> None:
    await db.users.insert_many([{"_id": 1, "user": 1, "age": 1}])
    await run_finds(db)
    rule = make_rule(RULE + "    fix: create_index\n")
    [violation] = [v async for v in rule.sweep(db)]

    plan = await rule.plan_fix(db, violation)

    assert plan.action == "create_index"
    assert plan.operations == (
        Operation("create_index", "users", index_keys=(("age", -1), ("user", 1))),
    )
    assert plan.summary == 'create index {"age":-1,"user":1} on users'
    assert plan.changes_data is True


async def test_recommend_plan_changes_nothing(db: Any, profiling: None) -> None:
    await db.users.insert_many([{"_id": 1, "user": 1, "age": 1}])
    await run_finds(db)
    rule = make_rule(RULE)
    [violation] = [v async for v in rule.sweep(db)]

    plan = await rule.plan_fix(db, violation)

    assert plan.operations == (
        Operation("recommend", "users", index_keys=(("age", -1), ("user", 1))),
    )
    assert plan.changes_data is False


async def test_no_index_is_planned_when_one_covers_it(db: Any, profiling: None) -> None:
    await db.users.insert_many([{"_id": 1, "user": 1, "age": 1}])
    await run_finds(db)
    rule = make_rule(RULE + "    fix: create_index\n")
    [violation] = [v async for v in rule.sweep(db)]
    # Built after the sweep saw the shape: the plan is the last to look.
    # Walked backwards, this index serves the descending sort on age.
    await db.users.create_index([("age", 1), ("user", 1), ("name", 1)], name="by_age")

    with pytest.raises(FixError, match="Index 'by_age' of collection users already"):
        await rule.plan_fix(db, violation)


async def test_a_shape_an_index_serves_is_no_longer_a_violation(
    db: Any, profiling: None
) -> None:
    await db.users.insert_many([{"_id": 1, "user": 1, "age": 1}])
    await db.users.find({"user": 1, "age": 1}).to_list()
    await db.users.find({"user": 2, "age": 3}).to_list()
    rule = make_rule(RULE)
    [violation] = [v async for v in rule.sweep(db)]
    assert violation.details["recommended_index"] == [["age", 1], ["user", 1]]
    assert violation.details["equality_fields"] == 2

    # The same two equality fields, in the other order: the server uses it.
    await db.users.create_index([("user", 1), ("age", 1)], name="by_user_age")

    assert [v async for v in rule.sweep(db)] == []
    assert await rule.recheck(db, violation) is None


async def test_a_shape_no_index_serves_is_not_planned(db: Any, profiling: None) -> None:
    await db.users.insert_one({"_id": 1})
    await db.users.find({}).to_list()
    rule = make_rule(RULE + "    fix: create_index\n")
    [violation] = [v async for v in rule.sweep(db)]

    with pytest.raises(FixError, match="No index can serve"):
        await rule.plan_fix(db, violation)
