"""Apply a fix plan with its backups and audit record, and roll one back.

Where the server supports transactions (a replica set or a sharded cluster),
the backups, the writes and the audit record commit together or not at all.
Where it does not, the audit record is written first with status `applying`
and the operations it plans, then the backups, then the writes, and the
record becomes `applied` last; a fix that fails or is cut short half-way is
undone from its backups, at once or when the fixer starts again.

Every write to an existing document is conditional on the document being
exactly what the plan saw, so a fix never overwrites newer data. Backups hold
the documents' raw BSON, so a rollback restores them byte for byte.
https://www.mongodb.com/docs/manual/core/transactions/
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bson import ObjectId, decode, encode
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from streamheal._bson import to_json_text
from streamheal.errors import FixConflictError, FixError
from streamheal.rules import COMMENT, Database, FixPlan, Operation


BACKUPS = "streamheal_backups"
FIXES = "streamheal_fixes"
DOCUMENT_ACTIONS = ("insert", "replace", "delete")
CHANGING_ACTIONS = ("replace", "delete")


class StepCallback(Protocol):
    """Told when a fix reaches a step; `operation` numbers the writes from 0."""

    async def __call__(self, step: str, operation: int | None = None) -> None: ...


def new_fix_id() -> str:
    """Fix ids sort by creation time, which `streamheal history` relies on."""
    return str(ObjectId())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def raw_collection(db: Database, name: str) -> AsyncCollection[RawBSONDocument]:
    """The collection read as raw BSON: nothing is decoded, so nothing changes."""
    options = db.codec_options.with_options(document_class=RawBSONDocument)
    collection: AsyncCollection[RawBSONDocument] = db.get_collection(
        name, codec_options=options
    )  # type: ignore[assignment]  # the codec options make it raw; typing cannot see that
    return collection


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

    Raises FixConflictError when a document changed since the plan was made.
    Whatever is raised, nothing of the fix remains: a transaction is aborted,
    and without one the writes made so far are undone from the backups.
    """
    record = audit_record(plan, fix_id, "fix", "applied", backed_up=backup)
    operations = [op for op in plan.operations if op.action in DOCUMENT_ACTIONS]

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

    if not operations:
        await on_step("audit")
        record["applied_at"] = now()
        await db[FIXES].insert_one(record, comment=COMMENT)
    elif use_transaction:
        await _apply_in_transaction(client, db, plan, record, operations, on_step)
    else:
        await _apply_in_steps(db, plan, record, operations, on_step)
    return record


async def _apply_in_transaction(
    client: AsyncMongoClient[Any],
    db: Database,
    plan: FixPlan,
    record: dict[str, Any],
    operations: Sequence[Operation],
    on_step: StepCallback,
) -> None:
    """Backups, writes and the audit record in one transaction.

    A FixConflictError raised inside aborts the transaction; a transient error
    (a write conflict) makes `with_transaction` run it all again.
    """

    async def write_all(session: AsyncClientSession) -> None:
        await on_step("backup")
        originals = await read_originals(db, operations, session)
        if record["backed_up"]:
            await write_backups(db, plan, record["_id"], originals, session)
        for index, operation in enumerate(operations):
            await on_step("apply", index)
            await apply_operation(db, operation, originals.get(index), session)
        await on_step("audit")
        record["applied_at"] = now()
        await db[FIXES].insert_one(record, session=session, comment=COMMENT)
        await on_step("commit")

    async with client.start_session() as session:
        await session.with_transaction(write_all)


async def _apply_in_steps(
    db: Database,
    plan: FixPlan,
    record: dict[str, Any],
    operations: Sequence[Operation],
    on_step: StepCallback,
) -> None:
    """Without transactions: record, backups, writes, then mark it applied.

    The `applying` record names every planned write, so a fix cut short by a
    crash is found and undone at the next start (`recover_interrupted_fixes`).
    A fix that fails here is undone at once and recorded as failed. Backups
    are written even when they are switched off: nothing could be undone
    without them.
    """
    fix_id = record["_id"]
    record["backed_up"] = True
    await on_step("record")
    await db[FIXES].insert_one({**record, "status": "applying"}, comment=COMMENT)

    originals: dict[int, RawBSONDocument] = {}
    try:
        await on_step("backup")
        originals = await read_originals(db, operations, None)
        await write_backups(db, plan, fix_id, originals, None)
        for index, operation in enumerate(operations):
            await on_step("apply", index)
            await apply_operation(db, operation, originals.get(index), None)
    except (FixError, PyMongoError) as exc:
        backups = {
            _key(operations[index].collection, operations[index].document_id): raw
            for index, raw in originals.items()
        }
        # The operations as stored, so that they compare equal to what the
        # server holds (dates cut to milliseconds, for instance).
        stored = decode(encode({"o": record["operations"]}), db.codec_options)["o"]
        undone = await undo_partial(db, stored, backups)
        await db[FIXES].update_one(
            {"_id": fix_id},
            {"$set": {"status": "failed", "error": str(exc), "undone": undone}},
            comment=COMMENT,
        )
        raise

    await on_step("audit")
    record["applied_at"] = now()
    await db[FIXES].update_one(
        {"_id": fix_id},
        {"$set": {"status": "applied", "applied_at": record["applied_at"]}},
        comment=COMMENT,
    )


def _key(collection: str, document_id: Any) -> tuple[str, str]:
    return (collection, to_json_text(document_id))


