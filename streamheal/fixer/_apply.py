"""Apply a fix plan with its backups and audit record, and roll one back.

Where the server supports transactions (a replica set or a sharded cluster),
the backups, the writes and the audit record commit together or not at all.
Every write to an existing document is conditional on the document being
exactly what the plan saw, so a fix never overwrites newer data.
https://www.mongodb.com/docs/manual/core/transactions/
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from streamheal._bson import to_json_text
from streamheal.errors import FixConflictError, FixError
from streamheal.rules import COMMENT, Database, FixPlan, Operation


BACKUPS = "streamheal_backups"
FIXES = "streamheal_fixes"

StepCallback = Callable[[str], Awaitable[None]]


def new_fix_id() -> str:
    """Fix ids sort by creation time, which `streamheal history` relies on."""
    return str(ObjectId())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def unchanged_filter(document_id: Any, document: Mapping[str, Any]) -> dict[str, Any]:
    """Match the document only while it is still exactly `document`."""
    return {"_id": document_id, "$expr": {"$eq": ["$$ROOT", {"$literal": document}]}}


def describe_operation(operation: Operation, *, with_before: bool) -> dict[str, Any]:
    described: dict[str, Any] = {
        "action": operation.action,
        "collection": operation.collection,
        "document_id": operation.document_id,
    }
    if operation.after is not None:
        described["after"] = operation.after
    if with_before and operation.before is not None:
        described["before"] = operation.before
    if operation.index_keys:
        described["index_keys"] = [list(pair) for pair in operation.index_keys]
    return described


def audit_record(
    plan: FixPlan, fix_id: str, mode: str, status: str, **extra: Any
) -> dict[str, Any]:
    """The `streamheal_fixes` document for a fix, simulated or real."""
    violation = plan.violation
    return {
        "_id": fix_id,
        "violation_id": violation.id,
        "rule": violation.rule,
        "kind": violation.kind,
        "collection": violation.collection,
        "severity": violation.severity.value,
        "description": violation.description,
        "action": plan.action,
        "summary": plan.summary,
        "mode": mode,
        "status": status,
        "documents": list(violation.documents),
        "documents_touched": plan.documents_touched,
        "operations": [
            describe_operation(op, with_before=mode == "dry_run")
            for op in plan.operations
        ],
        "created_at": now(),
        **extra,
    }


async def supports_transactions(client: AsyncMongoClient[Any]) -> bool:
    """Transactions need a replica set member or mongos, not a standalone."""
    hello = await client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


async def apply_plan(
    client: AsyncMongoClient[Any],
    db: Database,
    plan: FixPlan,
    fix_id: str,
    *,
    backup: bool,
    use_transaction: bool,
    on_step: StepCallback,
) -> dict[str, Any]:
    """Back up, apply and record a fix; return its audit record.

    Raises FixConflictError when a document changed since the plan was made;
    then nothing of the fix was written.
    """
    record = audit_record(plan, fix_id, "fix", "applied", backed_up=backup)
    document_ops = [
        op for op in plan.operations if op.action in ("insert", "replace", "delete")
    ]

    async def write_all(session: AsyncClientSession | None) -> None:
        if backup:
            await on_step("backup")
            await write_backups(db, plan, fix_id, session)
        await on_step("apply")
        for operation in document_ops:
            await apply_operation(db, operation, session)
        await on_step("audit")
        record["applied_at"] = now()
        await db[FIXES].insert_one(record, session=session, comment=COMMENT)

    # Index builds cannot share a transaction with writes to existing
    # collections, so they run first and on their own.
    for operation in plan.operations:
        if operation.action == "create_index":
            await on_step("apply")
            name = await db[operation.collection].create_index(
                list(operation.index_keys), comment=COMMENT
            )
            record.setdefault("created_indexes", []).append(
                {"collection": operation.collection, "name": name}
            )

    if use_transaction and document_ops:
        async with client.start_session() as session:
            await session.with_transaction(write_all)
    else:
        await write_all(None)
    return record


async def write_backups(
    db: Database, plan: FixPlan, fix_id: str, session: AsyncClientSession | None
) -> None:
    backups = [
        {
            "fix_id": fix_id,
            "rule": plan.violation.rule,
            "violation_id": plan.violation.id,
            "collection": op.collection,
            "document_id": op.document_id,
            "document": op.before,
            "time": now(),
        }
        for op in plan.operations
        if op.action in ("replace", "delete") and op.before is not None
    ]
    if backups:
        await db[BACKUPS].insert_many(backups, session=session, comment=COMMENT)


async def apply_operation(
    db: Database, operation: Operation, session: AsyncClientSession | None
) -> None:
    collection = db[operation.collection]
    if operation.action == "insert":
        await collection.insert_one(
            dict(operation.after or {}), session=session, comment=COMMENT
        )
        return

    assert operation.before is not None  # replace and delete always carry it
    condition = unchanged_filter(operation.document_id, operation.before)
    if operation.action == "replace":
        result = await collection.replace_one(
            condition, dict(operation.after or {}), session=session, comment=COMMENT
        )
        changed = result.matched_count
    else:
        deleted = await collection.delete_one(
            condition, session=session, comment=COMMENT
        )
        changed = deleted.deleted_count
    if changed != 1:
        raise FixConflictError(
            f"Document {to_json_text(operation.document_id)} of {operation.collection} "
            "changed after the fix was planned; nothing was written."
        )


async def rollback_fix(
    client: AsyncMongoClient[Any], db: Database, fix_id: str, *, use_transaction: bool
) -> dict[str, Any]:
    """Undo an applied fix from its backups; return the updated audit record."""
    record = await db[FIXES].find_one({"_id": fix_id}, comment=COMMENT)
    if record is None:
        raise FixError(f"There is no fix with id {fix_id}.", fix_id=fix_id)
    if record.get("status") != "applied":
        raise FixError(
            f"Fix {fix_id} cannot be rolled back: its status is {record.get('status')!r}, "
            "and only applied fixes have changes to undo.",
            fix_id=fix_id,
        )
    backups = {
        (backup["collection"], to_json_text(backup["document_id"])): backup["document"]
        async for backup in db[BACKUPS].find({"fix_id": fix_id}, comment=COMMENT)
    }

    async def undo_all(session: AsyncClientSession | None) -> None:
        for operation in reversed(record["operations"]):
            await undo_operation(db, fix_id, operation, backups, session)
        await db[FIXES].update_one(
            {"_id": fix_id},
            {"$set": {"status": "rolled_back", "rolled_back_at": now()}},
            session=session,
            comment=COMMENT,
        )

    if use_transaction:
        async with client.start_session() as session:
            await session.with_transaction(undo_all)
    else:
        await undo_all(None)

    for index in record.get("created_indexes", []):
        await db[index["collection"]].drop_index(index["name"], comment=COMMENT)
    record["status"] = "rolled_back"
    return record


async def undo_operation(
    db: Database,
    fix_id: str,
    operation: Mapping[str, Any],
    backups: Mapping[tuple[str, str], Any],
    session: AsyncClientSession | None,
) -> None:
    action = operation["action"]
    collection = db[operation["collection"]]
    document_id = operation["document_id"]
    if action == "insert":
        await collection.delete_one(
            {"_id": document_id}, session=session, comment=COMMENT
        )
        return
    if action not in ("replace", "delete"):
        return

    original = backups.get((operation["collection"], to_json_text(document_id)))
    if original is None:
        raise FixError(
            f"Fix {fix_id} has no backup of document {to_json_text(document_id)} in "
            f"{operation['collection']}; it was applied with backups off.",
            fix_id=fix_id,
        )
    if action == "delete":
        if await collection.find_one({"_id": document_id}, session=session) is not None:
            raise FixError(
                f"Cannot restore document {to_json_text(document_id)} of "
                f"{operation['collection']}: a document with that _id exists again.",
                fix_id=fix_id,
            )
        await collection.insert_one(original, session=session, comment=COMMENT)
        return

    result = await collection.replace_one(
        unchanged_filter(document_id, operation["after"]),
        original,
        session=session,
        comment=COMMENT,
    )
    if result.matched_count != 1:
        raise FixConflictError(
            f"Cannot roll back fix {fix_id}: document {to_json_text(document_id)} of "
            f"{operation['collection']} changed after the fix.",
            fix_id=fix_id,
        )


async def list_fixes(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """Audit records, newest first."""
    cursor = db[FIXES].find({}, comment=COMMENT).sort("_id", -1).limit(limit)
    return [record async for record in cursor]
