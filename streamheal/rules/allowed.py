"""`allowed`: a field whose value is not one of a fixed list.

Status fields and other enumerations drift when one writer spells a value its
own way; listing the accepted values catches that on the write that does it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from streamheal._bson import to_json_text
from streamheal.rules._base import Severity
from streamheal.rules._value import Expression, ValueRule, ValueSpec


class AllowedSpec(ValueSpec):
    kind: Literal["allowed"]
    values: list[Any] = Field(min_length=1)


class AllowedRule(ValueRule):
    kind: ClassVar[str] = "allowed"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: AllowedSpec

    def is_bad(self, value: Any) -> Expression:
        # $literal: an accepted value such as "$admin" is a string, not a path.
        return {"$not": [{"$in": [value, {"$literal": self.spec.values}]}]}

    def expectation(self) -> str:
        return "one of " + ", ".join(to_json_text(value) for value in self.spec.values)
