"""The rule kinds streamheal knows: adding one is a module plus a line here."""

from __future__ import annotations

from dataclasses import dataclass

from streamheal.rules._base import Mode, Rule, RuleSpec
from streamheal.rules.required import RequiredRule, RequiredSpec


@dataclass(frozen=True)
class RuleKind:
    """A kind's rule-file model and the class that evaluates it."""

    spec_type: type[RuleSpec]
    rule_type: type[Rule]


KINDS: dict[str, RuleKind] = {
    "required": RuleKind(RequiredSpec, RequiredRule),
}


def spec_types() -> tuple[type[RuleSpec], ...]:
    return tuple(kind.spec_type for kind in KINDS.values())


def build_rule(spec: RuleSpec, default_mode: Mode) -> Rule:
    """The evaluating rule for a validated spec."""
    return KINDS[spec.kind].rule_type(spec, default_mode)
