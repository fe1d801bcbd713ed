"""`pattern`: a string field that does not match a regular expression.

Only strings are judged: a number where a string belongs is `type`'s question.
The expression is checked with Python's `re` when the file is loaded, so that
a typo is reported on its line instead of failing every sweep. The server
speaks PCRE, whose syntax differs from Python's in corners, so this check
catches most mistakes, not all.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from streamheal.rules._base import FieldValueError, Severity
from streamheal.rules._value import (
    Expression,
    ValueRule,
    ValueSpec,
    is_string,
    judged_values,
    refuse_default,
)


# The $regexMatch options MongoDB accepts, and Python's flag for each.
OPTION_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class PatternSpec(ValueSpec):
    kind: Literal["pattern"]
    regex: str = Field(min_length=1)
    options: str = ""

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: str) -> str:
        unknown = sorted(set(options) - set(OPTION_FLAGS))
        if unknown:
            raise ValueError(
                f"unknown regular expression option {', '.join(unknown)}; "
                f"expected letters from {''.join(OPTION_FLAGS)}"
            )
        return options

    @model_validator(mode="after")
    def _regex_compiles(self) -> PatternSpec:
        try:
            self.compile()
        except re.error as exc:
            raise FieldValueError(
                "regex",
                f"the regular expression {self.regex!r} does not compile: {exc}",
            ) from None
        return self

    @model_validator(mode="after")
    def _default_matches(self) -> PatternSpec:
        # Only strings are judged: a default of another type ends the
        # violation (and is `type`'s question).
        if self.fix != "set_default":
            return self
        regex = self.compile()
        rejected = [
            value
            for value in judged_values(self.default)
            if isinstance(value, str) and not regex.search(value)
        ]
        if rejected:
            raise refuse_default(
                self.default,
                rejected,
                "does not match, so it would still violate the rule",
                self.expectation(),
            )
        return self

    def compile(self) -> re.Pattern[str]:
        """The expression in Python's `re`, searched like `$regexMatch` does."""
        flags = 0
        for option in self.options:
            flags |= OPTION_FLAGS[option]
        return re.compile(self.regex, flags)

    def expectation(self) -> str:
        return f"a string matching /{self.regex}/{self.options}"


class PatternRule(ValueRule):
    kind: ClassVar[str] = "pattern"
    default_severity: ClassVar[Severity] = Severity.MEDIUM
    spec: PatternSpec

    def is_bad(self, value: Any) -> Expression:
        # $regexMatch fails on anything but a string, so the type is tested
        # first in a $cond (an $and's order of evaluation is not promised).
        matches = {
            "$regexMatch": {
                "input": value,
                "regex": self.spec.regex,
                "options": self.spec.options,
            }
        }
        return {"$cond": [is_string(value), {"$not": [matches]}, False]}
