"""The `required` rule on both paths, and its fixes, against a real server."""

from __future__ import annotations

from typing import Any

from streamheal.config import parse_settings
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
