"""The `unique` rule on both paths, its recheck and its fix plans, on a real server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from streamheal.config import parse_settings
from streamheal.errors import FixError, RuleFileError
from streamheal.rules import Operation, Rule, Write


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


RULE = """
  - name: one_account_per_email
    kind: unique
    collection: users
    keys: [email]
"""

USERS = [
    {"_id": 1, "email": "a@x"},
    {"_id": 2, "email": "A@x "},
    {"_id": 3, "email": "a@x"},
    {"_id": 4, "email": "b@x"},
    {"_id": 5},
    {"_id": 6},
    {"_id": 7, "email": None},
]


async def swept(rule: Rule, db: Any) -> dict[str, tuple[Any, ...]]:
    return {v.subject: v.documents async for v in rule.sweep(db)}


class TestSweep:
    async def test_groups_equal_keys_oldest_first(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)

        found = [v async for v in rule.sweep(db)]

        assert [(v.subject, v.documents, v.key) for v in found] == [
            ('{"k0":"a@x"}', (1, 3), {"email": "a@x"})
        ]
        assert found[0].description == '2 documents share email="a@x"'
        assert found[0].severity.value == "high"

    async def test_normalization_folds_case_and_spaces(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE + "    normalize: [lowercase, trim]\n")

        assert await swept(rule, db) == {'{"k0":"a@x"}': (1, 2, 3)}

    async def test_normalization_leaves_other_types_alone(self, db: Any) -> None:
        await db.users.insert_many(
            [{"_id": 1, "email": 5}, {"_id": 2, "email": 5}, {"_id": 3, "email": "5"}]
        )
        rule = make_rule(RULE + "    normalize: [lowercase]\n")

        assert await swept(rule, db) == {'{"k0":5}': (1, 2)}

    async def test_documents_missing_every_key_are_not_duplicates(
        self, db: Any
    ) -> None:
        await db.users.insert_many([{"_id": 1}, {"_id": 2, "email": None}, {"_id": 3}])
        rule = make_rule(RULE)

        assert await swept(rule, db) == {}

    async def test_compound_key_treats_absent_and_null_alike(self, db: Any) -> None:
        await db.people.insert_many(
            [
                {"_id": 1, "name": "n", "address": {"city": "c"}},
                {"_id": 2, "name": "n", "address": {"city": "c"}},
                {"_id": 3, "name": "n"},
                {"_id": 4, "name": "n", "address": {"city": None}},
                {"_id": 5, "name": "m", "address": {"city": "c"}},
            ]
        )
        rule = make_rule(
            """
  - name: one_person_per_city
    kind: unique
    collection: people
    keys: [name, address.city]
