"""`required`: documents missing a field the application needs.

Absent, null and (unless `empty_is_missing: false`) the empty string count as
missing. The fix fills in defaults, moves the document to a quarantine
collection, or deletes it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from streamheal._bson import get_path, to_json_text, to_json_value
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
)


# Every BSON type but null, undefined and string, as `$type` names them.
PRESENT_TYPES = (
    "double",
    "object",
    "array",
    "binData",
    "objectId",
    "bool",
    "date",
    "regex",
    "dbPointer",
    "javascript",
    "symbol",
    "javascriptWithScope",
    "int",
    "timestamp",
    "long",
    "decimal",
    "minKey",
    "maxKey",
)
NON_EMPTY_STRING = r"[\s\S]"


class RequiredSpec(RuleSpec):
    kind: Literal["required"]
    fields: list[str] = Field(min_length=1)
    empty_is_missing: bool = True
    fix: Literal["set_default", "quarantine", "delete"] = "quarantine"
    defaults: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _defaults_cover_fields(self) -> RequiredSpec:
        if self.fix == "set_default":
            lacking = [name for name in self.fields if name not in self.defaults]
            if lacking:
                raise FieldValueError(
                    "defaults",
                    "fix: set_default needs a value in `defaults` for every field; "
                    f"none is given for {', '.join(lacking)}",
                )
        return self

    @model_validator(mode="after")
    def _defaults_are_present(self) -> RequiredSpec:
        if self.fix != "set_default":
            return self
        missing = self.missing_values()
        problems: list[str] = []
        for name in self.fields:
            default = self.defaults[name]
            if default not in missing:
                continue
            if default is None:
                reason, allowed = "counts as missing", "a value other than null"
            else:
                reason = "counts as missing while empty_is_missing is true"
                allowed = 'a value other than null and ""'
            # One sentence per field; the loader ends the last one.
            article = "The" if problems else "the"
            problems.append(
                f"{article} default {to_json_text(default)} for {name} {reason}, so "
                f"it would still violate the rule; it must be {allowed}"
            )
        if problems:
            raise FieldValueError("defaults", ". ".join(problems))
        return self

    def missing_values(self) -> list[Any]:
        """The values that count as missing, as well as an absent field."""
        return [None, ""] if self.empty_is_missing else [None]


class RequiredRule(DocumentRule):
    kind: ClassVar[str] = "required"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: RequiredSpec

    def describe(self) -> str:
        return f"{self.collection} documents must have {', '.join(self.spec.fields)}"

    def describe_fix(self) -> str:
        if self.spec.fix == "set_default":
            return f"set the missing fields to their defaults in {self.collection}"
        if self.spec.fix == "quarantine":
            return f"move the document to {self.collection}_quarantine"
        return f"delete the document from {self.collection}"

    def _present(self, name: str) -> dict[str, Any]:
        """A filter for documents that hold a value at `name` that is not missing.

        Written with positive conditions only, because a query condition on a
        path through arrays holds when any one value meets it: `["a", ""]` or
        `[{b: 1}, {}]` has a value, though `{$in: [null, ""]}` matches it too.
        An array at the end of the path is a value, even an empty one.
        """
        types = list(PRESENT_TYPES)
        if not self.spec.empty_is_missing:
            return {name: {"$type": [*types, "string"]}}
        return {
            "$or": [
                {name: {"$type": types}},
                {name: {"$regex": NON_EMPTY_STRING}},
            ]
        }

    def pipeline(self) -> list[dict[str, Any]]:
        conditions = [{"$nor": [self._present(name)]} for name in self.spec.fields]
        projection = {name: 1 for name in self.spec.fields}
        return [{"$match": {"$or": conditions}}, {"$project": projection}]

    def missing_fields(self, document: Document) -> list[str]:
        missing = self.spec.missing_values()
        return [
            name
            for name in self.spec.fields
            if not [value for value in get_path(document, name) if value not in missing]
        ]

    def violation_from_row(self, row: Document) -> Violation:
        missing = self.missing_fields(row) or list(self.spec.fields)
        description = f"missing {', '.join(missing)}"
        return self.document_violation(row, missing, description)

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        document = await self.load_subject(db, violation)
        if self.spec.fix == "quarantine":
            return plan_move(
                self, violation, document, f"{self.collection}_quarantine", "quarantine"
            )
        if self.spec.fix == "delete":
            return plan_delete(self, violation, document)

        after: Document = document
        filled = []
        for name in self.missing_fields(document):
            after = set_path(after, name, self.spec.defaults[name])
            filled.append(f"{name}={to_json_value(self.spec.defaults[name])!r}")
        summary = f"set {', '.join(filled)}" if filled else "nothing to set"
        return plan_replace(self, violation, document, after, "set_default", summary)
