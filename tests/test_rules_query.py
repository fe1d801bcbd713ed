"""The `query` rule on both paths, its recheck and its fix plans, on a real server."""

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
  - name: paid_orders_have_totals
    kind: query
    collection: orders
    filter: {status: paid, total: {$lte: 0}}
"""

UPDATE = """    fix: update
    update:
      $set: {status: review, flags.zero: true}
      $unset: {total: ""}
"""

ORDERS = [
    {"_id": 1, "status": "paid", "total": 0},
    {"_id": 2, "status": "paid", "total": 5},
    {"_id": 3, "status": "new", "total": 0},
    {"_id": 4, "status": "paid", "total": -2, "flags": {"late": True}},
]


@pytest.fixture
async def orders(db: Any) -> Any:
    await db.orders.insert_many(ORDERS)
    return db


async def test_sweep_finds_documents_matching_the_filter(orders: Any) -> None:
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(orders)]

    assert [v.documents for v in found] == [(1,), (4,)]
    assert found[0].key == {"status": "paid", "total": {"$lte": 0}}
    assert found[0].description == 'matches {"status":"paid","total":{"$lte":0}}'


async def test_check_writes_and_recheck(orders: Any) -> None:
    rule = make_rule(RULE)
    writes = [Write("orders", "insert", i) for i in (1, 2, 3)]

    [violation] = await rule.check_writes(orders, writes)
    await orders.orders.update_one({"_id": 1}, {"$set": {"total": 10}})

    assert violation.documents == (1,)
    assert await rule.recheck(orders, violation) is None


async def test_update_is_applied_to_a_copy_of_the_document(orders: Any) -> None:
    rule = make_rule(RULE + UPDATE)
    [violation] = await rule.check_writes(orders, [Write("orders", "insert", 4)])

    plan = await rule.plan_fix(orders, violation)

    assert plan.operations == (
        Operation(
            "replace",
            "orders",
            4,
            before={"_id": 4, "status": "paid", "total": -2, "flags": {"late": True}},
            after={"_id": 4, "status": "review", "flags": {"late": True, "zero": True}},
        ),
    )


async def test_update_through_a_scalar_is_refused(orders: Any) -> None:
    await orders.orders.insert_one({"_id": 5, "status": "paid", "total": 0, "flags": 1})
    rule = make_rule(RULE + UPDATE)
    [violation] = await rule.check_writes(orders, [Write("orders", "insert", 5)])

    with pytest.raises(FixError, match="flags is not a sub-document"):
        await rule.plan_fix(orders, violation)


async def test_archive_and_delete_plans(orders: Any) -> None:
    archiving = make_rule(RULE)
    deleting = make_rule(RULE + "    fix: delete\n")
    [violation] = await archiving.check_writes(orders, [Write("orders", "insert", 1)])
    started = dt.datetime.now(dt.UTC)

    archived = await archiving.plan_fix(orders, violation)
    deleted = await deleting.plan_fix(orders, violation)

    before = {"_id": 1, "status": "paid", "total": 0}
    insert, delete = archived.operations
    assert insert.after is not None
    metadata = dict(insert.after["_streamheal"])
    assert started <= metadata.pop("moved_at") <= dt.datetime.now(dt.UTC)
    assert (
        insert.collection,
        {k: v for k, v in insert.after.items() if k != "_streamheal"},
    ) == (
        "orders_archived",
        before,
    )
    assert metadata["source_collection"] == "orders"
    assert delete == Operation("delete", "orders", 1, before=before)
    assert deleted.operations == (Operation("delete", "orders", 1, before=before),)


@pytest.mark.parametrize(
    ("fix", "line", "message"),
    [
        # No `update` line: the rule's own line.
        (
            "    fix: update\n",
            4,
            "fix: update needs an `update` with $set and/or $unset.",
        ),
        (
            "    fix: update\n    update: {$inc: {total: 1}}\n",
            9,
            "update may only use $set and $unset, not $inc.",
        ),
        (
            "    fix: update\n    update: {$set: {_id: 2}}\n",
            9,
            "update cannot change _id.",
        ),
        (
            "    fix: update\n    update: {$set: {a: 1, a.b: 2}}\n",
            9,
            "update changes a and a.b; MongoDB refuses overlapping paths in one "
            "update.",
        ),
        (
            "    fix: update\n    update: {$set: {items.0.qty: 1}}\n",
            9,
            "update paths must name fields of sub-documents; items.0.qty uses an "
            "array index, a positional operator or an empty part.",
        ),
        (
            "    fix: update\n    update: {$set: {a: 1}, $unset: {a: ''}}\n",
            9,
            "update changes a twice; MongoDB refuses overlapping paths in one update.",
        ),
        ("    update: {$set: {a: 1}}\n", 8, "`update` is only used with fix: update."),
    ],
)
def test_update_is_validated(fix: str, line: int, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE + fix)

    assert [str(p) for p in caught.value.problems] == [
        f"<rules>:{line}: rules[0].update: {message}"
    ]


def test_describes_itself_and_its_fix() -> None:
    rule = make_rule(RULE)

    assert rule.describe() == (
        'orders documents must not match {"status":"paid","total":{"$lte":0}}'
    )
    assert rule.describe_fix() == "move the document to orders_archived"