"""
        )

        found = [v async for v in rule.sweep(db)]

        assert {v.subject: v.documents for v in found} == {
            '{"k0":"n","k1":"c"}': (1, 2),
            '{"k0":"n","k1":null}': (3, 4),
        }
        assert sorted(
            [v.key for v in found], key=lambda key: str(key["address.city"])
        ) == [
            {"name": "n", "address.city": None},
            {"name": "n", "address.city": "c"},
        ]

    @pytest.mark.parametrize(
        ("keep", "expected"),
        [
            ("oldest", (1, 2, 3)),
            ("newest", (3, 2, 1)),
            ("{first_by: created}", (2, 3, 1)),
        ],
    )
    async def test_keep_order_puts_the_kept_document_first(
        self, db: Any, keep: str, expected: tuple[int, ...]
    ) -> None:
        await db.users.insert_many(
            [
                {"_id": 1, "email": "a", "created": 30},
                {"_id": 2, "email": "a", "created": 10},
                {"_id": 3, "email": "a", "created": 10},
            ]
        )
        rule = make_rule(RULE + f"    keep: {keep}\n")

        assert await swept(rule, db) == {'{"k0":"a"}': expected}


class TestCheckWrites:
    async def test_a_written_duplicate_reports_its_whole_group(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)

        found = await rule.check_writes(db, [Write("users", "insert", 3)])

        assert [(v.subject, v.documents) for v in found] == [('{"k0":"a@x"}', (1, 3))]

    async def test_unique_and_keyless_writes_report_nothing(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        writes = [Write("users", "insert", 4), Write("users", "insert", 5)]

        assert await rule.check_writes(db, writes) == []

    async def test_normalized_check_finds_the_folded_group(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE + "    normalize: [trim, lowercase]\n")

        found = await rule.check_writes(db, [Write("users", "update", 2)])

        assert [(v.subject, v.documents) for v in found] == [
            ('{"k0":"a@x"}', (1, 2, 3))
        ]

    def test_a_key_through_an_array_narrows_to_every_possible_member(self) -> None:
        """On MongoDB `$sku.code` of `{sku: [{code: 1}, {code: 2}]}` is `[1, 2]`,
        which the query `{"sku.code": [1, 2]}` does not match; the narrowing
        must also take the documents where a prefix of the path is an array.

        Shown on the filter, not on data: SecantusDB 0.7.0b3 evaluates a field
        path through an array as missing, so there both paths see null."""
        rule = make_rule(
            "  - {name: u, kind: unique, collection: items, keys: [sku.code, n]}\n"
        )

        [_, narrowing, *_] = rule.pipeline([{"k0": [1, 2], "k1": 5}])

        assert narrowing == {
            "$match": {
                "$or": [
                    {
                        "$and": [
                            {
                                "$or": [
                                    {"sku.code": {"$eq": [1, 2]}},
                                    {"sku": {"$type": "array"}},
                                ]
                            },
                            {"n": {"$eq": 5}},
                        ]
                    }
                ]
            }
        }

    async def test_writes_elsewhere_and_deletes_are_not_checked(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        writes = [Write("users", "delete", 1), Write("orders", "insert", 3)]

        assert await rule.check_writes(db, writes) == []

    async def test_a_delete_of_a_member_touches_the_violation(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        [violation] = [v async for v in rule.sweep(db)]

        assert rule.is_touched_by(violation, [Write("users", "delete", 3)])
        assert not rule.is_touched_by(violation, [Write("users", "delete", 4)])


class TestRecheck:
    async def test_the_group_as_it_is_now(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        [violation] = [v async for v in rule.sweep(db)]
        await db.users.insert_one({"_id": 8, "email": "a@x"})

        current = await rule.recheck(db, violation)

        assert current is not None
        assert (current.id, current.documents) == (violation.id, (1, 3, 8))

    async def test_a_group_of_one_no_longer_holds(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        [violation] = [v async for v in rule.sweep(db)]
        await db.users.update_one({"_id": 3}, {"$set": {"email": "c@x"}})

        assert await rule.recheck(db, violation) is None


class TestPlanFix:
    async def test_delete_keeps_the_first_and_deletes_the_rest(self, db: Any) -> None:
        await db.users.insert_many([*USERS, {"_id": 8, "email": "a@x", "n": 1}])
        rule = make_rule(RULE + "    keep: newest\n")
        [violation] = [v async for v in rule.sweep(db)]

        plan = await rule.plan_fix(db, violation)

        assert plan.action == "delete"
        assert plan.operations == (
            Operation("delete", "users", 3, before={"_id": 3, "email": "a@x"}),
            Operation("delete", "users", 1, before={"_id": 1, "email": "a@x"}),
        )
        assert plan.summary == "keep 8, delete 2"
        assert plan.documents_touched == 2

    async def test_archive_moves_the_rest_into_duplicates(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE + "    fix: archive\n")
        [violation] = [v async for v in rule.sweep(db)]
        started = dt.datetime.now(dt.UTC)

        plan = await rule.plan_fix(db, violation)

        insert, delete = plan.operations
        assert insert.after is not None
        metadata = dict(insert.after["_streamheal"])
        moved_at = metadata.pop("moved_at")
        assert started <= moved_at <= dt.datetime.now(dt.UTC)
        assert (insert.action, insert.collection, insert.document_id) == (
            "insert",
            "users_duplicates",
            3,
        )
        assert {k: v for k, v in insert.after.items() if k != "_streamheal"} == {
            "_id": 3,
            "email": "a@x",
        }
        assert metadata == {
            "rule": "one_account_per_email",
            "kind": "unique",
            "violation_id": violation.id,
            "reason": '2 documents share email="a@x"',
            "source_collection": "users",
        }
        assert delete == Operation(
            "delete", "users", 3, before={"_id": 3, "email": "a@x"}
        )
        assert plan.summary == "keep 1, move 1 to users_duplicates"

    async def test_a_resolved_group_cannot_be_planned(self, db: Any) -> None:
        await db.users.insert_many(USERS)
        rule = make_rule(RULE)
        [violation] = [v async for v in rule.sweep(db)]
        await db.users.delete_one({"_id": 1})

        with pytest.raises(FixError, match="no longer share"):
            await rule.plan_fix(db, violation)


class TestRuleFile:
    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (
                "    keep: latest\n",
                "<rules>:8: rules[0].keep: expected oldest, newest or "
                "{first_by: <field>}, not 'latest'.",
            ),
            (
                "    normalize: [upper]\n",
                "<rules>:8: rules[0].normalize[0]: expected 'lowercase' or "
                "'trim', not 'upper'.",
            ),
            (
                "    fix: merge\n",
                "<rules>:8: rules[0].fix: expected 'delete' or 'archive', not 'merge'.",
            ),
        ],
    )
    def test_mistakes_are_named_with_their_line(self, extra: str, message: str) -> None:
        with pytest.raises(RuleFileError) as caught:
            make_rule(RULE + extra)

        assert [str(problem) for problem in caught.value.problems] == [message]

    def test_a_key_listed_twice_is_refused(self) -> None:
        with pytest.raises(RuleFileError) as caught:
            make_rule(RULE.replace("[email]", "[email, email]"))

        assert [str(p) for p in caught.value.problems] == [
            "<rules>:7: rules[0].keys: email is listed more than once."
        ]

    def test_describes_itself_and_its_fix(self) -> None:
        rule = make_rule(RULE + "    keep: {first_by: created}\n    fix: archive\n")

        assert rule.describe() == "no two users documents may share email"
        assert rule.describe_fix() == (
            "keep the first by created document, move the others to users_duplicates"
        )
