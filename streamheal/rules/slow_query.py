"""`slow_query`: query shapes that the database profiler caught being slow.

Unlike the other kinds, this rule is fed by `system.profile`, not by writes.
Every shape slower than the threshold is one violation; its fix recommends
(or, with `fix: create_index`, creates) the index the ESR guideline suggests,
and never one that an existing index already covers.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from streamheal._bson import to_json_text
from streamheal._duration import Duration
from streamheal.errors import FixError
from streamheal.rules._base import (
    COMMENT,
    Database,
    Document,
    FixPlan,
    Operation,
    Rule,
    RuleSpec,
    Severity,
    Violation,
    Write,
)
from streamheal.rules._query_shape import (
    IndexKeys,
    QueryShape,
    equality_count_of,
    is_covered_by,
    is_ignored,
    recommend_index,
    shape_of,
)


ALL_COLLECTIONS = "*"
DEFAULT_THRESHOLD_S = 0.1
PROFILE_COLLECTION = "system.profile"
MS_PER_S = 1000


class SlowQuerySpec(RuleSpec):
    kind: Literal["slow_query"]
    threshold: Duration = DEFAULT_THRESHOLD_S
    manage_profiler: bool = True
    fix: Literal["recommend", "create_index"] = "recommend"


@dataclass
class ShapeStats:
    """Running totals for one shape; the profiler fields are summed when given.

    `docsExamined` and `nreturned` are documented profiler fields, but a server
    may leave them out (SecantusDB 0.7.0b3 does): they stay None until an
    entry carries them.
    """

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    docs_examined: int | None = None
    returned: int | None = None

    def add(self, entry: Document) -> None:
        millis = entry.get("millis")
        duration_ms = float(millis) if isinstance(millis, int | float) else 0.0
        self.count += 1
        self.total_ms += duration_ms
        self.max_ms = max(self.max_ms, duration_ms)
        self.docs_examined = _add_optional(
            self.docs_examined, entry.get("docsExamined")
        )
        self.returned = _add_optional(self.returned, entry.get("nreturned"))

    @property
    def mean_ms(self) -> float:
        return round(self.total_ms / self.count, 1) if self.count else 0.0


class SlowQueryRule(Rule):
    kind: ClassVar[str] = "slow_query"
    default_severity: ClassVar[Severity] = Severity.LOW
    spec: SlowQuerySpec

    @property
    def threshold_ms(self) -> float:
        return round(self.spec.threshold * MS_PER_S, 3)

    @property
    def slowms(self) -> int:
        """The profiler's whole-millisecond threshold that misses nothing slower."""
        return math.floor(self.threshold_ms)

    @property
    def checks_writes(self) -> bool:
        return False

    def watched_collections(self) -> frozenset[str]:
        """None: writes never create or end a slow query."""
        return frozenset()

    def describe(self) -> str:
        where = (
            "any collection" if self.collection == ALL_COLLECTIONS else self.collection
        )
        return f"operations on {where} must take less than {self.threshold_ms:g} ms"

    def describe_fix(self) -> str:
        if self.spec.fix == "create_index":
            return "create the index recommended for the query shape"
        return "recommend an index for the query shape (changes nothing)"

    def covers(self, collection: str) -> bool:
        return self.collection in (ALL_COLLECTIONS, collection)

    def shape_for(self, entry: Document) -> QueryShape | None:
        """The entry's shape when this rule counts it, else None."""
        millis = entry.get("millis")
        if not isinstance(millis, int | float) or millis < self.threshold_ms:
            return None
        if is_ignored(entry):
            return None
        shape = shape_of(entry)
        if shape is None or not self.covers(shape.collection):
            return None
        return shape

    def violation_for(self, shape: QueryShape, stats: ShapeStats) -> Violation:
        """One shape's violation, with its statistics and recommended index."""
        index = recommend_index(shape)
        description = (
            f"{stats.count} {shape.command} operations on {shape.collection} took "
            f"{stats.mean_ms:g} ms on average, at most {stats.max_ms:g} ms"
        )
        return Violation(
            rule=self.name,
            kind=self.kind,
            collection=shape.collection,
            severity=self.severity,
            subject=shape.text,
            documents=(),
            key=shape.key,
            description=description,
            details={
                "count": stats.count,
                "mean_ms": stats.mean_ms,
                "max_ms": stats.max_ms,
                "docs_examined": stats.docs_examined,
                "returned": stats.returned,
                "recommended_index": [[name, direction] for name, direction in index],
                "equality_fields": equality_count_of(shape),
            },
        )

    async def is_served(self, db: Database, violation: Violation) -> bool:
        """Whether an existing index already serves the shape's recommendation.

        Then the advice has been taken (by streamheal's own `create_index` or
        by a person), and the shape's old profile entries describe a past
        that the index has since changed: the violation no longer holds.
        """
        if not index_keys_of(violation):
            return False
        return await covering_index_of(db, violation) is not None

    async def sweep(self, db: Database) -> AsyncIterator[Violation]:
        """Every slow shape in the whole of `system.profile` that no index serves."""
        found = await self._collect(db, {})
        for shape, stats in found.values():
            violation = self.violation_for(shape, stats)
            if not await self.is_served(db, violation):
                yield violation

    async def check_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        return []

    async def recheck(self, db: Database, violation: Violation) -> Violation | None:
        """The violation while `system.profile` still holds its shape, else None.

        Kept simple on purpose: old entries age out of the capped collection,
        and an index created meanwhile is caught by `plan_fix`.
        """
        namespace = (
            violation.key.get("ns") if isinstance(violation.key, Mapping) else None
        )
        found = await self._collect(db, {"ns": namespace} if namespace else {})
        if violation.subject not in found:
            return None
        current = self.violation_for(*found[violation.subject])
        if await self.is_served(db, current):
            return None
        return current

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        """Recommend or create the index, unless an existing one covers it."""
        keys = index_keys_of(violation)
        if not keys:
            raise FixError(
                f"No index can serve the query shape {violation.subject}: it has no "
                "equality, sort or range field an index could use."
            )

        covering = await covering_index_of(db, violation)
        if covering is not None:
            raise FixError(
                f"Index {covering!r} of collection {violation.collection} already "
                f"covers the recommended index {format_keys(keys)}; nothing to create."
            )

        action: Literal["create_index", "recommend"] = self.spec.fix
        operation = Operation(action, violation.collection, index_keys=keys)
        verb = "create" if action == "create_index" else "recommend"
        summary = f"{verb} index {format_keys(keys)} on {violation.collection}"
        return FixPlan(violation, action, (operation,), summary)

    async def _collect(
        self, db: Database, query: Mapping[str, Any]
    ) -> dict[str, tuple[QueryShape, ShapeStats]]:
        found: dict[str, tuple[QueryShape, ShapeStats]] = {}
        query = {**query, "millis": {"$gte": self.slowms}}
        async for entry in read_profile(db, query):
            shape = self.shape_for(entry)
            if shape is not None:
                _, stats = found.setdefault(shape.text, (shape, ShapeStats()))
                stats.add(entry)
        return found


