"""Rule kinds and the registry that maps a rule file's `kind` to them."""

from __future__ import annotations

from streamheal.rules._base import (
    COMMENT,
    Database,
    FixPlan,
    Mode,
    Operation,
    Rule,
    RuleSpec,
    Severity,
    Violation,
    Write,
)
from streamheal.rules._registry import KINDS, RuleKind, build_rule, spec_types


__all__ = [
    "COMMENT",
    "KINDS",
    "Database",
    "FixPlan",
    "Mode",
    "Operation",
    "Rule",
    "RuleKind",
    "RuleSpec",
    "Severity",
    "Violation",
    "Write",
    "build_rule",
    "spec_types",
]
