"""`range`: a number, string or date outside its lower or upper bound.

Bounds compare like MongoDB's query operators do, within one type family: a
numeric range judges numbers only, a date range dates only. A value of
another type is `type`'s question, and BSON's cross-type order (every string
sorts above every number) would otherwise make it look out of range.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from streamheal._bson import to_json_text
from streamheal.rules._base import Severity
from streamheal.rules._value import Expression, ValueRule, ValueSpec, is_string


Bound = int | float | str | dt.datetime


def family_of(bound: Bound) -> str:
    """The type family a bound compares within: number, string or date."""
    if isinstance(bound, str):
        return "string"
    if isinstance(bound, dt.datetime):
        return "date"
    return "number"


def is_in_family(family: str, value: Any) -> Expression:
    if family == "number":
        return {"$isNumber": value}
    if family == "string":
        return is_string(value)
    return {"$eq": [{"$type": value}, "date"]}


class RangeSpec(ValueSpec):
    kind: Literal["range"]
    min: Bound | None = None
    max: Bound | None = None

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound_type(cls, bound: Any) -> Any:
        # YAML reads 2024-01-01 as a date, which BSON cannot hold; midnight
        # UTC of that day is what a user writing it means.
        if isinstance(bound, dt.date) and not isinstance(bound, dt.datetime):
            return dt.datetime.combine(bound, dt.time(), tzinfo=dt.UTC)
        if bound is None or (isinstance(bound, Bound) and not isinstance(bound, bool)):
            return bound
        raise ValueError(f"expected a number, a string or a date, not {bound!r}")

    @model_validator(mode="after")
    def _bounds_agree(self) -> RangeSpec:
        if self.min is None and self.max is None:
            raise ValueError("a range needs `min`, `max` or both")
        if self.min is None or self.max is None:
            return self
        if family_of(self.min) != family_of(self.max):
            raise ValueError(
                f"min is a {family_of(self.min)} but max is a "
                f"{family_of(self.max)}; both bounds must be of one kind"
            )
        if _comparable(self.min) > _comparable(self.max):
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        return self


def _comparable(bound: Bound) -> Any:
    """Naive and aware datetimes cannot be compared; BSON stores UTC for both."""
    if isinstance(bound, dt.datetime) and bound.tzinfo is None:
        return bound.replace(tzinfo=dt.UTC)
    return bound


class RangeRule(ValueRule):
    kind: ClassVar[str] = "range"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: RangeSpec

    def is_bad(self, value: Any) -> Expression:
        bound = self.spec.min if self.spec.min is not None else self.spec.max
        assert bound is not None  # the spec has at least one bound
        outside = []
        if self.spec.min is not None:
            outside.append({"$lt": [value, {"$literal": self.spec.min}]})
        if self.spec.max is not None:
            outside.append({"$gt": [value, {"$literal": self.spec.max}]})
        return {"$and": [is_in_family(family_of(bound), value), {"$or": outside}]}

    def expectation(self) -> str:
        parts = []
        if self.spec.min is not None:
            parts.append(f"at least {to_json_text(self.spec.min)}")
        if self.spec.max is not None:
            parts.append(f"at most {to_json_text(self.spec.max)}")
        return " and ".join(parts)
