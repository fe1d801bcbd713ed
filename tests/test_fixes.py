"""Every fix of every kind: applied with its backups, then rolled back exactly.

Each case starts from a small database, applies the fixes the rule plans for
all its violations, compares the whole database with the state written out
below, then rolls every fix back and compares with the starting data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamheal.fixer import BACKUPS, FIXES, apply_plan, new_fix_id, rollback_fix
from tests.helpers import settings_for


@dataclass(frozen=True)
class Case:
    rule: str
    before: dict[str, list[dict[str, Any]]]
    after: dict[str, list[dict[str, Any]]]
    backups: int
    moved_to: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # (collection, document_id, document) of each backup, when the case says.
    backed_up: list[tuple[str, Any, dict[str, Any]]] | None = None
    # The moved copy's `_streamheal`, without its violation_id and moved_at.
    metadata: dict[str, Any] | None = None


USERS = [
    {"_id": 1, "email": "a@x"},
    {"_id": 2, "email": " A@X"},
    {"_id": 3, "email": "b@x"},
]

CASES = {
    "unique delete, keep oldest": Case(
        "{name: r, kind: unique, collection: users, keys: [email], "
        "normalize: [lowercase, trim]}",
        {"users": USERS},
        {"users": [USERS[0], USERS[2]]},
        backups=1,
    ),
    "unique archive, keep newest": Case(
        "{name: r, kind: unique, collection: users, keys: [email], "
        "normalize: [lowercase, trim], keep: newest, fix: archive}",
        {"users": USERS},
        {"users": [USERS[1], USERS[2]], "users_duplicates": [USERS[0]]},
        backups=1,
        moved_to="users_duplicates",
    ),
    "reference archive": Case(
        "{name: r, kind: reference, collection: orders, field: user_id, "
        "references: users._id}",
        {
            "users": [{"_id": 1}],
            "orders": [{"_id": 10, "user_id": 1}, {"_id": 11, "user_id": 9}],
        },
        {
            "users": [{"_id": 1}],
            "orders": [{"_id": 10, "user_id": 1}],
            "orders_orphaned": [{"_id": 11, "user_id": 9}],
        },
        backups=1,
        moved_to="orders_orphaned",
    ),
    "reference unset of dangling array elements": Case(
        "{name: r, kind: reference, collection: orders, field: user_ids, "
        "references: users, fix: unset}",
        {"users": [{"_id": 1}], "orders": [{"_id": 10, "user_ids": [1, 9, 8]}]},
        {"users": [{"_id": 1}], "orders": [{"_id": 10, "user_ids": [1]}]},
        backups=1,
    ),
    "reference delete": Case(
        "{name: r, kind: reference, collection: orders, field: user_id, "
        "references: users._id, fix: delete}",
        {"users": [{"_id": 1}], "orders": [{"_id": 10, "user_id": 2}]},
        {"users": [{"_id": 1}], "orders": []},
        backups=1,
    ),
    "required set_default": Case(
        "{name: r, kind: required, collection: users, fields: [email, name], "
        "fix: set_default, defaults: {email: none@x, name: Anon}}",
        {"users": [{"_id": 1, "email": ""}, {"_id": 2, "email": "b@x", "name": "B"}]},
        {
            "users": [
                {"_id": 1, "email": "none@x", "name": "Anon"},
                {"_id": 2, "email": "b@x", "name": "B"},
            ]
        },
        backups=1,
    ),
    "required quarantine": Case(
        "{name: r, kind: required, collection: users, fields: [email]}",
        {"users": [{"_id": 1}, {"_id": 2, "email": "b@x"}]},
        {"users": [{"_id": 2, "email": "b@x"}], "users_quarantine": [{"_id": 1}]},
        backups=1,
        moved_to="users_quarantine",
    ),
    "allowed set_default": Case(
        "{name: r, kind: allowed, collection: orders, field: status, "
        "values: [paid, open], fix: set_default, default: open}",
        {"orders": [{"_id": 1, "status": "Paid!"}, {"_id": 2, "status": "paid"}]},
        {"orders": [{"_id": 1, "status": "open"}, {"_id": 2, "status": "paid"}]},
        backups=1,
    ),
    "type convert": Case(
        "{name: r, kind: type, collection: items, field: qty, types: [int], "
        "fix: convert}",
        {"items": [{"_id": 1, "qty": "42"}, {"_id": 2, "qty": 7}]},
        {"items": [{"_id": 1, "qty": 42}, {"_id": 2, "qty": 7}]},
        backups=1,
    ),
    "range quarantine": Case(
        "{name: r, kind: range, collection: items, field: stock, min: 0}",
        {"items": [{"_id": 1, "stock": -3}, {"_id": 2, "stock": 0}]},
        {
            "items": [{"_id": 2, "stock": 0}],
            "items_quarantine": [{"_id": 1, "stock": -3}],
        },
        backups=1,
        moved_to="items_quarantine",
    ),
    "pattern set_default": Case(
        "{name: r, kind: pattern, collection: t, field: zip, regex: '^[0-9]{5}$', "
        "fix: set_default, default: '00000'}",
        {"t": [{"_id": 1, "zip": "2134"}, {"_id": 2, "zip": "02134"}]},
        {"t": [{"_id": 1, "zip": "00000"}, {"_id": 2, "zip": "02134"}]},
        backups=1,
    ),
    "query update": Case(
        "{name: r, kind: query, collection: orders, filter: {total: {$lt: 0}}, "
        "fix: update, "
        "update: {$set: {total: 0, review.needed: true}, $unset: {note: ''}}}",
        {"orders": [{"_id": 1, "total": -5, "note": "refund"}, {"_id": 2, "total": 5}]},
        {
            "orders": [
                {"_id": 1, "total": 0, "review": {"needed": True}},
                {"_id": 2, "total": 5},
            ]
        },
        backups=1,
    ),
    "required delete": Case(
        "{name: r, kind: required, collection: users, fields: [email], fix: delete}",
        {"users": [{"_id": 1, "name": "A"}, {"_id": 2, "email": "b@x"}]},
        {"users": [{"_id": 2, "email": "b@x"}]},
        backups=1,
        backed_up=[("users", 1, {"_id": 1, "name": "A"})],
    ),
    "query archive": Case(
        "{name: r, kind: query, collection: orders, filter: {total: {$lt: 0}}, "
        "fix: archive}",
        {"orders": [{"_id": 1, "total": -5, "note": "x"}, {"_id": 2, "total": 5}]},
        {
            "orders": [{"_id": 2, "total": 5}],
            "orders_archived": [{"_id": 1, "total": -5, "note": "x"}],
        },
        backups=1,
        moved_to="orders_archived",
        backed_up=[("orders", 1, {"_id": 1, "total": -5, "note": "x"})],
        metadata={
            "rule": "r",
            "kind": "query",
            "reason": 'matches {"total":{"$lt":0}}',
            "source_collection": "orders",
        },
    ),
    "query delete": Case(
        "{name: r, kind: query, collection: orders, filter: {total: {$lt: 0}}, "
        "fix: delete}",
        {"orders": [{"_id": 1, "total": -5}, {"_id": 2, "total": 5}]},
        {"orders": [{"_id": 2, "total": 5}]},
        backups=1,
    ),
}


async def read_database(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every user collection sorted by _id; streamheal's own are left out."""
    names = sorted(await db.list_collection_names())
    return {
        name: await db[name].find({}).sort("_id", 1).to_list()
        for name in names
        if not name.startswith(("streamheal_", "system."))
    }


