"""The `type` rule on both paths, its conversions and fix plans, on a real server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from streamheal.config import parse_settings
from streamheal.errors import FixError, RuleFileError
from streamheal.rules import Operation, Rule, Write
from streamheal.rules.type import convert_value


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


RULE = """
  - name: whole_quantities
    kind: type
    collection: items
    field: qty
    types: [int, long]
"""

ITEMS = [
    {"_id": 1, "qty": 5},
    {"_id": 2, "qty": "42"},
    {"_id": 3, "qty": 4.5},
    {"_id": 4, "qty": None},
    {"_id": 5},
    {"_id": 6, "qty": [1]},
    {"_id": 7, "qty": Int64(7)},
]


@pytest.fixture
async def items(db: Any) -> Any:
    await db.items.insert_many(ITEMS)
    return db


async def test_sweep_judges_the_type_of_the_whole_value(items: Any) -> None:
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(items)]

    assert {v.documents[0]: v.key for v in found} == {2: "42", 3: 4.5, 6: [1]}
    assert {v.documents[0]: v.description for v in found} == {
        2: 'qty is "42" (string); it must be of type int or long',
        3: "qty is 4.5 (double); it must be of type int or long",
        6: "qty is [1] (array); it must be of type int or long",
    }


async def test_number_stands_for_every_numeric_type(items: Any) -> None:
    rule = make_rule(RULE.replace("[int, long]", "[number]"))

    assert {v.documents[0] async for v in rule.sweep(items)} == {2, 6}


async def test_check_writes_judges_only_the_written_documents(items: Any) -> None:
    rule = make_rule(RULE)
    writes = [Write("items", "update", i) for i in (1, 3, 5, 7)]

    found = await rule.check_writes(items, writes)

    assert [v.documents for v in found] == [(3,)]


async def test_recheck_sees_the_value_as_it_is_now(items: Any) -> None:
    rule = make_rule(RULE)
    [violation] = await rule.check_writes(items, [Write("items", "insert", 2)])
    await items.items.update_one({"_id": 2}, {"$set": {"qty": 42}})

    assert await rule.recheck(items, violation) is None


async def test_convert_plans_the_lossless_conversion(items: Any) -> None:
    rule = make_rule(RULE + "    fix: convert\n")
    [violation] = await rule.check_writes(items, [Write("items", "insert", 2)])

    plan = await rule.plan_fix(items, violation)

    assert plan.operations == (
        Operation(
            "replace",
            "items",
            2,
            before={"_id": 2, "qty": "42"},
            after={"_id": 2, "qty": 42},
        ),
    )
    assert plan.summary == 'convert qty "42" to int 42'


async def test_convert_refuses_a_lossy_conversion(items: Any) -> None:
    rule = make_rule(RULE + "    fix: convert\n")
    [violation] = await rule.check_writes(items, [Write("items", "insert", 3)])

    with pytest.raises(FixError) as caught:
        await rule.plan_fix(items, violation)

    assert str(caught.value) == (
        "qty 4.5 of document 3 in items cannot be converted to int or long "
        "without loss; quarantine it or fix it by hand."
    )


async def test_set_default_and_quarantine_plans(items: Any) -> None:
    defaulting = make_rule(RULE + "    fix: set_default\n    default: 0\n")
    quarantining = make_rule(RULE)
    [violation] = await defaulting.check_writes(items, [Write("items", "insert", 6)])

    defaulted = await defaulting.plan_fix(items, violation)
    quarantined = await quarantining.plan_fix(items, violation)

    assert defaulted.operations == (
        Operation(
            "replace",
            "items",
            6,
            before={"_id": 6, "qty": [1]},
            after={"_id": 6, "qty": 0},
        ),
    )
    assert [
        (op.action, op.collection, op.document_id) for op in quarantined.operations
    ] == [
        ("insert", "items_quarantine", 6),
        ("delete", "items", 6),
    ]


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [
        ("42", "int", 42),
        ("-42", "int", -42),
        ("42", "long", Int64(42)),
        ("2147483648", "int", None),
        ("2147483648", "long", Int64(2147483648)),
        (" 42", "int", None),
        ("42\n", "int", None),
        ("4.5", "int", None),
        ("4.5", "double", 4.5),
        ("0.1", "double", 0.1),
        ("0.10000000000000000001", "double", None),
        ("1e400", "double", None),
        ("true", "bool", True),
        ("false", "bool", False),
        ("True", "bool", None),
        (42, "string", "42"),
        (Int64(42), "string", "42"),
        (True, "string", None),
        (4.5, "string", None),
        ("1.50", "decimal", Decimal128("1.50")),
        ("1." + "1" * 40, "decimal", None),
        ("abc", "decimal", None),
    ],
)
def test_convert_value_only_when_nothing_is_lost(
    value: Any, target: str, expected: Any
) -> None:
    converted = convert_value(value, target)

    assert (type(converted), converted) == (type(expected), expected)


def test_unknown_type_names_are_refused() -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE.replace("[int, long]", "[integer, int]"))

    [problem] = caught.value.problems
    assert str(problem).startswith(
        "<rules>:8: rules[0].types: unknown BSON type 'integer'; expected names as "
        "$type takes them: double, string, object, array, binData, objectId, bool, "
    )


def test_describes_itself_and_its_fix() -> None:
    rule = make_rule(RULE + "    fix: convert\n")

    assert rule.describe() == "items.qty must be of type int or long"
    assert rule.describe_fix() == "convert qty to int or long"


@pytest.mark.parametrize(
    ("types", "default", "message"),
    [
        (
            "[int, long]",
            "'42'",
            "<rules>:10: rules[0].default: "
            'the default "42" is stored as string, so it would '
            "still violate the rule; it must be of type int or long.",
        ),
        # A boolean is its own BSON type, though Python counts it as an int.
        (
            "[int, long]",
            "true",
            "<rules>:10: rules[0].default: "
            "the default true is stored as bool, so it would "
            "still violate the rule; it must be of type int or long.",
        ),
        # The driver stores a whole number as int when it fits in 32 bits.
        (
            "[long]",
            "5",
            "<rules>:10: rules[0].default: "
            "the default 5 is stored as int (it fits in 32 "
            "bits), so it would still violate the rule; it must be of type long.",
        ),
        (
            "[int]",
            "2147483648",
            "<rules>:10: rules[0].default: "
            "the default 2147483648 is stored as long (it does "
            "not fit in 32 bits), so it would still violate the rule; it must be of "
            "type int.",
        ),
        (
            "[int, long]",
            "9223372036854775808",
            "<rules>:4: rules[0]: the default 9223372036854775808 cannot be stored "
            "in MongoDB; it must be of type int or long.",
        ),
        (
            "[int, long]",
            "4.0",
            "<rules>:10: rules[0].default: "
            "the default 4.0 is stored as double, so it would "
            "still violate the rule; it must be of type int or long.",
        ),
        (
            "[string]",
            "{a: 1}",
            "<rules>:10: rules[0].default: "
            'the default {"a":1} is stored as object, so it '
            "would still violate the rule; it must be of type string.",
        ),
        # `type` judges the whole value: a list is an array, whatever it holds.
        (
            "[int, long]",
            "[1]",
            "<rules>:10: rules[0].default: "
            "the default [1] is stored as array, so it would "
            "still violate the rule; it must be of type int or long.",
        ),
        (
            "[string]",
            "2024-01-01",
            "<rules>:10: rules[0].default: "
            'the default {"$date":"2024-01-01T00:00:00Z"} is '
            "stored as date, so it would still violate the rule; it must be of type "
            "string.",
        ),
    ],
)
def test_a_default_of_another_type_is_refused(
    types: str, default: str, message: str
) -> None:
    body = RULE.replace("[int, long]", types)

    with pytest.raises(RuleFileError) as caught:
        make_rule(body + f"    fix: set_default\n    default: {default}\n")

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("types", "default", "expected"),
    [
        ("[int]", "-2147483648", -2147483648),
        ("[long]", "2147483648", 2147483648),
        ("[number]", "4.5", 4.5),
        ("[double]", ".inf", float("inf")),
        ("[bool]", "false", False),
        ("[string]", "''", ""),
        ("[object]", "{a: [1]}", {"a": [1]}),
        ("[array]", "[]", []),
        ("[date]", "2024-01-01T12:00:00Z", dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)),
        # Null is never judged by `type`, so setting it ends the violation.
        ("[int]", "null", None),
    ],
)
def test_a_default_of_an_accepted_type_loads(
    types: str, default: str, expected: Any
) -> None:
    body = RULE.replace("[int, long]", types)

    rule = make_rule(body + f"    fix: set_default\n    default: {default}\n")

    assert (type(rule.spec.default), rule.spec.default) == (type(expected), expected)


def test_only_a_default_the_fix_sets_is_judged() -> None:
    rule = make_rule(RULE + "    fix: convert\n    default: 'x'\n")

    assert rule.spec.default == "x"
