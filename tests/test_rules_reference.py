"""The `reference` rule from both sides of the reference, on a real server.

SecantusDB 0.7.0b3 differs from MongoDB here: `{"$project": {"x": "$arr.f"}}`
over an array of sub-documents yields nothing, where MongoDB yields the array
of the `f` values. The rule reads the `$lookup` results with `$$this.value`
inside `$reduce` instead, which both servers evaluate alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from streamheal.config import parse_settings
from streamheal.errors import RuleFileError
from streamheal.rules import Operation, Rule, Write


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


BY_ID = """
  - name: orders_have_users
    kind: reference
    collection: orders
    field: user_id
    references: users
"""

BY_CODE = """
  - name: orders_have_codes
    kind: reference
    collection: orders
    field: code
    references: users.code
"""

USERS = [{"_id": 1}, {"_id": 2, "code": "a"}, {"_id": 3, "code": ["b", "c"]}]
ORDERS = [
    {"_id": 10, "user_id": 1},
    {"_id": 11, "user_id": 9},
    {"_id": 12, "user_id": None},
    {"_id": 13},
    {"_id": 14, "user_id": [1, 7, None, 8]},
    {"_id": 15, "user_id": []},
    {"_id": 20, "code": "a"},
    {"_id": 21, "code": "b"},
    {"_id": 22, "code": "z"},
]


@pytest.fixture
async def shop(db: Any) -> Any:
    await db.users.insert_many(USERS)
    await db.orders.insert_many(ORDERS)
    return db


async def swept(rule: Rule, db: Any) -> dict[Any, Any]:
    return {v.documents[0]: v.key async for v in rule.sweep(db)}


class TestSweep:
    async def test_finds_scalars_and_array_elements_that_match_nothing(
        self, shop: Any
    ) -> None:
        rule = make_rule(BY_ID)

        found = [v async for v in rule.sweep(shop)]

        assert {v.documents[0]: v.key for v in found} == {11: 9, 14: [7, 8]}
        assert {v.documents[0]: v.description for v in found} == {
            11: "user_id 9 matches no users._id",
            14: "user_id [7,8] matches no users._id",
        }
        assert {v.severity.value for v in found} == {"high"}

    async def test_a_parent_field_holding_an_array_matches_each_value(
        self, shop: Any
    ) -> None:
        rule = make_rule(BY_CODE)

        assert await swept(rule, shop) == {22: "z"}

    async def test_watches_both_collections(self) -> None:
        assert make_rule(BY_ID).watched_collections() == {"orders", "users"}


class TestCheckWrites:
    async def test_written_children_are_checked(self, shop: Any) -> None:
        rule = make_rule(BY_ID)
        writes = [Write("orders", "insert", i) for i in (10, 11, 12, 13, 14, 15)]

        found = await rule.check_writes(shop, writes)

        assert {v.documents[0]: v.key for v in found} == {11: 9, 14: [7, 8]}

    async def test_deleting_a_parent_orphans_its_children(self, shop: Any) -> None:
        rule = make_rule(BY_ID)
        await shop.users.delete_one({"_id": 1})

        found = await rule.check_writes(shop, [Write("users", "delete", 1)])

        assert {v.documents[0]: v.key for v in found} == {10: 1, 14: [1, 7, 8]}

    async def test_changing_a_referenced_field_uses_the_pre_image(
        self, shop: Any
    ) -> None:
        rule = make_rule(BY_CODE)
        await shop.users.update_one({"_id": 2}, {"$set": {"code": "q"}})
        write = Write(
            "users", "update", 2, frozenset({"code"}), before={"_id": 2, "code": "a"}
        )

        found = await rule.check_writes(shop, [write])

        assert {v.documents[0]: v.key for v in found} == {20: "a"}

    async def test_an_update_of_other_fields_checks_nothing(self, shop: Any) -> None:
        rule = make_rule(BY_CODE)
        await shop.users.delete_one({"_id": 2})
        write = Write("users", "update", 3, frozenset({"name"}))

        assert await rule.check_writes(shop, [write]) == []

    async def test_without_a_pre_image_the_whole_rule_is_swept(self, shop: Any) -> None:
        rule = make_rule(BY_CODE)
        await shop.users.replace_one({"_id": 2}, {"_id": 2, "code": "r"})

        found = await rule.check_writes(shop, [Write("users", "replace", 2)])

        assert {v.documents[0]: v.key for v in found} == {20: "a", 22: "z"}

    async def test_a_new_parent_touches_every_open_orphan(self, shop: Any) -> None:
        rule = make_rule(BY_ID)
        violations = [v async for v in rule.sweep(shop)]

        inserted = [Write("users", "insert", 9)]
        deleted = [Write("users", "delete", 2)]
        child = [Write("orders", "update", 11)]

        assert [rule.is_touched_by(v, inserted) for v in violations] == [True, True]
        assert [rule.is_touched_by(v, deleted) for v in violations] == [False, False]
        assert [rule.is_touched_by(v, child) for v in violations] == [True, False]


class TestRecheck:
    async def test_an_orphan_whose_parent_appears_is_resolved(self, shop: Any) -> None:
        rule = make_rule(BY_ID)
        orphans = {v.documents[0]: v async for v in rule.sweep(shop)}
        await shop.users.insert_many([{"_id": 9}, {"_id": 7}])

        assert await rule.recheck(shop, orphans[11]) is None
        current = await rule.recheck(shop, orphans[14])
        assert current is not None
        assert current.key == [8]


class TestPlanFix:
    async def test_archive_moves_the_orphan_with_a_note(self, shop: Any) -> None:
        rule = make_rule(BY_ID)
        orphans = {v.documents[0]: v async for v in rule.sweep(shop)}
        started = dt.datetime.now(dt.UTC)

        plan = await rule.plan_fix(shop, orphans[11])

        insert, delete = plan.operations
        assert insert.after is not None
        metadata = dict(insert.after["_streamheal"])
        assert started <= metadata.pop("moved_at") <= dt.datetime.now(dt.UTC)
        assert metadata == {
            "rule": "orders_have_users",
            "kind": "reference",
            "violation_id": orphans[11].id,
            "reason": "user_id 9 matches no users._id",
            "source_collection": "orders",
        }
        assert (insert.action, insert.collection, insert.document_id) == (
            "insert",
            "orders_orphaned",
            11,
        )
        assert delete == Operation(
            "delete", "orders", 11, before={"_id": 11, "user_id": 9}
        )

    async def test_delete_removes_the_orphan(self, shop: Any) -> None:
        rule = make_rule(BY_ID + "    fix: delete\n")
        orphans = {v.documents[0]: v async for v in rule.sweep(shop)}

        plan = await rule.plan_fix(shop, orphans[11])

        assert plan.operations == (
            Operation("delete", "orders", 11, before={"_id": 11, "user_id": 9}),
        )

    async def test_unset_removes_a_scalar_reference(self, shop: Any) -> None:
        rule = make_rule(BY_ID + "    fix: unset\n")
        orphans = {v.documents[0]: v async for v in rule.sweep(shop)}

        plan = await rule.plan_fix(shop, orphans[11])

        assert plan.operations == (
            Operation(
                "replace",
                "orders",
                11,
                before={"_id": 11, "user_id": 9},
                after={"_id": 11},
            ),
        )

    async def test_unset_keeps_the_good_elements_of_an_array(self, shop: Any) -> None:
        rule = make_rule(BY_ID + "    fix: unset\n")
        orphans = {v.documents[0]: v async for v in rule.sweep(shop)}
        await shop.users.insert_one({"_id": 8})

        plan = await rule.plan_fix(shop, orphans[14])

        # Planned against the data as it is now: 8 exists again by then.
        assert plan.operations == (
            Operation(
                "replace",
                "orders",
                14,
                before={"_id": 14, "user_id": [1, 7, None, 8]},
                after={"_id": 14, "user_id": [1, None, 8]},
            ),
        )
        assert plan.summary == "remove [7] from user_id"

    async def test_unset_tells_true_from_one(self, shop: Any) -> None:
        rule = make_rule(BY_ID + "    fix: unset\n")
        await shop.orders.insert_one({"_id": 16, "user_id": [True, 1]})
        [violation] = await rule.check_writes(shop, [Write("orders", "insert", 16)])

        plan = await rule.plan_fix(shop, violation)

        # In Python True == 1; in MongoDB the boolean matches no users._id.
        assert [op.after for op in plan.operations] == [{"_id": 16, "user_id": [1]}]


class TestRuleFile:
    def test_references_needs_a_collection(self) -> None:
        with pytest.raises(RuleFileError) as caught:
            make_rule(BY_ID.replace("references: users", "references: users."))

        assert [str(p) for p in caught.value.problems] == [
            "<rules>:8: rules[0].references: expected <collection> or "
            "<collection>.<field>, not 'users.'."
        ]

    def test_describes_itself_and_its_fix(self) -> None:
        rule = make_rule(BY_CODE + "    fix: unset\n")

        assert rule.describe() == "orders.code must point at an existing users.code"
        assert rule.describe_fix() == "remove the dangling references from code"
