"""`allowed`: a field whose value is not one of a fixed list.

Status fields and other enumerations drift when one writer spells a value its
own way; listing the accepted values catches that on the write that does it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from streamheal._bson import to_json_text
from streamheal.rules._base import Severity
from streamheal.rules._value import (
    Expression,
    ValueRule,
    ValueSpec,
    judged_values,
    refuse_default,
)


class AllowedSpec(ValueSpec):
    kind: Literal["allowed"]
    values: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_allowed(self) -> AllowedSpec:
        if self.fix != "set_default":
            return self
        rejected = [
            value
            for value in judged_values(self.default)
            if not any(is_same_value(value, allowed) for allowed in self.values)
        ]
        if rejected:
            raise refuse_default(
                self.default,
                rejected,
                "would still violate the rule",
                self.expectation(),
            )
        return self

    def expectation(self) -> str:
        return "one of " + ", ".join(to_json_text(value) for value in self.values)


def is_same_value(left: Any, right: Any) -> bool:
    """Whether `$in` finds `left` equal to `right`, for values read from YAML.

    MongoDB's equality differs from Python's where it matters here: a boolean
    never equals a number, NaN equals NaN, and a sub-document's field order
    counts. Numbers of different types compare by value in both.
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(is_same_value, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(
            is_same_value(left[key], right[key]) for key in left
        )
    if isinstance(left, list | dict) or isinstance(right, list | dict):
        return False
    return bool(left == right)


class AllowedRule(ValueRule):
    kind: ClassVar[str] = "allowed"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: AllowedSpec

    def is_bad(self, value: Any) -> Expression:
        # $literal: an accepted value such as "$admin" is a string, not a path.
        return {"$not": [{"$in": [value, {"$literal": self.spec.values}]}]}
