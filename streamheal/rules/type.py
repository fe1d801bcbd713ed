"""`type`: a field holding a value of a BSON type it should not.

The type is that of the whole value, as the `$type` expression reports it, so
an array is of type `array` whatever its elements are. `fix: convert` repairs
values that were written in the wrong form but mean the right thing, such as
the string "42" in an integer field; anything else needs a person.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any, ClassVar, Literal

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from pydantic import Field, field_validator, model_validator

from streamheal._bson import to_json_text
from streamheal.errors import FixError
from streamheal.rules._base import Document, FixPlan, Severity, Violation
from streamheal.rules._document import plan_replace, set_path
from streamheal.rules._value import (
    Expression,
    ValueRule,
    ValueSpec,
    refuse_default,
    value_at,
)


# The type names `$type` accepts (deprecated ones left out); `number` is the
# alias that stands for the four numeric types.
NUMERIC_TYPES = ("int", "long", "double", "decimal")
TYPE_NAMES = (
    "double", "string", "object", "array", "binData", "objectId", "bool", "date",
    "null", "regex", "javascript", "int", "timestamp", "long", "decimal",
    "minKey", "maxKey", "number",
)  # fmt: skip
INT32_RANGE = range(-(2**31), 2**31)
INT64_RANGE = range(-(2**63), 2**63)
INT64_MAX_DIGITS = 20  # longer text cannot be a long (and int() refuses huge text)
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_NUMBER_TEXT = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# The BSON type the driver stores a value from the rule file as; whole
# numbers (and bool, an int to Python) are decided in `stored_type`.
_STORED_TYPES: tuple[tuple[type, str], ...] = (
    (float, "double"),
    (str, "string"),
    (dict, "object"),
    (list, "array"),
    (dt.datetime, "date"),
    (bytes, "binData"),  # YAML's !!binary
)
# Why a whole number is of the type it is, for the error that names it.
_INTEGER_NOTES = {"int": "it fits in 32 bits", "long": "it does not fit in 32 bits"}


TypeFix = Literal["set_default", "quarantine", "convert"]


class TypeSpec(ValueSpec):
    kind: Literal["type"]
    types: list[str] = Field(min_length=1)
    fix: TypeFix = "quarantine"  # type: ignore[assignment]  # widens the shared choices

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = [name for name in types if name not in TYPE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown BSON type {', '.join(map(repr, unknown))}; expected "
                f"names as $type takes them: {', '.join(TYPE_NAMES)}"
            )
        return types

    @model_validator(mode="after")
    def _default_of_accepted_type(self) -> TypeSpec:
        # Null is never judged, so a null default ends the violation.
        if self.fix != "set_default" or self.default is None:
            return self
        stored = stored_type(self.default)
        if stored is None:
            raise ValueError(
                f"the default {self.default!r} cannot be stored in MongoDB; "
                f"it must be {self.expectation()}"
            )
        if stored not in self.accepted_types():
            note = _INTEGER_NOTES.get(stored)
            reason = f"is stored as {stored}" + (f" ({note})" if note else "")
            raise refuse_default(
                self.default,
                [self.default],
                f"{reason}, so it would still violate the rule",
                self.expectation(),
                elements=False,
            )
        return self

    def expectation(self) -> str:
        return "of type " + " or ".join(self.types)

    def accepted_types(self) -> list[str]:
        """The type names `$type` can report that the field may hold."""
        names: list[str] = []
        for name in self.types:
            names += NUMERIC_TYPES if name == "number" else [name]
        return list(dict.fromkeys(names))


def stored_type(value: Any) -> str | None:
    """The `$type` name of a value from the rule file once the driver stores it.

    None when the driver cannot store it: an integer beyond 64 bits, a set.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if value in INT32_RANGE:
            return "int"
        return "long" if value in INT64_RANGE else None
    if value is None:
        return "null"
    for python_type, name in _STORED_TYPES:
        if isinstance(value, python_type):
            return name
    return None


def convert_value(value: Any, target: str) -> Any:
    """`value` as the BSON type `target`, or None when that would lose something.

    Only text that spells a value exactly converts to it ("42" to 42, "true"
    to True, "4.5" to 4.5) and integers convert to their decimal text.
    """
    if isinstance(value, str):
        is_integer = len(value) <= INT64_MAX_DIGITS and _INTEGER_TEXT.fullmatch(value)
        if target in ("int", "long") and is_integer:
            number = int(value)
            if target == "int" and number in INT32_RANGE:
                return number
            if target == "long" and number in INT64_RANGE:
                return Int64(number)
        if target == "double" and _NUMBER_TEXT.fullmatch(value):
            double = float(value)
            # repr() is the shortest text that reads back as the same double.
            if decimal.Decimal(value) == decimal.Decimal(repr(double)):
                return double
        if target == "decimal" and _NUMBER_TEXT.fullmatch(value):
            try:
                converted = Decimal128(value)
            except decimal.DecimalException:
                return None  # more digits than a decimal128 holds
            if converted.to_decimal() == decimal.Decimal(value):
                return converted
        if target == "bool" and value in ("true", "false"):
            return value == "true"
    if isinstance(value, int) and not isinstance(value, bool) and target == "string":
        return str(value)
    return None


class TypeRule(ValueRule):
    kind: ClassVar[str] = "type"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    judges_elements: ClassVar[bool] = False
    spec: TypeSpec

    def is_bad(self, value: Any) -> Expression:
        accepted = {"$literal": self.spec.accepted_types()}
        return {"$not": [{"$in": [{"$type": value}, accepted]}]}

    def describe_fix(self) -> str:
        if self.spec.fix == "convert":
            return f"convert {self.spec.field} to {' or '.join(self.spec.types)}"
        return super().describe_fix()

    def plan_other_fix(self, violation: Violation, document: Document) -> FixPlan:
        """Convert the value to the first accepted type that keeps its meaning."""
        value = value_at(document, self.spec.field)
        for target in self.spec.accepted_types():
            converted = convert_value(value, target)
            if converted is not None:
                after = set_path(document, self.spec.field, converted)
                summary = (
                    f"convert {self.spec.field} {to_json_text(value)} to {target} "
                    f"{to_json_text(converted)}"
                )
                return plan_replace(
                    self, violation, document, after, "convert", summary
                )
        raise FixError(
            f"{self.spec.field} {to_json_text(value)} of document "
            f"{to_json_text(document['_id'])} in {self.collection} cannot be "
            f"converted to {' or '.join(self.spec.types)} without loss; "
            "quarantine it or fix it by hand."
        )