def read_profile(db: Database, query: Mapping[str, Any]) -> AsyncIterator[Document]:
    """Profile entries matching `query`, oldest first, tagged as streamheal's."""
    cursor = db[PROFILE_COLLECTION].find(dict(query), sort=[("ts", 1)], comment=COMMENT)
    return aiter(cursor)


async def find_covering_index(
    db: Database,
    collection: str,
    keys: IndexKeys,
    sort_fields: Sequence[str],
    *,
    equality_count: int = 0,
) -> str | None:
    """The name of an existing index that already serves `keys`, if any.

    Hidden and partial indexes are passed over: the planner cannot use them
    for every query of the shape.
    """
    cursor = await db[collection].list_indexes(comment=COMMENT)
    async for index in cursor:
        if index.get("hidden") or "partialFilterExpression" in index:
            continue
        if is_covered_by(index["key"], keys, sort_fields, equality_count):
            return str(index["name"])
    return None


async def covering_index_of(db: Database, violation: Violation) -> str | None:
    """The name of an existing index that serves the violation's recommendation."""
    return await find_covering_index(
        db,
        violation.collection,
        index_keys_of(violation),
        sort_fields_of(violation),
        equality_count=int(violation.details.get("equality_fields", 0)),
    )


def index_keys_of(violation: Violation) -> IndexKeys:
    """The recommended index of a violation, back from its JSON form."""
    pairs = violation.details.get("recommended_index") or []
    return tuple((str(name), int(direction)) for name, direction in pairs)


def sort_fields_of(violation: Violation) -> list[str]:
    """The sort fields of a violation's query shape, in order."""
    key = violation.key if isinstance(violation.key, Mapping) else {}
    sort = key.get("sort")
    return list(sort) if isinstance(sort, Mapping) else []


def format_keys(keys: IndexKeys) -> str:
    return to_json_text(dict(keys))


def _add_optional(total: int | None, value: Any) -> int | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return total
    return (total or 0) + int(value)
