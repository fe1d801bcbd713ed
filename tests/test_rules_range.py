"""The `range` rule on both paths, its recheck and its fix plans, on a real server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson.decimal128 import Decimal128

from streamheal._bson import to_json_value
from streamheal.config import parse_settings
from streamheal.errors import RuleFileError
from streamheal.rules import Operation, Rule, Write


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


RULE = """
  - name: sane_prices
    kind: range
    collection: prices
    field: amount
    min: 0
    max: 100
"""

PRICES = [
    {"_id": 1, "amount": 5},
    {"_id": 2, "amount": -1},
    {"_id": 3, "amount": 101},
    {"_id": 4, "amount": "cheap"},
    {"_id": 5, "amount": None},
    {"_id": 6, "amount": [5, 200, -3]},
    {"_id": 7, "amount": 100.0},
    {"_id": 8, "amount": Decimal128("100.5")},
    {"_id": 9},
]


@pytest.fixture
async def prices(db: Any) -> Any:
    await db.prices.insert_many(PRICES)
    return db


async def test_sweep_finds_numbers_outside_the_bounds(prices: Any) -> None:
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(prices)]

    # The string is another type's problem, not out of range.
    assert {v.documents[0]: v.key for v in found} == {
        2: -1,
        3: 101,
        6: [200, -3],
        8: {"$numberDecimal": "100.5"},
    }
    assert {v.documents[0]: v.description for v in found}[2] == (
        "amount is -1 (int); it must be at least 0 and at most 100"
    )


async def test_a_lower_bound_alone(prices: Any) -> None:
    rule = make_rule(RULE.replace("    max: 100\n", ""))

    assert {v.documents[0] async for v in rule.sweep(prices)} == {2, 6}


async def test_dates_compare_with_dates_only(db: Any) -> None:
    day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    await db.events.insert_many(
        [
            {"_id": 1, "at": day},
            {"_id": 2, "at": day - dt.timedelta(seconds=1)},
            {"_id": 3, "at": 5},
        ]
    )
    rule = make_rule(
        """
  - name: recent_events
    kind: range
    collection: events
    field: at
    min: 2024-01-01
"""
    )

    assert [v.documents async for v in rule.sweep(db)] == [(2,)]


async def test_check_writes_and_recheck(prices: Any) -> None:
    rule = make_rule(RULE)
    writes = [Write("prices", "insert", i) for i in (1, 3, 4, 7)]

    [violation] = await rule.check_writes(prices, writes)
    await prices.prices.update_one({"_id": 3}, {"$set": {"amount": 99}})

    assert violation.documents == (3,)
    assert await rule.recheck(prices, violation) is None


async def test_set_default_plan(prices: Any) -> None:
    rule = make_rule(RULE + "    fix: set_default\n    default: 0\n")
    [violation] = await rule.check_writes(prices, [Write("prices", "insert", 2)])

    plan = await rule.plan_fix(prices, violation)

    assert plan.operations == (
        Operation(
            "replace",
            "prices",
            2,
            before={"_id": 2, "amount": -1},
            after={"_id": 2, "amount": 0},
        ),
    )


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ("", "<rules>:4: rules[0]: a range needs `min`, `max` or both."),
        (
            "    min: a\n    max: 5\n",
            "<rules>:9: rules[0].max: min is a string but max is a number; both bounds "
            "must be of one kind.",
        ),
        (
            "    min: 5\n    max: 1\n",
            "<rules>:9: rules[0].max: min 5 is greater than max 1.",
        ),
        (
            "    min: true\n",
            "<rules>:8: rules[0].min: expected a number, a string or a date, not True.",
        ),
    ],
)
def test_bounds_are_validated(bounds: str, message: str) -> None:
    body = RULE.replace("    min: 0\n    max: 100\n", bounds)

    with pytest.raises(RuleFileError) as caught:
        make_rule(body)

    assert [str(p) for p in caught.value.problems] == [message]


def test_describes_itself() -> None:
    assert (
        make_rule(RULE).describe() == "prices.amount must be at least 0 and at most 100"
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            RULE + "    fix: set_default\n    default: 150\n",
            "<rules>:11: rules[0].default: "
            "the default 150 is out of range, so it would still "
            "violate the rule; it must be at least 0 and at most 100.",
        ),
        (
            RULE + "    fix: set_default\n    default: -0.5\n",
            "<rules>:11: rules[0].default: "
            "the default -0.5 is out of range, so it would still "
            "violate the rule; it must be at least 0 and at most 100.",
        ),
        (
            RULE + "    fix: set_default\n    default: [5, 200, null, -3]\n",
            "<rules>:11: rules[0].default: "
            "the default [5,200,null,-3] holds 200, -3, which "
            "is out of range, so it would still violate the rule; every element "
            "must be at least 0 and at most 100.",
        ),
        (
            RULE + "    fix: set_default\n    default: cheap\n",
            "<rules>:11: rules[0].default: "
            'the default "cheap" is not a number like the '
            "bounds, so the rule cannot compare it; it must be a number at least 0 "
            "and at most 100.",
        ),
        (
            RULE + "    fix: set_default\n    default: true\n",
            "<rules>:11: rules[0].default: "
            "the default true is not a number like the bounds, "
            "so the rule cannot compare it; it must be a number at least 0 and at "
            "most 100.",
        ),
        # NaN sorts below every number in MongoDB, so it is under any minimum.
        (
            RULE + "    fix: set_default\n    default: .nan\n",
            "<rules>:11: rules[0].default: "
            'the default {"$numberDouble":"NaN"} is out of '
            "range, so it would still violate the rule; it must be at least 0 and "
            "at most 100.",
        ),
        (
            RULE.replace("    min: 0\n    max: 100\n", "    min: 2024-01-01\n")
            + "    fix: set_default\n    default: 2023-12-31\n",
            "<rules>:10: rules[0].default: "
            'the default {"$date":"2023-12-31T00:00:00Z"} is '
            "out of range, so it would still violate the rule; it must be at least "
            '{"$date":"2024-01-01T00:00:00Z"}.',
        ),
        (
            RULE.replace("    min: 0\n    max: 100\n", "    max: m\n")
            + "    fix: set_default\n    default: n\n",
            "<rules>:10: rules[0].default: "
            'the default "n" is out of range, so it would still '
            'violate the rule; it must be at most "m".',
        ),
    ],
)
def test_a_default_outside_the_range_is_refused(rule: str, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(rule)

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (RULE + "    fix: set_default\n    default: 0\n", 0),
        (RULE + "    fix: set_default\n    default: 100.0\n", 100.0),
        (RULE + "    fix: set_default\n    default: [0, null, 100]\n", [0, None, 100]),
        # Null is never judged by `range`, so setting it ends the violation.
        (RULE + "    fix: set_default\n    default: null\n", None),
        # Only a default the fix sets has to be in range.
        (RULE + "    default: 150\n", 150),
        (
            RULE.replace("    min: 0\n    max: 100\n", "    max: 0\n")
            + "    fix: set_default\n    default: .nan\n",
            {"$numberDouble": "NaN"},
        ),
        (
            RULE.replace("    min: 0\n    max: 100\n", "    min: 2024-01-01\n")
            + "    fix: set_default\n    default: 2024-01-01\n",
            {"$date": "2024-01-01T00:00:00Z"},
        ),
    ],
)
def test_a_default_within_the_range_loads(rule: str, expected: Any) -> None:
    loaded = make_rule(rule)

    assert to_json_value(loaded.spec.default) == expected
