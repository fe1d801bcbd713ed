"""`unique`: documents that share a key they should not share.

A violation is a whole group of duplicates, not one document: its subject is
the shared key, so every write that adds to or takes from the group updates
the same violation. The sweep groups the collection by the key on the server;
the per-write check asks the same question narrowed to the keys of the written
documents, so the two agree group for group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from streamheal._bson import to_json_text, to_json_value
from streamheal.errors import FixError
from streamheal.rules._base import (
    COMMENT,
    Database,
    FixPlan,
    Operation,
    Rule,
    RuleSpec,
    Severity,
    StrictModel,
    Violation,
    Write,
    written_ids,
)
from streamheal.rules._document import IDS_PER_CHECK, plan_move


Expression = Any
NORMALIZERS: dict[str, Callable[[Expression], Expression]] = {
    "lowercase": lambda value: {"$toLower": value},
    "trim": lambda value: {"$trim": {"input": value}},
}


class KeepFirstBy(StrictModel):
    """Keep the document that sorts first by a field (then by `_id`).

    A document lacking the field sorts first, as MongoDB sorts null lowest.
    """

    first_by: str = Field(min_length=1)


class UniqueSpec(RuleSpec):
    kind: Literal["unique"]
    keys: list[str] = Field(min_length=1)
    normalize: list[Literal["lowercase", "trim"]] = Field(default_factory=list)
    keep: Literal["oldest", "newest"] | KeepFirstBy = "oldest"
    fix: Literal["delete", "archive"] = "delete"

    @field_validator("keys")
    @classmethod
    def _distinct_keys(cls, keys: list[str]) -> list[str]:
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} is listed more than once")
        return keys

    @field_validator("keep", mode="before")
    @classmethod
    def _keep_choice(cls, keep: Any) -> Any:
        # One sentence instead of pydantic's error for each arm of the union.
        if keep in ("oldest", "newest"):
            return keep
        if isinstance(keep, dict) and list(keep) == ["first_by"]:
            if isinstance(keep["first_by"], str) and keep["first_by"]:
                return keep
        raise ValueError(
            f"expected oldest, newest or {{first_by: <field>}}, not {keep!r}"
        )


class UniqueRule(Rule):
    kind: ClassVar[str] = "unique"
    default_severity: ClassVar[Severity] = Severity.HIGH
    spec: UniqueSpec

    def describe(self) -> str:
        return (
            f"no two {self.collection} documents may share {', '.join(self.spec.keys)}"
        )

    def describe_fix(self) -> str:
        keep = self.spec.keep
        kept = f"first by {keep.first_by}" if isinstance(keep, KeepFirstBy) else keep
        if self.spec.fix == "archive":
            return (
                f"keep the {kept} document, move the others to "
                f"{self.collection}_duplicates"
            )
        return f"keep the {kept} document, delete the others"

    # The question, as stages.

    def _slots(self) -> list[str]:
        """Names of the group key's parts (a key's path may hold dots)."""
        return [f"k{index}" for index in range(len(self.spec.keys))]

    def _normalized(self, path: str) -> Expression:
        expression: Expression = f"${path}"
        if not self.spec.normalize:
            return expression
        for name in self.spec.normalize:
            expression = NORMALIZERS[name](expression)
        is_string = {"$eq": [{"$type": f"${path}"}, "string"]}
        return {"$cond": [is_string, expression, f"${path}"]}

    def group_key(self) -> dict[str, Expression]:
        """The expression of a document's key; absent and null both read as null."""
        return {
            slot: {"$ifNull": [self._normalized(path), None]}
            for slot, path in zip(self._slots(), self.spec.keys, strict=True)
        }

    def _sort(self) -> dict[str, int]:
        keep = self.spec.keep
        if isinstance(keep, KeepFirstBy):
            return {keep.first_by: 1, "_id": 1}
        return {"_id": 1 if keep == "oldest" else -1}

    def _narrowing(self, keys: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A filter that keeps every document whose key is one of `keys`."""
        if self.spec.normalize:
            return {"$expr": {"$in": [self.group_key(), {"$literal": list(keys)}]}}
        # Equality per field lets the server use an index on the keys; it may
        # match more (an array holding the value), which the grouping drops.
        return {
            "$or": [
                {
                    "$and": [
                        _matching_key_part(path, key[slot])
                        for slot, path in zip(
                            self._slots(), self.spec.keys, strict=True
                        )
                    ]
                }
                for key in keys
            ]
        }

    def pipeline(
        self, keys: Sequence[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The sweep's grouping, or the same grouping for the given keys only."""
        present = [{path: {"$exists": True}} for path in self.spec.keys]
        stages: list[dict[str, Any]] = [{"$match": {"$or": present}}]
        wanted: dict[str, Any] = {"$ne": dict.fromkeys(self._slots())}
        if keys is not None:
            stages.append({"$match": self._narrowing(keys)})
            wanted["$in"] = list(keys)
        return [
            *stages,
            {"$sort": self._sort()},
            {
                "$group": {
                    "_id": self.group_key(),
                    "documents": {"$push": "$_id"},
                    "count": {"$sum": 1},
                }
            },
            # Documents missing every key share the all-null key, yet they are
            # not duplicates of each other.
            {"$match": {"count": {"$gt": 1}, "_id": wanted}},
        ]

    def violation_from_row(self, row: dict[str, Any]) -> Violation:
        group_key = row["_id"]
        shared = ", ".join(
            f"{path}={to_json_text(group_key[slot])}"
            for slot, path in zip(self._slots(), self.spec.keys, strict=True)
        )
        by_field = {
            path: group_key[slot]
            for slot, path in zip(self._slots(), self.spec.keys, strict=True)
        }
        documents = row["documents"]
        description = f"{len(documents)} documents share {shared}"
        return self.make_violation(
            to_json_text(group_key),
            documents,
            to_json_value(by_field),
            description,
            group_key=group_key,
        )

    async def _run(
        self, db: Database, pipeline: list[dict[str, Any]]
    ) -> list[Violation]:
        cursor = await db[self.collection].aggregate(pipeline, comment=COMMENT)
        return [self.violation_from_row(row) async for row in cursor]

    # The question, asked.

    async def sweep(self, db: Database) -> AsyncIterator[Violation]:
        cursor = await db[self.collection].aggregate(
            self.pipeline(), allowDiskUse=True, comment=COMMENT
        )
        async with cursor:
            async for row in cursor:
                yield self.violation_from_row(row)

    async def keys_of(self, db: Database, ids: Sequence[Any]) -> list[dict[str, Any]]:
        """The distinct group keys of the given documents, all-null keys left out."""
        empty = dict.fromkeys(self._slots())
        keys: list[dict[str, Any]] = []
        for start in range(0, len(ids), IDS_PER_CHECK):
            chunk = list(ids[start : start + IDS_PER_CHECK])
            pipeline = [
                {"$match": {"_id": {"$in": chunk}}},
                {"$group": {"_id": self.group_key()}},
            ]
            cursor = await db[self.collection].aggregate(pipeline, comment=COMMENT)
            keys += [row["_id"] async for row in cursor if row["_id"] != empty]
        return keys

    async def check_keys(
        self, db: Database, keys: Sequence[dict[str, Any]]
    ) -> list[Violation]:
        """The groups of duplicates among the given keys."""
        found: dict[str, Violation] = {}
        for start in range(0, len(keys), IDS_PER_CHECK):
            chunk = keys[start : start + IDS_PER_CHECK]
            for violation in await self._run(db, self.pipeline(chunk)):
                found[violation.id] = violation
        return list(found.values())

    async def check_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        ids = written_ids(writes, self.collection)
        if not ids:
            return []
        return await self.check_keys(db, await self.keys_of(db, ids))

    async def recheck(self, db: Database, violation: Violation) -> Violation | None:
        found = await self.check_keys(db, [violation.details["group_key"]])
        return found[0] if found else None

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        current = await self.recheck(db, violation)
        if current is None:
            raise FixError(
                f"The documents of {self.collection} no longer share "
                f"{to_json_text(violation.details['group_key'])}; nothing to fix."
            )

        kept, *others = current.documents
        cursor = db[self.collection].find({"_id": {"$in": others}}, comment=COMMENT)
        by_id = {to_json_text(document["_id"]): document async for document in cursor}
        # A duplicate deleted since the recheck needs no operation.
        duplicates = [
            by_id[text] for text in map(to_json_text, others) if text in by_id
        ]

        operations: list[Operation] = []
        if self.spec.fix == "archive":
            target = f"{self.collection}_duplicates"
            for document in duplicates:
                operations += plan_move(
                    self, current, document, target, "archive"
                ).operations
            verb = f"move {len(duplicates)} to {target}"
        else:
            for document in duplicates:
                operations.append(
                    Operation(
                        "delete", self.collection, document["_id"], before=document
                    )
                )
            verb = f"delete {len(duplicates)}"
        summary = f"keep {to_json_text(kept)}, {verb}"
        return FixPlan(current, self.spec.fix, tuple(operations), summary)


def _matching_key_part(path: str, value: Any) -> dict[str, Any]:
    """A query filter matching at least every document whose `$path` is `value`.

    Query equality and the aggregation path differ once a dotted path crosses
    an array: `$n.v` of `{n: [{v: 1}]}` is `[1]`, which `{"n.v": [1]}` does not
    match. Such a value is always an array, so for an array value the filter
    also takes every document where some prefix of the path is an array; the
    exact grouping after it drops what does not belong.
    """
    equal = {path: {"$eq": value}}
    prefixes = [path.rsplit(".", depth)[0] for depth in range(1, path.count(".") + 1)]
    if not isinstance(value, list) or not prefixes:
        return equal
    crossing = [{prefix: {"$type": "array"}} for prefix in prefixes]
    return {"$or": [equal, *crossing]}
