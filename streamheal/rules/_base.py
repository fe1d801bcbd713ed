"""What every rule kind shares: its spec, its violations and its fix plans.

A rule answers one question about the data in two ways (design principle 1):
for the whole collection in a sweep, and for a handful of just-written
documents after a change event. Both are the same aggregation pipeline run by
the server; the per-write check narrows it to the written `_id`s first.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo.asynchronous.database import AsyncDatabase

from streamheal._bson import short_hash, to_json_text


Document = Mapping[str, Any]
Database = AsyncDatabase[dict[str, Any]]

# Every command streamheal sends carries this comment, so its own queries can
# be told apart from the application's in the profiler.
COMMENT = "streamheal"


class Severity(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return {"high": 0, "medium": 1, "low": 2}[self.value]


Mode = Literal["detect", "dry_run", "fix"]


class StrictModel(BaseModel):
    """A rule-file section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldValueError(ValueError):
    """A rule-file mistake in one field, found by a check that reads several.

    The loader reports it at that field's line rather than the rule's.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_collection_name(name: str) -> str:
    """The name, if MongoDB accepts it for an application's collection.

    https://www.mongodb.com/docs/manual/reference/limits/#naming-restrictions
    """
    if "$" in name:
        raise ValueError(f"a collection name cannot contain '$', as {name!r} does")
    if "\0" in name:
        raise ValueError("a collection name cannot contain the null character")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise ValueError(
            f"{name!r} is not a collection name: it starts or ends with a dot, "
            "or has two in a row"
        )
    if name.startswith("system."):
        raise ValueError(
            f"{name!r} is one of the server's own collections; streamheal checks "
            "the application's"
        )
    return name


class RuleSpec(StrictModel):
    """Fields every rule has, whatever its kind."""

    name: str = Field(min_length=1)
    kind: str
    collection: str = Field(min_length=1)
    severity: Severity | None = None
    mode: Mode | None = None
    description: str | None = None

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, collection: str) -> str:
        return check_collection_name(collection)


@dataclass(frozen=True)
class Violation:
    """One instance of bad data: a rule and the subject it is about.

    The id is stable (rule + subject), so the same problem seen again, by the
    stream or by a sweep, is the same violation.
    """

    rule: str
    kind: str
    collection: str
    severity: Severity
    subject: str
    documents: tuple[Any, ...]
    key: Any
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return short_hash(self.rule, self.subject)


@dataclass(frozen=True)
class Write:
    """One write the change stream reported, reduced to what rules need."""

    collection: str
    operation: str
    document_id: Any
    changed_fields: frozenset[str] | None = None
    before: Document | None = None


@dataclass(frozen=True)
class Operation:
    """One write a fix will make. Writes to documents are conditional.

    `before` is the whole document the plan was made against: a replace or a
    delete only matches while the document is still exactly that.
    """

    action: Literal["insert", "replace", "delete", "create_index", "recommend"]
    collection: str
    document_id: Any = None
    before: Document | None = None
    after: Document | None = None
    index_keys: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class FixPlan:
    """What a fix will do to repair one violation."""

    violation: Violation
    action: str
    operations: tuple[Operation, ...]
    summary: str

    @property
    def documents_touched(self) -> int:
        """How many existing documents the fix changes or removes."""
        return len(
            {
                (operation.collection, to_json_text(operation.document_id))
                for operation in self.operations
                if operation.action in ("replace", "delete")
            }
        )

    @property
    def fingerprint(self) -> str:
        """Changes whenever the data the plan is built on changes."""
        parts = [
            to_json_text(
                [op.action, op.collection, op.document_id, op.before, op.after]
            )
            for op in self.operations
        ]
        return short_hash(self.violation.id, *parts)

    @property
    def changes_data(self) -> bool:
        return any(op.action != "recommend" for op in self.operations)


class Rule(ABC):
    """A rule from the file, ready to ask the database its question."""

    kind: ClassVar[str]
    default_severity: ClassVar[Severity] = Severity.MEDIUM

    def __init__(self, spec: RuleSpec, default_mode: Mode) -> None:
        self.spec = spec
        self.mode: Mode = spec.mode or default_mode

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def collection(self) -> str:
        return self.spec.collection

    @property
    def severity(self) -> Severity:
        return self.spec.severity or self.default_severity

    @property
    def description(self) -> str:
        return self.spec.description or self.describe()

    def watched_collections(self) -> frozenset[str]:
        """Collections whose writes can create or end a violation of this rule."""
        return frozenset({self.collection})

    @property
    def checks_writes(self) -> bool:
        """Whether change events feed this rule (the profiler rule says no)."""
        return True

    @abstractmethod
    def describe(self) -> str:
        """A one-line description of what the rule looks for."""

    @abstractmethod
    def describe_fix(self) -> str:
        """A one-line description of what a fix does."""

    @abstractmethod
    def sweep(self, db: Database) -> AsyncIterator[Violation]:
        """Every violation in the database, streamed from the server."""

    @abstractmethod
    async def check_writes(
        self, db: Database, writes: Sequence[Write]
    ) -> list[Violation]:
        """The violations that the given writes could have created."""

    @abstractmethod
    async def recheck(self, db: Database, violation: Violation) -> Violation | None:
        """The violation as the data is now, or None when it no longer holds."""

    @abstractmethod
    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        """The operations that repair the violation, against current data."""

    def is_touched_by(self, violation: Violation, writes: Sequence[Write]) -> bool:
        """Whether the writes may have ended an open violation of this rule."""
        return any(
            write.collection == violation.collection
            and write.document_id in violation.documents
            for write in writes
        )

    def make_violation(
        self,
        subject: str,
        documents: Sequence[Any],
        key: Any,
        description: str,
        **details: Any,
    ) -> Violation:
        return Violation(
            rule=self.name,
            kind=self.kind,
            collection=self.collection,
            severity=self.severity,
            subject=subject,
            documents=tuple(documents),
            key=key,
            description=description,
            details=details,
        )


def written_ids(
    writes: Sequence[Write], collection: str, *, deleted: bool = False
) -> list[Any]:
    """The distinct `_id`s written to a collection (deletes left out unless asked)."""
    seen: dict[str, Any] = {}
    for write in writes:
        if write.collection != collection:
            continue
        if write.operation == "delete" and not deleted:
            continue
        seen.setdefault(to_json_text(write.document_id), write.document_id)
    return list(seen.values())
