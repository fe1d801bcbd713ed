"""Durations as the rule file writes them: `500ms`, `30s`, `2m`, `1h`.

This lives apart from `config` because rule kinds need the type for their own
fields, and `config` imports the rules: a rule importing `config` would be a
cycle.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator


_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `30s`, `2m`, `1h` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 30s or 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group("number")) * _UNIT_S[match.group("unit")]
    raise ValueError(f"expected a duration such as 500ms, 30s or 2m, not {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
