"""Rules whose violations are single documents, and the fixes they share.

Each such rule is one aggregation pipeline that keeps the violating documents
of its collection. The sweep runs it over the whole collection; the per-write
check runs the same pipeline after a `$match` on the written `_id`s, so the
two can only disagree if the data changed between them.
"""

from __future__ import annotations

import copy
import datetime as dt
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from streamheal._bson import to_json_text
from streamheal.errors import FixError
from streamheal.rules._base import (
    COMMENT,
    Database,
    Document,
    FixPlan,
    Operation,
    Rule,
    Violation,
    Write,
    written_ids,
)


IDS_PER_CHECK = 1000
METADATA_FIELD = "_streamheal"


class DocumentRule(Rule):
    """A rule that finds bad documents one by one with a pipeline."""

    @abstractmethod
    def pipeline(self) -> list[dict[str, Any]]:
        """Stages that keep only the violating documents of the collection."""

    @abstractmethod
    def violation_from_row(self, row: Document) -> Violation:
        """Build the violation from one document the pipeline returned."""

    async def sweep(self, db: Database) -> AsyncIterator[Violation]:
        cursor = await db[self.collection].aggregate(
            self.pipeline(), allowDiskUse=True, comment=COMMENT
        )
        async with cursor:
            async for row in cursor:
                yield self.violation_from_row(row)

    async def check_ids(self, db: Database, ids: Sequence[Any]) -> list[Violation]:
        """The sweep's question, narrowed to the given `_id`s."""
        found: list[Violation] = []
        for start in range(0, len(ids), IDS_PER_CHECK):
            chunk = list(ids[start : start + IDS_PER_CHECK])
            pipeline = [{"$match": {"_id": {"$in": chunk}}}, *self.pipeline()]
            cursor = await db[self.collection].aggregate(pipeline, comment=COMMENT)
            found += [self.violation_from_row(row) async for row in cursor]
        return found

    async def check_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        ids = written_ids(writes, self.collection)
        if not ids:
            return []
        return await self.check_ids(db, ids)

    async def recheck(self, db: Database, violation: Violation) -> Violation | None:
        found = await self.check_ids(db, violation.documents[:1])
        return found[0] if found else None

    def document_violation(
        self, row: Document, key: Any, description: str, **details: Any
    ) -> Violation:
        """The violation for one document, its subject being the `_id`."""
        document_id = row["_id"]
        return self.make_violation(
            to_json_text(document_id), [document_id], key, description, **details
        )

    async def load_subject(self, db: Database, violation: Violation) -> Document:
        """The violating document as it is now; a fix plans against it."""
        document = await db[self.collection].find_one(
            {"_id": violation.documents[0]}, comment=COMMENT
        )
        if document is None:
            raise FixError(
                f"Document {to_json_text(violation.documents[0])} of collection "
                f"{self.collection} no longer exists."
            )
        return document


def plan_move(
    rule: Rule, violation: Violation, document: Document, target: str, action: str
) -> FixPlan:
    """Copy a document into `target` with a note of why, then delete it."""
    archived = dict(document)
    archived[METADATA_FIELD] = {
        "rule": rule.name,
        "kind": rule.kind,
        "violation_id": violation.id,
        "reason": violation.description,
        "source_collection": rule.collection,
        "moved_at": dt.datetime.now(dt.UTC),
    }
    operations = (
        Operation("insert", target, document["_id"], after=archived),
        Operation("delete", rule.collection, document["_id"], before=document),
    )
    summary = f"{action} document {to_json_text(document['_id'])} to {target}"
    return FixPlan(violation, action, operations, summary)


def plan_delete(rule: Rule, violation: Violation, document: Document) -> FixPlan:
    """Remove a document (its backup keeps it recoverable)."""
    operation = Operation("delete", rule.collection, document["_id"], before=document)
    summary = f"delete document {to_json_text(document['_id'])}"
    return FixPlan(violation, "delete", (operation,), summary)


def plan_replace(
    rule: Rule,
    violation: Violation,
    document: Document,
    after: Document,
    action: str,
    summary: str,
) -> FixPlan:
    """Replace a document with a repaired copy of itself."""
    operation = Operation(
        "replace", rule.collection, document["_id"], before=document, after=after
    )
    return FixPlan(violation, action, (operation,), summary)


def set_path(document: Document, path: str, value: Any) -> dict[str, Any]:
    """A copy of the document with `path` set, creating sub-documents as needed."""
    result = copy.deepcopy(dict(document))
    target: dict[str, Any] = result
    parts = path.split(".")
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[parts[-1]] = copy.deepcopy(value)
    return result


def unset_path(document: Document, path: str) -> dict[str, Any]:
    """A copy of the document without `path` (unchanged when it is absent)."""
    result = copy.deepcopy(dict(document))
    target: Any = result
    parts = path.split(".")
    for part in parts[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target.pop(parts[-1], None)
    return result