def without_metadata(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "_streamheal"} for d in documents]


async def noop_step(step: str, operation: int | None = None) -> None:
    return None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_fix_then_rollback(db: Any, case: Case) -> None:
    for name, documents in case.before.items():
        await db[name].insert_many(documents)
    rule = settings_for(db.name, f"  - {case.rule}\n").build_rules()[0]
    client = db.client

    fix_ids = []
    violation_ids = []
    async for violation in rule.sweep(db):
        violation_ids.append(violation.id)
        plan = await rule.plan_fix(db, violation)
        fix_id = new_fix_id()
        await apply_plan(
            client,
            db,
            plan,
            fix_id,
            backup=True,
            use_transaction=True,
            on_step=noop_step,
        )
        fix_ids.append(fix_id)

    fixed = await read_database(db)
    assert {name: without_metadata(docs) for name, docs in fixed.items()} == {
        **{name: [] for name in case.before},
        **case.after,
    }
    if case.moved_to:
        assert {doc["_streamheal"]["rule"] for doc in fixed[case.moved_to]} == {"r"}
    if case.metadata is not None:
        [moved] = fixed[case.moved_to or ""]
        metadata = dict(moved["_streamheal"])
        assert isinstance(metadata.pop("moved_at"), dt.datetime)
        assert metadata == {**case.metadata, "violation_id": violation_ids[0]}
    assert await db[BACKUPS].count_documents({}) == case.backups
    if case.backed_up is not None:
        backups = await db[BACKUPS].find({}).sort("document_id", 1).to_list()
        assert [
            (b["fix_id"], b["rule"], b["collection"], b["document_id"], b["document"])
            for b in backups
        ] == [
            (fix_id, "r", *backup)
            for fix_id, backup in zip(fix_ids, case.backed_up, strict=True)
        ]
    assert await db[FIXES].count_documents({"status": "applied"}) == len(fix_ids)

    for fix_id in reversed(fix_ids):
        await rollback_fix(client, db, fix_id, use_transaction=True)

    restored = await read_database(db)
    expected = {
        name: sorted(docs, key=lambda d: d["_id"]) for name, docs in case.before.items()
    }
    if case.moved_to:
        expected[case.moved_to] = []
    assert restored == expected
    assert await db[FIXES].count_documents({"status": "rolled_back"}) == len(fix_ids)


