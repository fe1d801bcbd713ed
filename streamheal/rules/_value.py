"""What the rules about a single field's value share: `allowed`, `type`,
`range` and `pattern`.

Each kind only says which value is bad, as an aggregation expression; the
pipeline around it, the violation and the fixes are the same for all four.
An absent or null field is never bad here: missing values are `required`'s
question, and answering it twice would queue one problem as two violations.
"""

from __future__ import annotations

import datetime as dt
from abc import abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from streamheal._bson import to_json_text, to_json_value
from streamheal.errors import FixError
from streamheal.rules._base import (
    Database,
    Document,
    FieldValueError,
    FixPlan,
    RuleSpec,
    Violation,
)
from streamheal.rules._document import (
    DocumentRule,
    plan_move,
    plan_replace,
    set_path,
)


Expression = dict[str, Any]

# The fields the pipeline adds to each row it returns.
VALUE = "_value"
BAD = "_bad"
IS_ARRAY = "_is_array"
BSON_TYPE = "_type"


class ValueSpec(RuleSpec):
    """Fields shared by the kinds that judge one field's value."""

    field: str = Field(min_length=1)
    fix: Literal["set_default", "quarantine"] = "quarantine"
    default: Any = None

    @field_validator("default", mode="before")
    @classmethod
    def _default_date(cls, default: Any) -> Any:
        return as_datetime(default)

    @model_validator(mode="after")
    def _default_given(self) -> ValueSpec:
        if self.fix == "set_default" and "default" not in self.model_fields_set:
            raise FieldValueError(
                "default", "fix: set_default needs a `default` value to set"
            )
        return self

    def expectation(self) -> str:
        """What an accepted value looks like, to finish a sentence."""
        raise NotImplementedError(f"{type(self).__name__} must say what it accepts")


def as_datetime(value: Any) -> Any:
    """A YAML date (2024-01-01) as midnight UTC of that day; anything else as is.

    BSON has no date without a time, and midnight UTC is what a user writing
    the day means.
    """
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
    return value


def judged_values(value: Any, *, elements: bool = True) -> list[Any]:
    """The values a kind judges when a field holds `value`.

    Null is never judged (see the module's docstring); an array is judged
    element by element, nulls skipped, when the kind judges elements.
    """
    if elements and isinstance(value, list):
        return [item for item in value if item is not None]
    return [] if value is None else [value]


def refuse_default(
    default: Any,
    rejected: list[Any],
    reason: str,
    expectation: str,
    *,
    elements: bool = True,
) -> FieldValueError:
    """The rule-file error for a `default` that the rule itself would reject.

    Setting such a default cannot end the violation; the fixer would repair
    the document again every time it is found.
    """
    if elements and isinstance(default, list):
        shown = ", ".join(to_json_text(value) for value in rejected)
        return FieldValueError(
            "default",
            f"the default {to_json_text(default)} holds {shown}, which {reason}; "
            f"every element must be {expectation}",
        )
    return FieldValueError(
        "default",
        f"the default {to_json_text(default)} {reason}; it must be {expectation}",
    )


def is_present(value: Any) -> Expression:
    """True when an expression is neither null nor missing."""
    return {"$ne": [{"$ifNull": [value, None]}, None]}


def is_string(value: Any) -> Expression:
    return {"$eq": [{"$type": value}, "string"]}


def value_at(document: Document, path: str) -> Any:
    """The value at a path through sub-documents (not arrays), or None.

    Fixes rewrite a field with `set_path`, which cannot reach into arrays, so
    they read the value the same way.
    """
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class ValueRule(DocumentRule):
    """A rule that finds documents whose field holds a value it does not accept.

    An array is judged element by element (a null element is skipped) unless
    the kind judges whole values, as `type` does: an array's type is array.
    """

    spec: ValueSpec
    judges_elements: ClassVar[bool] = True

    @abstractmethod
    def is_bad(self, value: Any) -> Expression:
        """An expression that is true when `value` (never null) is not accepted."""

    def expectation(self) -> str:
        """What an accepted value looks like, to finish a sentence."""
        return self.spec.expectation()

    def describe(self) -> str:
        return f"{self.collection}.{self.spec.field} must be {self.expectation()}"

    def describe_fix(self) -> str:
        if self.spec.fix == "set_default":
            default = to_json_text(self.spec.default)
            return f"set {self.spec.field} to {default} in {self.collection}"
        return f"move the document to {self.collection}_quarantine"

    def pipeline(self) -> list[dict[str, Any]]:
        value = f"${VALUE}"
        scalar_bad = {
            "$cond": [{"$and": [is_present(value), self.is_bad(value)]}, [value], []]
        }
        if self.judges_elements:
            element_is_bad = {"$and": [is_present("$$this"), self.is_bad("$$this")]}
            elements_bad = {"$filter": {"input": value, "cond": element_is_bad}}
            bad: Expression = {"$cond": [{"$isArray": value}, elements_bad, scalar_bad]}
        else:
            bad = scalar_bad
        return [
            {"$match": {self.spec.field: {"$exists": True}}},
            {"$project": {VALUE: f"${self.spec.field}"}},
            {
                "$project": {
                    VALUE: 1,
                    BAD: bad,
                    IS_ARRAY: {"$isArray": value},
                    BSON_TYPE: {"$type": value},
                }
            },
            {"$match": {BAD: {"$ne": []}}},
        ]

    def violation_from_row(self, row: Document) -> Violation:
        field = self.spec.field
        if self.judges_elements and row[IS_ARRAY]:
            bad = row[BAD]
            description = (
                f"{field} holds {to_json_text(bad)}; every element must be "
                f"{self.expectation()}"
            )
            return self.document_violation(row, to_json_value(bad), description)

        value = row[VALUE]
        description = (
            f"{field} is {to_json_text(value)} ({row[BSON_TYPE]}); it must be "
            f"{self.expectation()}"
        )
        return self.document_violation(row, to_json_value(value), description)

    async def plan_fix(self, db: Database, violation: Violation) -> FixPlan:
        document = await self.load_subject(db, violation)
        if self.spec.fix == "quarantine":
            target = f"{self.collection}_quarantine"
            return plan_move(self, violation, document, target, "quarantine")
        if self.spec.fix == "set_default":
            after = set_path(document, self.spec.field, self.spec.default)
            summary = f"set {self.spec.field} to {to_json_text(self.spec.default)}"
            return plan_replace(
                self, violation, document, after, "set_default", summary
            )
        return self.plan_other_fix(violation, document)

    def plan_other_fix(self, violation: Violation, document: Document) -> FixPlan:
        """A kind's own fix; only `type` has one (`convert`)."""
        raise FixError(f"Rule {self.name} has no fix named {self.spec.fix!r}.")