async def read_originals(
    db: Database, operations: Sequence[Operation], session: AsyncClientSession | None
) -> dict[int, RawBSONDocument]:
    """The raw BSON of each document a write will change, by operation index.

    Each is read on the condition that it is still what the plan saw, so a
    document changed since then ends the fix here, before anything is written.
    """
    originals: dict[int, RawBSONDocument] = {}
    for index, operation in enumerate(operations):
        if operation.action not in CHANGING_ACTIONS:
            continue
        assert operation.before is not None  # replace and delete always carry it
        original = await raw_collection(db, operation.collection).find_one(
            unchanged_filter(operation.document_id, operation.before),
            session=session,
            comment=COMMENT,
        )
        if original is None:
            raise _conflict(operation)
        originals[index] = original
    return originals


async def write_backups(
    db: Database,
    plan: FixPlan,
    fix_id: str,
    originals: Mapping[int, RawBSONDocument],
    session: AsyncClientSession | None,
) -> None:
    operations = [op for op in plan.operations if op.action in DOCUMENT_ACTIONS]
    backups = [
        {
            "fix_id": fix_id,
            "rule": plan.violation.rule,
            "violation_id": plan.violation.id,
            "collection": operations[index].collection,
            "document_id": operations[index].document_id,
            "document": original,
            "time": now(),
        }
        for index, original in sorted(originals.items())
    ]
    if backups:
        await db[BACKUPS].insert_many(backups, session=session, comment=COMMENT)


async def apply_operation(
    db: Database,
    operation: Operation,
    original: RawBSONDocument | None,
    session: AsyncClientSession | None,
) -> None:
    """One write of a fix; a replace or delete only matches `original`'s bytes."""
    collection = db[operation.collection]
    if operation.action == "insert":
        await collection.insert_one(
            dict(operation.after or {}), session=session, comment=COMMENT
        )
        return

    assert original is not None  # read for every replace and delete
    condition = unchanged_filter(operation.document_id, original)
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
        raise _conflict(operation)


def _conflict(operation: Operation) -> FixConflictError:
    return FixConflictError(
        f"Document {to_json_text(operation.document_id)} of {operation.collection} "
        "changed after the fix was planned; nothing was written."
    )


async def read_backups(
    db: Database, fix_id: str
) -> dict[tuple[str, str], RawBSONDocument]:
    """A fix's backups as raw BSON, by collection and document id."""
    cursor = raw_collection(db, BACKUPS).find({"fix_id": fix_id}, comment=COMMENT)
    return {
        _key(backup["collection"], backup["document_id"]): backup["document"]
        async for backup in cursor
    }


async def undo_partial(
    db: Database,
    operations: Sequence[Mapping[str, Any]],
    backups: Mapping[tuple[str, str], RawBSONDocument],
) -> int:
    """Undo whatever of an unfinished fix reached the database; count the undos.

    Each write is undone only where it visibly happened: an inserted copy is
    removed while it is still exactly as inserted, a deleted document is put
    back from its backup while its `_id` is free, and a replaced document gets
    its backup back while it is still exactly the replacement. A document that
    someone changed since is left as they left it.
    """
    undone = 0
    for operation in reversed(operations):
        action = operation["action"]
        collection = db[operation["collection"]]
        document_id = operation["document_id"]
        original = backups.get(_key(operation["collection"], document_id))
        if action == "insert":
            result = await collection.delete_one(
                unchanged_filter(document_id, operation["after"]), comment=COMMENT
            )
            undone += result.deleted_count
        elif action == "delete" and original is not None:
            if await collection.count_documents({"_id": document_id}) == 0:
                await collection.insert_one(original, comment=COMMENT)
                undone += 1
        elif action == "replace" and original is not None:
            replaced = await collection.replace_one(
                unchanged_filter(document_id, operation["after"]),
                original,
                comment=COMMENT,
            )
            undone += replaced.modified_count
    return undone


async def recover_interrupted_fixes(db: Database) -> list[dict[str, Any]]:
    """Undo the fixes a crash cut short on a server without transactions.

    Such a fix still has status `applying`. Its writes are undone from its
    backups and its status becomes `interrupted`, so that the violation is
    found again and fixed afresh. Returns the records it recovered.
    """
    recovered = []
    cursor = db[FIXES].find({"status": "applying"}, comment=COMMENT).sort("_id", 1)
    async for record in cursor:
        backups = await read_backups(db, record["_id"])
        undone = await undo_partial(db, record["operations"], backups)
        changes = {"status": "interrupted", "recovered_at": now(), "undone": undone}
        await db[FIXES].update_one(
            {"_id": record["_id"], "status": "applying"},
            {"$set": changes},
            comment=COMMENT,
        )
        recovered.append({**record, **changes})
    return recovered


async def rollback_fix(
    client: AsyncMongoClient[Any], db: Database, fix_id: str, *, use_transaction: bool
) -> dict[str, Any]:
    """Undo an applied fix from its backups; return the updated audit record."""
    record = await db[FIXES].find_one({"_id": fix_id}, comment=COMMENT)
    if record is None:
        raise FixError(f"There is no fix with id {fix_id}.", fix_id=fix_id)
    if record.get("status") != "applied":
        raise FixError(
            f"Fix {fix_id} cannot be rolled back: its status is "
            f"{record.get('status')!r}, and only applied fixes have changes to undo.",
            fix_id=fix_id,
        )
    backups = await read_backups(db, fix_id)

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
    backups: Mapping[tuple[str, str], RawBSONDocument],
    session: AsyncClientSession | None,
) -> None:
    """Undo one write of an applied fix, restoring the backup's exact bytes."""
    action = operation["action"]
    collection = db[operation["collection"]]
    document_id = operation["document_id"]
    if action == "insert":
        await collection.delete_one(
            {"_id": document_id}, session=session, comment=COMMENT
        )
        return
    if action not in CHANGING_ACTIONS:
        return

    original = backups.get(_key(operation["collection"], document_id))
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