async def test_a_fix_cannot_be_rolled_back_twice(db: Any) -> None:
    await db.users.insert_one({"_id": 1})
    rule = settings_for(db.name, "  - {name: r, kind: required, collection: users, "
                        "fields: [email], fix: delete}\n").build_rules()[0]  # fmt: skip
    [violation] = [v async for v in rule.sweep(db)]
    plan = await rule.plan_fix(db, violation)
    await apply_plan(
        db.client, db, plan, "f1", backup=True, use_transaction=True, on_step=noop_step
    )
    await rollback_fix(db.client, db, "f1", use_transaction=True)

    with pytest.raises(Exception, match="its status is 'rolled_back'"):
        await rollback_fix(db.client, db, "f1", use_transaction=True)
    assert await db.users.find({}).to_list() == [{"_id": 1}]


SLOW_USERS_CREATE_INDEX = (
    "  - {name: r, kind: slow_query, collection: users, threshold: 0ms, "
    "fix: create_index}\n"
)


async def read_indexes(collection: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Each index's name and keys, in key order, sorted by name."""
    indexes = await (await collection.list_indexes()).to_list()
    return sorted((index["name"], list(index["key"].items())) for index in indexes)


async def test_create_index_then_rollback_drops_the_index(
    db: Any, profiling: None
) -> None:
    users = [{"_id": 1, "user": 1, "age": 1}, {"_id": 2, "user": 12, "age": 2}]
    await db.users.insert_many(users)
    await db.users.find({"user": {"$gt": 9}}).sort("age", -1).to_list()
    rule = settings_for(db.name, SLOW_USERS_CREATE_INDEX).build_rules()[0]
    [violation] = [v async for v in rule.sweep(db)]
    plan = await rule.plan_fix(db, violation)
    assert await read_indexes(db.users) == [("_id_", [("_id", 1)])]

    record = await apply_plan(
        db.client, db, plan, "f1", backup=True, use_transaction=True, on_step=noop_step
    )

    assert record["created_indexes"] == [
        {"collection": "users", "name": "age_-1_user_1"}
    ]
    assert await read_indexes(db.users) == [
        ("_id_", [("_id", 1)]),
        ("age_-1_user_1", [("age", -1), ("user", 1)]),
    ]
    assert await db[BACKUPS].count_documents({}) == 0
    assert await db[FIXES].find({}, {"_id": 1, "status": 1, "action": 1}).to_list() == [
        {"_id": "f1", "status": "applied", "action": "create_index"}
    ]

    await rollback_fix(db.client, db, "f1", use_transaction=True)

    assert await read_indexes(db.users) == [("_id_", [("_id", 1)])]
    assert await db.users.find({}).sort("_id", 1).to_list() == users
    assert await db[FIXES].find({}, {"_id": 1, "status": 1}).to_list() == [
        {"_id": "f1", "status": "rolled_back"}
    ]


async def test_rollback_of_an_index_someone_already_dropped_completes(
    db: Any, profiling: None
) -> None:
    await db.users.insert_one({"_id": 1, "user": 1, "age": 1})
    await db.users.find({"user": {"$gt": 9}}).sort("age", -1).to_list()
    rule = settings_for(db.name, SLOW_USERS_CREATE_INDEX).build_rules()[0]
    [violation] = [v async for v in rule.sweep(db)]
    plan = await rule.plan_fix(db, violation)
    await apply_plan(
        db.client, db, plan, "f1", backup=True, use_transaction=True, on_step=noop_step
    )
    await db.users.drop_index("age_-1_user_1")

    record = await rollback_fix(db.client, db, "f1", use_transaction=True)

    assert record["status"] == "rolled_back"
    assert await read_indexes(db.users) == [("_id_", [("_id", 1)])]
