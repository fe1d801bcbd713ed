"""The rule kinds streamheal knows: adding one is a module plus a line here."""

from __future__ import annotations

from dataclasses import dataclass

from streamheal.rules._base import Mode, Rule, RuleSpec
from streamheal.rules.allowed import AllowedRule, AllowedSpec
from streamheal.rules.pattern import PatternRule, PatternSpec
from streamheal.rules.query import QueryRule, QuerySpec
from streamheal.rules.range import RangeRule, RangeSpec
from streamheal.rules.reference import ReferenceRule, ReferenceSpec
from streamheal.rules.required import RequiredRule, RequiredSpec
from streamheal.rules.slow_query import SlowQueryRule, SlowQuerySpec
from streamheal.rules.type import TypeRule, TypeSpec
from streamheal.rules.unique import UniqueRule, UniqueSpec


@dataclass(frozen=True)
class RuleKind:
    """A kind's rule-file model and the class that evaluates it."""

    spec_type: type[RuleSpec]
    rule_type: type[Rule]


KINDS: dict[str, RuleKind] = {
    "required": RuleKind(RequiredSpec, RequiredRule),
    "unique": RuleKind(UniqueSpec, UniqueRule),
    "reference": RuleKind(ReferenceSpec, ReferenceRule),
    "allowed": RuleKind(AllowedSpec, AllowedRule),
    "type": RuleKind(TypeSpec, TypeRule),
    "range": RuleKind(RangeSpec, RangeRule),
    "pattern": RuleKind(PatternSpec, PatternRule),
    "query": RuleKind(QuerySpec, QueryRule),
    "slow_query": RuleKind(SlowQuerySpec, SlowQueryRule),
}


def spec_types() -> tuple[type[RuleSpec], ...]:
    return tuple(kind.spec_type for kind in KINDS.values())


def build_rule(spec: RuleSpec, default_mode: Mode) -> Rule:
    """The evaluating rule for a validated spec."""
    return KINDS[spec.kind].rule_type(spec, default_mode)
