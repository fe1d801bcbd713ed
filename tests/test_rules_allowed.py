"""The `allowed` rule on both paths, its recheck and its fix plans, on a real server."""

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


RULE = """
  - name: known_statuses
    kind: allowed
    collection: orders
    field: status
    values: [new, paid, $admin]
"""

ORDERS = [
    {"_id": 1, "status": "new"},
    {"_id": 2, "status": "NEW"},
    {"_id": 3},
    {"_id": 4, "status": None},
    {"_id": 5, "status": ["new", "lost", None]},
    {"_id": 6, "status": "$admin"},
    {"_id": 7, "status": 1},
]


@pytest.fixture
async def orders(db: Any) -> Any:
    await db.orders.insert_many(ORDERS)
    return db


async def test_sweep_finds_values_outside_the_list(orders: Any) -> None:
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(orders)]

    # "$admin" is an accepted value, not a field path: it is passed as a literal.
    assert {v.documents[0]: v.key for v in found} == {2: "NEW", 5: ["lost"], 7: 1}
    assert {v.documents[0]: v.description for v in found} == {
        2: 'status is "NEW" (string); it must be one of "new", "paid", "$admin"',
        5: 'status holds ["lost"]; every element must be one of "new", "paid", '
        '"$admin"',
        7: 'status is 1 (int); it must be one of "new", "paid", "$admin"',
    }
    assert {v.severity.value for v in found} == {"medium"}


async def test_check_writes_judges_only_the_written_documents(orders: Any) -> None:
    rule = make_rule(RULE)
    writes = [Write("orders", "insert", i) for i in (1, 2, 3, 4)]

    found = await rule.check_writes(orders, writes)

    assert [(v.documents, v.key) for v in found] == [((2,), "NEW")]


async def test_recheck_sees_the_value_as_it_is_now(orders: Any) -> None:
    rule = make_rule(RULE)
    found = {v.documents[0]: v async for v in rule.sweep(orders)}
    await orders.orders.update_one({"_id": 2}, {"$set": {"status": "new"}})
    await orders.orders.update_one({"_id": 5}, {"$set": {"status": ["gone", "paid"]}})

    assert await rule.recheck(orders, found[2]) is None
    current = await rule.recheck(orders, found[5])
    assert current is not None
    assert current.key == ["gone"]


async def test_quarantine_moves_the_document(orders: Any) -> None:
    rule = make_rule(RULE)
    [violation] = await rule.check_writes(orders, [Write("orders", "insert", 2)])
    started = dt.datetime.now(dt.UTC)

    plan = await rule.plan_fix(orders, violation)

    insert, delete = plan.operations
    assert insert.after is not None
    metadata = dict(insert.after["_streamheal"])
    assert started <= metadata.pop("moved_at") <= dt.datetime.now(dt.UTC)
    assert insert == Operation(
        "insert",
        "orders_quarantine",
        2,
        after={"_id": 2, "status": "NEW", "_streamheal": insert.after["_streamheal"]},
    )
    assert metadata == {
        "rule": "known_statuses",
        "kind": "allowed",
        "violation_id": violation.id,
        "reason": violation.description,
        "source_collection": "orders",
    }
    assert delete == Operation(
        "delete", "orders", 2, before={"_id": 2, "status": "NEW"}
    )


async def test_set_default_replaces_the_value(orders: Any) -> None:
    rule = make_rule(RULE + "    fix: set_default\n    default: new\n")
    [violation] = await rule.check_writes(orders, [Write("orders", "insert", 7)])

    plan = await rule.plan_fix(orders, violation)

    assert plan.operations == (
        Operation(
            "replace",
            "orders",
            7,
            before={"_id": 7, "status": 1},
            after={"_id": 7, "status": "new"},
        ),
    )
    assert rule.describe_fix() == 'set status to "new" in orders'


def test_set_default_needs_a_default() -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE + "    fix: set_default\n")

    assert [str(p) for p in caught.value.problems] == [
        "<rules>:4: rules[0].default: fix: set_default needs a `default` value to set."
    ]


def test_describes_itself() -> None:
    rule = make_rule(RULE)

    assert rule.describe() == 'orders.status must be one of "new", "paid", "$admin"'
    assert rule.describe_fix() == "move the document to orders_quarantine"


@pytest.mark.parametrize(
    ("values", "default", "message"),
    [
        (
            "[new, paid]",
            "zzz",
            "<rules>:10: rules[0].default: "
            'the default "zzz" would still violate the rule; '
            'it must be one of "new", "paid".',
        ),
        (
            "[new, paid]",
            "[new, lost, null, gone]",
            "<rules>:10: rules[0].default: "
            'the default ["new","lost",null,"gone"] holds '
            '"lost", "gone", which would still violate the rule; every element '
            'must be one of "new", "paid".',
        ),
        # MongoDB's $in never finds true equal to 1, though Python does.
        (
            "[1, 2]",
            "true",
            "<rules>:10: rules[0].default: "
            "the default true would still violate the rule; "
            "it must be one of 1, 2.",
        ),
    ],
)
def test_a_default_outside_the_values_is_refused(
    values: str, default: str, message: str
) -> None:
    body = RULE.replace("[new, paid, $admin]", values)

    with pytest.raises(RuleFileError) as caught:
        make_rule(body + f"    fix: set_default\n    default: {default}\n")

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("values", "fix", "default", "expected"),
    [
        ("[new, paid]", "set_default", "paid", "paid"),
        ("[1, 2]", "set_default", "2.0", 2.0),
        ("[new, paid]", "set_default", "[new, null, paid]", ["new", None, "paid"]),
        # Null is never judged by `allowed`, so setting it ends the violation.
        ("[new, paid]", "set_default", "null", None),
        # Only a default the fix sets has to be allowed.
        ("[new, paid]", "quarantine", "zzz", "zzz"),
    ],
)
def test_a_default_the_fix_may_set_loads(
    values: str, fix: str, default: str, expected: Any
) -> None:
    body = RULE.replace("[new, paid, $admin]", values)

    rule = make_rule(body + f"    fix: {fix}\n    default: {default}\n")

    assert rule.spec.default == expected
