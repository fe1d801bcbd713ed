"""The `pattern` rule on both paths, its recheck and its fix plans, on a real server."""

from __future__ import annotations

from typing import Any

import pytest

from streamheal.config import parse_settings
from streamheal.errors import RuleFileError
from streamheal.rules import Operation, Rule, Write


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


RULE = r"""
  - name: plausible_emails
    kind: pattern
    collection: users
    field: email
    regex: '^[a-z]+@[a-z]+\.io$'
"""

USERS = [
    {"_id": 1, "email": "a@x.io"},
    {"_id": 2, "email": "nope"},
    {"_id": 3, "email": 5},
    {"_id": 4, "email": ["a@y.io", "bad", None]},
    {"_id": 5, "email": "A@X.IO"},
    {"_id": 6, "email": None},
    {"_id": 7, "contact": {"email": "bad"}},
]


@pytest.fixture
async def users(db: Any) -> Any:
    await db.users.insert_many(USERS)
    return db


async def test_sweep_finds_strings_that_do_not_match(users: Any) -> None:
    rule = make_rule(RULE)

    found = [v async for v in rule.sweep(users)]

    # A number is the type rule's problem, so 3 is left alone.
    assert {v.documents[0]: v.key for v in found} == {
        2: "nope",
        4: ["bad"],
        5: "A@X.IO",
    }
    assert {v.documents[0]: v.description for v in found}[2] == (
        'email is "nope" (string); it must be a string matching '
        r"/^[a-z]+@[a-z]+\.io$/"
    )


async def test_options_reach_the_server(users: Any) -> None:
    rule = make_rule(RULE + "    options: i\n")

    assert {v.documents[0] async for v in rule.sweep(users)} == {2, 4}


async def test_a_nested_field(users: Any) -> None:
    rule = make_rule(RULE.replace("field: email", "field: contact.email"))

    assert [(v.documents, v.key) async for v in rule.sweep(users)] == [((7,), "bad")]


async def test_check_writes_and_recheck(users: Any) -> None:
    rule = make_rule(RULE)
    writes = [Write("users", "replace", i) for i in (1, 2, 3)]

    [violation] = await rule.check_writes(users, writes)
    await users.users.update_one({"_id": 2}, {"$set": {"email": "yes@x.io"}})

    assert violation.documents == (2,)
    assert await rule.recheck(users, violation) is None


async def test_set_default_plan(users: Any) -> None:
    rule = make_rule(RULE + "    fix: set_default\n    default: null\n")
    [violation] = await rule.check_writes(users, [Write("users", "insert", 5)])

    plan = await rule.plan_fix(users, violation)

    assert plan.operations == (
        Operation(
            "replace",
            "users",
            5,
            before={"_id": 5, "email": "A@X.IO"},
            after={"_id": 5, "email": None},
        ),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("'^[a-z]+@[a-z]+\\.io$'", "'(a'"),
            "<rules>:8: rules[0].regex: the regular expression '(a' does not compile: "
            "missing ), unterminated subpattern at position 0.",
        ),
        (
            ("    regex:", "    options: iq\n    regex:"),
            "<rules>:8: rules[0].options: unknown regular expression option q; "
            "expected letters from imsx.",
        ),
    ],
)
def test_rule_file_mistakes(change: tuple[str, str], message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE.replace(*change))

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "    fix: set_default\n    default: A@X.IO\n",
            "<rules>:10: rules[0].default: "
            'the default "A@X.IO" does not match, so it would '
            r"still violate the rule; it must be a string matching "
            r"/^[a-z]+@[a-z]+\.io$/.",
        ),
        (
            "    fix: set_default\n    default: [a@x.io, 5, bad, null]\n",
            "<rules>:10: rules[0].default: "
            'the default ["a@x.io",5,"bad",null] holds "bad", '
            "which does not match, so it would still violate the rule; every "
            r"element must be a string matching /^[a-z]+@[a-z]+\.io$/.",
        ),
        (
            "    options: m\n    fix: set_default\n    default: A@X.IO\n",
            "<rules>:11: rules[0].default: "
            'the default "A@X.IO" does not match, so it would '
            r"still violate the rule; it must be a string matching "
            r"/^[a-z]+@[a-z]+\.io$/m.",
        ),
    ],
)
def test_a_default_that_does_not_match_is_refused(change: str, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE + change)

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("    fix: set_default\n    default: a@x.io\n", "a@x.io"),
        # The options reach the check: `i` ignores case, as on the server.
        ("    options: i\n    fix: set_default\n    default: A@X.IO\n", "A@X.IO"),
        # Only strings are judged; anything else is `type`'s question.
        ("    fix: set_default\n    default: 5\n", 5),
        ("    fix: set_default\n    default: [a@x.io, 5]\n", ["a@x.io", 5]),
        # Only a default the fix sets has to match.
        ("    default: bad\n", "bad"),
    ],
)
def test_a_default_the_rule_accepts_loads(change: str, expected: Any) -> None:
    rule = make_rule(RULE + change)

    assert rule.spec.default == expected
