"""`reference`: documents that point at something that is not there.

An order whose user was deleted is an orphan. The rule looks up each
reference in the parent collection on the server; a field holding an array
is checked element by element, and a null reference points nowhere on
purpose, so it is never an orphan. Orphans appear through writes to either
side: a child written with a bad reference, or a parent deleted or changed
under its children.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from streamheal._bson import get_path, to_json_text, to_json_value
from streamheal.errors import FixError
from streamheal.rules._base import (
    COMMENT,
    Database,
    Document,
    FixPlan,
    RuleSpec,
    Severity,
    Violation,
    Write,
    check_collection_name,
)
from streamheal.rules._document import (
    IDS_PER_CHECK,
    DocumentRule,
    plan_delete,
    plan_move,
    plan_replace,
    set_path,
    unset_path,
)
from streamheal.rules._value import value_at


# Fields the pipeline adds to each row it returns.
MATCHED = "_matched"
DANGLING = "_dangling"
IS_ARRAY = "_is_array"


class ReferenceSpec(RuleSpec):
    kind: Literal["reference"]
    field: str = Field(min_length=1)
    references: str = Field(min_length=1)
    fix: Literal["archive", "delete", "unset"] = "archive"

    @field_validator("references")
    @classmethod
    def _collection_and_field(cls, references: str) -> str:
        collection, dot, field = references.partition(".")
        if not collection or (dot and not field):
            raise ValueError(
                f"expected <collection> or <collection>.<field>, not {references!r}"
            )
        check_collection_name(collection)
        return references

    @property
    def parent(self) -> str:
        """The referenced collection (a dot in its name is read as the field's)."""
        return self.references.partition(".")[0]

    @property
    def parent_field(self) -> str:
        return self.references.partition(".")[2] or "_id"


def touches(changed: frozenset[str] | None, path: str) -> bool:
    """Whether an update that changed these paths may have changed `path`."""
    if changed is None:
        return True
    return any(
        name == path or name.startswith(f"{path}.") or path.startswith(f"{name}.")
        for name in changed
    )


class ReferenceRule(DocumentRule):
    kind: ClassVar[str] = "reference"
    default_severity: ClassVar[Severity] = Severity.HIGH
    spec: ReferenceSpec

    def watched_collections(self) -> frozenset[str]:
        return frozenset({self.collection, self.spec.parent})

    def describe(self) -> str:
        return (
            f"{self.collection}.{self.spec.field} must point at an existing "
            f"{self.spec.parent}.{self.spec.parent_field}"
        )

    def describe_fix(self) -> str:
        if self.spec.fix == "unset":
            return f"remove the dangling references from {self.spec.field}"
        if self.spec.fix == "archive":
            return f"move the document to {self.collection}_orphaned"
        return f"delete the document from {self.collection}"

    def pipeline(self) -> list[dict[str, Any]]:
        field = f"${self.spec.field}"
        # The values that exist, as one list. A parent holding an array is
        # matched by the array and by each element, as a query matches it.
        # ($$this.referenced inside $reduce, not the path "$_matched.referenced",
        # which SecantusDB does not resolve over an array of sub-documents.)
        referenced = "$$this.referenced"
        existing = {
            "$reduce": {
                "input": f"${MATCHED}",
                "initialValue": [],
                "in": {
                    "$concatArrays": [
                        "$$value",
                        [referenced],
                        {"$cond": [{"$isArray": referenced}, referenced, []]},
                    ]
                },
            }
        }
        references = {"$cond": [{"$isArray": field}, field, [field]]}
        is_dangling = {
            "$and": [
                {"$ne": ["$$this", None]},
                {"$not": [{"$in": ["$$this", "$$existing"]}]},
            ]
        }
        return [
            # Not `$ne: null`: it would drop an array that holds a null too.
            {"$match": {self.spec.field: {"$exists": True}}},
            {
                "$lookup": {
                    "from": self.spec.parent,
                    "localField": self.spec.field,
                    "foreignField": self.spec.parent_field,
                    "pipeline": [
                        {
                            "$project": {
                                "_id": 0,
                                "referenced": f"${self.spec.parent_field}",
                            }
                        }
                    ],
                    "as": MATCHED,
                }
            },
            {
                "$project": {
                    DANGLING: {
                        "$let": {
                            "vars": {"existing": existing},
                            "in": {
                                "$filter": {"input": references, "cond": is_dangling}
                            },
                        }
                    },
                    IS_ARRAY: {"$isArray": field},
                }
            },
            {"$match": {DANGLING: {"$ne": []}}},
        ]

    def violation_from_row(self, row: Document) -> Violation:
        dangling = list(row[DANGLING])
        key = dangling if row[IS_ARRAY] else dangling[0]
        target = f"{self.spec.parent}.{self.spec.parent_field}"
        description = f"{self.spec.field} {to_json_text(key)} matches no {target}"
        return self.document_violation(
            row, to_json_value(key), description, dangling=dangling
        )

    async def check_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        found = {v.id: v for v in await super().check_writes(db, writes)}
        for violation in await self._check_parent_writes(db, writes):
            found.setdefault(violation.id, violation)
        return list(found.values())

    async def _check_parent_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        """Children of the parents that the writes deleted or changed."""
        parent_writes = [w for w in writes if w.collection == self.spec.parent]
        if self.spec.parent_field == "_id":
            # An _id never changes: only a delete can take a value away, and
            # its document_id is that value.
            lost = [w.document_id for w in parent_writes if w.operation == "delete"]
        else:
            lost = []
            for write in parent_writes:
                if write.operation == "insert":
                    continue
                if write.operation == "update" and not touches(
                    write.changed_fields, self.spec.parent_field
                ):
                    continue
                if write.before is None:
                    # Without the pre-image (changeStreamPreAndPostImages off)
                    # the lost value is unknown; only a sweep can tell.
                    return [violation async for violation in self.sweep(db)]
                lost += _flatten(get_path(write.before, self.spec.parent_field))
        return await self.check_references(
            db, [value for value in lost if value is not None]
        )

    async def check_references(
        self, db: Database, values: Sequence[Any]
    ) -> list[Violation]:
        """The orphans among children that point at any of `values`."""
        found: list[Violation] = []
        for start in range(0, len(values), IDS_PER_CHECK):
            chunk = list(values[start : start + IDS_PER_CHECK])
            pipeline = [{"$match": {self.spec.field: {"$in": chunk}}}, *self.pipeline()]
            cursor = await db[self.collection].aggregate(pipeline, comment=COMMENT)
            found += [self.violation_from_row(row) async for row in cursor]
        return found

    def is_touched_by(self, violation: Violation, writes: Sequence[Write]) -> bool:
        """A parent written may be the one an orphan was missing."""
        return super().is_touched_by(violation, writes) or any(
            write.collection == self.spec.parent and write.operation != "delete"
            for write in writes
        )

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        document = await self.load_subject(db, violation)
        if self.spec.fix == "archive":
            target = f"{self.collection}_orphaned"
            return plan_move(self, violation, document, target, "archive")
        if self.spec.fix == "delete":
            return plan_delete(self, violation, document)
        return await self._plan_unset(db, violation, document)

    async def _plan_unset(
        self, db: Database, violation: Violation, document: Document
    ) -> FixPlan:
        """Remove the dangling references as they are now, keeping the rest."""
        current = await self.check_ids(db, [document["_id"]])
        if not current:
            raise FixError(
                f"Document {to_json_text(document['_id'])} of {self.collection} "
                "no longer holds a dangling reference."
            )
        dangling = current[0].details["dangling"]
        value = value_at(document, self.spec.field)
        if isinstance(value, list):
            # Compared as BSON text: in Python True == 1, in MongoDB it is not.
            unwanted = {to_json_text(item) for item in dangling}
            kept = [item for item in value if to_json_text(item) not in unwanted]
            after = set_path(document, self.spec.field, kept)
            summary = f"remove {to_json_text(dangling)} from {self.spec.field}"
        elif value is not None:
            after = unset_path(document, self.spec.field)
            summary = f"unset {self.spec.field}"
        else:
            raise FixError(
                f"{self.spec.field} of document {to_json_text(document['_id'])} runs "
                "through an array; archive or delete it instead."
            )
        return plan_replace(self, current[0], document, after, "unset", summary)


def _flatten(values: list[Any]) -> list[Any]:
    """Values at a path, and the elements of any array among them."""
    flat: list[Any] = []
    for value in values:
        flat += [value, *value] if isinstance(value, list) else [value]
    return flat
