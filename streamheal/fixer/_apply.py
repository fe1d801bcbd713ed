"""Apply a fix plan with its backups and audit record.

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

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bson import ObjectId, decode, encode
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from streamheal._bson import to_json_text
from streamheal.errors import FixConflictError, FixError
from streamheal.fixer._records import (
    BACKUPS,
    CHANGING_ACTIONS,
    DOCUMENT_ACTIONS,
    FIXES,
    document_key,
    now,
    raw_collection,
    unchanged_filter,
)
from streamheal.fixer._undo import undo_partial
from streamheal.rules import COMMENT, Database, FixPlan, Operation


class StepCallback(Protocol):
    """Told when a fix reaches a step; `operation` numbers the writes from 0."""

    async def __call__(self, step: str, operation: int | None = None) -> None: ...


def new_fix_id() -> str:
    """Fix ids sort by creation time, which `streamheal history` relies on."""
    return str(ObjectId())


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
        record["backups"] = 0
        if record["backed_up"]:
            record["backups"] = await write_backups(
                db, plan, record["_id"], originals, session
            )
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
        record["backups"] = await write_backups(db, plan, fix_id, originals, None)
        for index, operation in enumerate(operations):
            await on_step("apply", index)
            await apply_operation(db, operation, originals.get(index), None)
    except (FixError, PyMongoError) as exc:
        backups = {
            document_key(
                operations[index].collection, operations[index].document_id
            ): raw
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
        {
            "$set": {
                "status": "applied",
                "applied_at": record["applied_at"],
                "backups": record["backups"],
            }
        },
        comment=COMMENT,
    )


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
) -> int:
    """Store the raw original of every document the fix changes; return how many."""
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
    return len(backups)


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
