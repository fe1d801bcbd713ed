"""`query`: documents matching a filter the user wrote.

Many needs are met without a new kind: any condition a MongoDB query can
state becomes a rule. The fix is an update limited to `$set` and `$unset`,
which streamheal applies to its copy of the document, so that the write is a
conditional replace like every other fix and its backup is exact.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from streamheal._bson import to_json_text, to_json_value
from streamheal.errors import FixError
from streamheal.rules._base import (
    Database,
    Document,
    FieldValueError,
    FixPlan,
    RuleSpec,
    Severity,
    Violation,
)
from streamheal.rules._document import (
    DocumentRule,
    plan_delete,
    plan_move,
    plan_replace,
    set_path,
    unset_path,
)


UPDATE_OPERATORS = ("$set", "$unset")


class QuerySpec(RuleSpec):
    kind: Literal["query"]
    filter: dict[str, Any] = Field(min_length=1)
    fix: Literal["update", "archive", "delete"] = "archive"
    update: dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _update_fits_fix(self) -> QuerySpec:
        if self.fix != "update":
            if self.update is not None:
                raise FieldValueError(
                    "update", "`update` is only used with fix: update"
                )
            return self
        if not self.update:
            raise FieldValueError(
                "update", "fix: update needs an `update` with $set and/or $unset"
            )
        unknown = [name for name in self.update if name not in UPDATE_OPERATORS]
        if unknown:
            raise FieldValueError(
                "update",
                f"update may only use $set and $unset, not {', '.join(unknown)}",
            )
        paths = [path for fields in self.update.values() for path in fields]
        if any(path.split(".")[0] == "_id" for path in paths):
            raise FieldValueError("update", "update cannot change _id")
        unsupported = [path for path in paths if not _is_field_path(path)]
        if unsupported:
            raise FieldValueError(
                "update",
                "update paths must name fields of sub-documents; "
                f"{', '.join(unsupported)} uses an array index, a positional "
                "operator or an empty part",
            )
        conflicts = _overlaps(paths)
        if conflicts:
            raise FieldValueError(
                "update",
                f"update changes {'; '.join(conflicts)}; MongoDB refuses "
                "overlapping paths in one update",
            )
        return self


def _overlaps(paths: list[str]) -> list[str]:
    """Paths named twice, or with a field inside them: MongoDB refuses both."""
    found = {f"{path} twice" for path in paths if paths.count(path) > 1}
    for path in paths:
        found |= {
            f"{path} and {other}" for other in paths if other.startswith(f"{path}.")
        }
    return sorted(found)


def _is_field_path(path: str) -> bool:
    return all(
        part and not part.isdigit() and "$" not in part for part in path.split(".")
    )


def _blocking_part(document: Document, path: str) -> str | None:
    """The first part of `path` that holds something other than a sub-document."""
    value: Any = document
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1]):
        value = value.get(part)
        if value is None:
            return None
        if not isinstance(value, dict):
            return ".".join(parts[: depth + 1])
    return None


class QueryRule(DocumentRule):
    kind: ClassVar[str] = "query"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: QuerySpec

    def describe(self) -> str:
        filter_text = to_json_text(self.spec.filter)
        return f"{self.collection} documents must not match {filter_text}"

    def describe_fix(self) -> str:
        if self.spec.fix == "update":
            return f"update the document with {to_json_text(self.spec.update)}"
        if self.spec.fix == "archive":
            return f"move the document to {self.collection}_archived"
        return f"delete the document from {self.collection}"

    def pipeline(self) -> list[dict[str, Any]]:
        return [{"$match": self.spec.filter}]

    def violation_from_row(self, row: Document) -> Violation:
        description = f"matches {to_json_text(self.spec.filter)}"
        return self.document_violation(
            row, to_json_value(self.spec.filter), description
        )

    def apply_update(self, document: Document) -> dict[str, Any]:
        """The document as the update would leave it."""
        update = self.spec.update or {}
        after = dict(document)
        for path, value in update.get("$set", {}).items():
            after = set_path(after, path, value)
        for path in update.get("$unset", {}):
            after = unset_path(after, path)
        return after

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        document = await self.load_subject(db, violation)
        if self.spec.fix == "archive":
            target = f"{self.collection}_archived"
            return plan_move(self, violation, document, target, "archive")
        if self.spec.fix == "delete":
            return plan_delete(self, violation, document)

        for path in (self.spec.update or {}).get("$set", {}):
            blocking = _blocking_part(document, path)
            if blocking is not None:
                raise FixError(
                    f"Cannot set {path} in document {to_json_text(document['_id'])} "
                    f"of {self.collection}: {blocking} is not a sub-document."
                )
        after = self.apply_update(document)
        summary = f"apply {to_json_text(self.spec.update)}"
        return plan_replace(self, violation, document, after, "update", summary)
