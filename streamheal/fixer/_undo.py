"""Undo fixes: a rollback asked for by a person, and recovery after a crash.

Both write back the raw BSON of the backups, so a restored document is the
original byte for byte, and both touch a document only while it is still
what the fix left behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure

from streamheal._bson import to_json_text
from streamheal.errors import FixConflictError, FixError, FixNotFoundError
from streamheal.fixer._records import (
    BACKUPS,
    CHANGING_ACTIONS,
    FIXES,
    document_key,
    now,
    raw_collection,
    unchanged_filter,
)
from streamheal.rules import COMMENT, Database


# https://www.mongodb.com/docs/manual/reference/error-codes/
INDEX_NOT_FOUND = 27


async def read_backups(
    db: Database, fix_id: str
) -> dict[tuple[str, str], RawBSONDocument]:
    """A fix's backups as raw BSON, by collection and document id."""
    cursor = raw_collection(db, BACKUPS).find({"fix_id": fix_id}, comment=COMMENT)
    return {
        document_key(backup["collection"], backup["document_id"]): backup["document"]
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
        original = backups.get(document_key(operation["collection"], document_id))
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
        raise FixNotFoundError(f"There is no fix with id {fix_id}.", fix_id=fix_id)
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
        try:
            await db[index["collection"]].drop_index(index["name"], comment=COMMENT)
        except OperationFailure as exc:
            # Someone dropped it already: the end state is the one we want.
            if exc.code != INDEX_NOT_FOUND:
                raise
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

    original = backups.get(document_key(operation["collection"], document_id))
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
