"""Hypothesis strategies for hostile documents, and a client that can read them.

Every BSON type, NaN and the infinities, dates at the ends of the range,
field names with dots or a leading `$`, deep nesting, huge arrays, and rule
fields that are a scalar in one document, an array in the next and a
sub-document in a third.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.datetime_ms import DatetimeMS
from hypothesis import strategies as st


# The oldest and newest instants SecantusDB 0.7.0b3 stores: it decodes dates
# with Python's datetime and refuses years outside 1..9999 ("invalid BSON in
# body: year ... is out of range"). MongoDB stores any 64-bit millisecond
# count; the client reads those as DatetimeMS all the same.
OLDEST_MS = -62_135_596_800_000
NEWEST_MS = 253_402_300_799_999
UUID_BYTES = 16
MAX_DEPTH = 90  # MongoDB refuses documents nested deeper than 100 levels
HUGE_ARRAY = 5_000

SPECIAL_VALUES: list[Any] = [
    None,
    "",
    " ",
    "a",
    " A ",
    "42",
    "true",
    "$v",
    "a.b",
    "\x00inside",
    "ü✓\U0001f600",
    0,
    1,
    -1,
    3,
    42,
    2**31 - 1,
    -(2**31),
    Int64(2**63 - 1),
    Int64(-(2**63)),
    True,
    False,
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    5e-324,
    1.7976931348623157e308,
    Decimal128("NaN"),
    Decimal128("-NaN"),
    Decimal128("Infinity"),
    Decimal128("-Infinity"),
    Decimal128("-0"),
    Decimal128("9.999999999999999999999999999999999E+6144"),
    Decimal128("1E-6176"),
    MinKey(),
    MaxKey(),
    Binary(b"", 0),
    Binary(b"\x00\xff", 0),
    Binary(b"old", 2),
    Binary(b"\x01" * UUID_BYTES, 3),
    Binary(b"\x02" * UUID_BYTES, 4),
    Binary(b"\x03" * UUID_BYTES, 5),
    Binary(b"user defined", 0x80),
    Regex("^a", "i"),
    Regex("(", ""),
    Regex("[", "imsx"),
    Timestamp(0, 0),
    Timestamp(2**32 - 1, 2**32 - 1),
    DatetimeMS(OLDEST_MS),
    DatetimeMS(NEWEST_MS),
    DatetimeMS(0),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
    ObjectId("000000000000000000000000"),
    Code("function () { return 1; }"),
    {},
    [],
    [[]],
    [None],
    {"$x": 1},
    {"a.b": 1, "$": None},
]

FIELD_NAMES = st.one_of(
    st.sampled_from(["v", "n", "x", "a.b", "$x", "$", ".", "v.", "$v.x", "", "n.v"]),
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"),
        max_size=6,
    ),
)

SCALARS = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Int64),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.integers(min_value=OLDEST_MS, max_value=NEWEST_MS).map(DatetimeMS),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(FIELD_NAMES, children, max_size=4),
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any) -> Any:
    """`leaf` inside `depth` levels of sub-documents and arrays, alternately."""
    value = leaf
    for level in range(depth):
        value = {"v": value} if level % 2 else [value]
    return value


DEEP = st.builds(nested, st.integers(min_value=20, max_value=MAX_DEPTH), SCALARS)
HUGE = st.builds(
    lambda size, item: [item] * size,
    st.integers(min_value=1000, max_value=HUGE_ARRAY),
    SCALARS,
)
RULE_FIELD = st.one_of(VALUES, DEEP, HUGE)

DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "v": RULE_FIELD,
        "n": st.one_of(st.fixed_dictionaries({"v": RULE_FIELD}), VALUES),
        "r": RULE_FIELD,
        "t": VALUES,
        "extra": st.dictionaries(FIELD_NAMES, VALUES, max_size=4),
    },
)
PARENTS = st.fixed_dictionaries({"code": VALUES})


def mongodb_equality_form(value: Any) -> Any:
    """A hashable form under which two values collide exactly when MongoDB's
    `$group` puts them in one group: numbers by value whatever their type,
    documents field by field in order, arrays element by element, and every
    other BSON type only with its own kind.
    """
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float | Int64 | Decimal128):
        number = value.to_decimal() if isinstance(value, Decimal128) else value
        if number != number:  # NaN, float or decimal: MongoDB groups them together
            return ("number", "NaN")
        return ("number", Decimal(number))
    if isinstance(value, Code):
        return ("code", str(value), mongodb_equality_form(value.scope))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, Binary):
        return ("binary", value.subtype, bytes(value))
    if isinstance(value, bytes):
        return ("binary", 0, value)
    if isinstance(value, dt.datetime | DatetimeMS):
        return ("date", int(DatetimeMS(value)))
    if isinstance(value, Regex):
        return ("regex", value.pattern, value.flags)
    if isinstance(value, Timestamp | ObjectId | MinKey | MaxKey):
        return (type(value).__name__, repr(value))
    if isinstance(value, dict):
        fields = tuple((key, mongodb_equality_form(v)) for key, v in value.items())
        return ("object", fields)
    if isinstance(value, list):
        return ("array", tuple(mongodb_equality_form(v) for v in value))
    raise TypeError(f"no MongoDB equality form for {type(value).__name__}")
