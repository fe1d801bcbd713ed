"""The `required` rule on both paths, and its fixes, against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from streamheal.config import parse_settings
from streamheal.errors import RuleFileError
from streamheal.rules import Rule, Write


def make_rule(body: str) -> Rule:
    settings = parse_settings(f"mongodb: {{database: x}}\nrules:\n{body}")
    return settings.build_rules()[0]


RULE = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email, name]
"""


async def test_sweep_finds_absent_null_and_empty(db: Any) -> None:
    await db.users.insert_many(
        [
            {"_id": 1, "email": "a@x", "name": "A"},
            {"_id": 2, "name": "B"},
            {"_id": 3, "email": None, "name": "C"},
            {"_id": 4, "email": "", "name": ""},
        ]
    )
    rule = make_rule(RULE)

    found = {v.documents[0]: v.key async for v in rule.sweep(db)}

    assert found == {2: ["email"], 3: ["email"], 4: ["email", "name"]}


ARRAYS = [
    {"_id": "tags-with-an-empty-element", "tags": ["a", ""], "a": {"b": 1}},
    {"_id": "tags-empty-array", "tags": [], "a": {"b": 1}},
    {"_id": "tags-of-null", "tags": [None], "a": {"b": 1}},
    {"_id": "b-in-one-element", "tags": "t", "a": [{"b": 1}, {}]},
    {"_id": "b-in-no-element", "tags": "t", "a": [{}]},
    {"_id": "b-null-in-every-element", "tags": "t", "a": [{"b": None}]},
    {"_id": "b-empty-then-set", "tags": "t", "a": [{"b": ""}, {"b": "q"}]},
    {"_id": "b-empty-in-every-element", "tags": "t", "a": [{"b": ""}]},
    {"_id": "b-zero-and-false", "tags": 0, "a": [{"b": False}]},
]


async def test_a_value_anywhere_along_an_array_path_is_present(db: Any) -> None:
    """A field is missing only when every value at its path is absent, null or empty."""
    await db.things.insert_many(ARRAYS)
    rule = make_rule(
        "  - {name: r, kind: required, collection: things, fields: [tags, a.b]}\n"
    )

    found = {v.documents[0]: v.key async for v in rule.sweep(db)}
    ids = [document["_id"] for document in ARRAYS]
    checked = {v.documents[0]: v.key for v in await rule.check_ids(db, ids)}

    expected = {
        "b-in-no-element": ["a.b"],
        "b-null-in-every-element": ["a.b"],
        "b-empty-in-every-element": ["a.b"],
    }
    assert found == expected
    assert checked == expected


async def test_write_check_agrees_with_sweep_for_written_ids(db: Any) -> None:
    await db.users.insert_many([{"_id": 1, "email": "a@x", "name": "A"}, {"_id": 2}])
    rule = make_rule(RULE)
    writes = [Write("users", "insert", 1), Write("users", "insert", 2)]

    found = await rule.check_writes(db, writes)

    assert [v.documents for v in found] == [(2,)]


async def test_empty_string_counts_only_when_asked(db: Any) -> None:
    await db.users.insert_many([{"_id": 1, "email": "", "name": "A"}])
    rule = make_rule(RULE + "    empty_is_missing: false\n")

    assert [v async for v in rule.sweep(db)] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "    fix: set_default\n    defaults: {email: null, name: Anon}\n",
            "<rules>:9: rules[0].defaults: the default null for email counts as "
            "missing, so "
            "it would still violate the rule; it must be a value other than null.",
        ),
        (
            "    fix: set_default\n    defaults: {email: '', name: Anon}\n",
            "<rules>:9: rules[0].defaults: "
            'the default "" for email counts as missing while '
            "empty_is_missing is true, so it would still violate the rule; it must "
            'be a value other than null and "".',
        ),
        (
            "    fix: set_default\n    defaults: {email: null, name: ''}\n",
            "<rules>:9: rules[0].defaults: the default null for email counts as "
            "missing, so "
            "it would still violate the rule; it must be a value other than null. "
            'The default "" for name counts as missing while empty_is_missing is '
            "true, so it would still violate the rule; it must be a value other "
            'than null and "".',
        ),
    ],
)
def test_a_default_that_counts_as_missing_is_refused(change: str, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        make_rule(RULE + change)

    assert [str(p) for p in caught.value.problems] == [message]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "    fix: set_default\n    defaults: {email: none@x, name: 0}\n",
            {"email": "none@x", "name": 0},
        ),
        # false, an empty list and an empty sub-document are values, not gaps.
        (
            "    fix: set_default\n    defaults: {email: false, name: []}\n",
            {"email": False, "name": []},
        ),
        (
            "    fix: set_default\n    defaults: {email: {}, name: [null]}\n",
            {"email": {}, "name": [None]},
        ),
        (
            "    empty_is_missing: false\n    fix: set_default\n"
            "    defaults: {email: '', name: Anon}\n",
            {"email": "", "name": "Anon"},
        ),
        # Only defaults the fix sets are judged.
        ("    defaults: {email: null, name: ''}\n", {"email": None, "name": ""}),
    ],
)
def test_defaults_that_are_present_load(change: str, expected: Any) -> None:
    rule = make_rule(RULE + change)

    assert rule.spec.defaults == expected
