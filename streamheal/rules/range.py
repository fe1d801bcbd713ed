"""`range`: a number, string or date outside its lower or upper bound.

Bounds compare like MongoDB's query operators do, within one type family: a
numeric range judges numbers only, a date range dates only. A value of
another type is `type`'s question, and BSON's cross-type order (every string
sorts above every number) would otherwise make it look out of range.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from streamheal._bson import to_json_text
from streamheal.rules._base import FieldValueError, Severity
from streamheal.rules._value import (
    Expression,
    ValueRule,
    ValueSpec,
    as_datetime,
    is_string,
    judged_values,
    refuse_default,
)


Bound = int | float | str | dt.datetime


def family_of(bound: Bound) -> str:
    """The type family a bound compares within: number, string or date."""
    if isinstance(bound, str):
        return "string"
    if isinstance(bound, dt.datetime):
        return "date"
    return "number"


def family_of_value(value: Any) -> str | None:
    """The type family a value from the rule file belongs to, if any.

    A boolean is not a number here, as `$isNumber` says.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str | dt.datetime):
        return family_of(value)
    return None


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
        bound = as_datetime(bound)
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
            raise FieldValueError(
                "max",
                f"min is a {family_of(self.min)} but max is a "
                f"{family_of(self.max)}; both bounds must be of one kind",
            )
        if _comparable(self.min) > _comparable(self.max):
            raise FieldValueError(
                "max", f"min {self.min!r} is greater than max {self.max!r}"
            )
        return self

    @model_validator(mode="after")
    def _default_in_range(self) -> RangeSpec:
        if self.fix != "set_default":
            return self
        family = self.family()
        values = judged_values(self.default)
        other_family = [value for value in values if family_of_value(value) != family]
        if other_family:
            raise refuse_default(
                self.default,
                other_family,
                f"is not a {family} like the bounds, so the rule cannot compare it",
                f"a {family} {self.expectation()}",
            )
        outside = [value for value in values if not self.is_within(value)]
        if outside:
            raise refuse_default(
                self.default,
                outside,
                "is out of range, so it would still violate the rule",
                self.expectation(),
            )
        return self

    def family(self) -> str:
        bound = self.min if self.min is not None else self.max
        assert bound is not None  # _bounds_agree saw at least one bound
        return family_of(bound)

    def is_within(self, value: Bound) -> bool:
        """Whether a value of the bounds' family lies within them, as MongoDB says."""
        if self.min is not None and _is_below(value, self.min):
            return False
        return self.max is None or not _is_below(self.max, value)

    def expectation(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"at least {to_json_text(self.min)}")
        if self.max is not None:
            parts.append(f"at most {to_json_text(self.max)}")
        return " and ".join(parts)


def _is_below(value: Bound, bound: Bound) -> bool:
    """`value < bound` in BSON's order, where NaN sorts below every number."""
    if isinstance(value, float) and math.isnan(value):
        return not (isinstance(bound, float) and math.isnan(bound))
    if isinstance(bound, float) and math.isnan(bound):
        return False
    return bool(_comparable(value) < _comparable(bound))


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
        outside = []
        if self.spec.min is not None:
            outside.append({"$lt": [value, {"$literal": self.spec.min}]})
        if self.spec.max is not None:
            outside.append({"$gt": [value, {"$literal": self.spec.max}]})
        return {"$and": [is_in_family(self.spec.family(), value), {"$or": outside}]}
