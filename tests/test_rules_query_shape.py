"""Query shapes and index advice: normalising, shaping, ESR, covering indexes.

Pure functions of `streamheal.rules._query_shape`; no server needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamheal.rules._query_shape import (
    QueryShape,
    is_covered_by,
    is_ignored,
    normalise_filter,
    recommend_index,
    shape_of,
)
from tests.helpers import find_entry


NORMALISED_FILTERS = [
    ({"user": 9}, {"user": "?"}),
    ({"user": {"$gt": 9}}, {"user": {"$gt": "?"}}),
    ({"b": 1, "a": {"$lt": 5, "$gt": 1}}, {"a": {"$gt": "?", "$lt": "?"}, "b": "?"}),
    ({"address": {"city": "Oslo"}}, {"address": "?"}),
    ({"tags": ["a", "b"]}, {"tags": "?"}),
    ({"tags": {"$in": ["a", "b", "c"]}}, {"tags": {"$in": "?"}}),
    (
        {"$or": [{"a": 1}, {"b": {"$in": [1, 2]}}]},
        {"$or": [{"a": "?"}, {"b": {"$in": "?"}}]},
    ),
    (
        {"items": {"$elemMatch": {"sku": "x", "qty": {"$gt": 2}}}},
        {"items": {"$elemMatch": {"qty": {"$gt": "?"}, "sku": "?"}}},
    ),
    ({"n": {"$not": {"$gt": 5}}}, {"n": {"$not": {"$gt": "?"}}}),
    (
        {"$expr": {"$gt": ["$spent", 100]}},
        {"$expr": {"$gt": ["$spent", "?"]}},
    ),
    (
        {"name": {"$regex": "^a", "$options": "i"}},
        {"name": {"$options": "?", "$regex": "?"}},
    ),
    ({}, {}),
]


@pytest.mark.parametrize(("query", "expected"), NORMALISED_FILTERS)
def test_normalise_filter_keeps_fields_and_operators_only(
    query: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert normalise_filter(query) == expected


class TestShapeOf:
    def test_values_do_not_change_the_shape(self) -> None:
        first = shape_of(find_entry({"user": {"$gt": 9}}))
        second = shape_of(find_entry({"user": {"$gt": 3}}))

        assert first is not None and second is not None
        assert (
            first.text
            == second.text
            == 'shop.users query/find filter={"user":{"$gt":"?"}}'
        )

    def test_sort_direction_changes_the_shape(self) -> None:
        up = shape_of(find_entry({"user": 1}, {"age": 1}))
        down = shape_of(find_entry({"user": 1}, {"age": -1.0}))

        assert up is not None and down is not None
        assert up.text == 'shop.users query/find filter={"user":"?"} sort={"age":1}'
        assert down.text == 'shop.users query/find filter={"user":"?"} sort={"age":-1}'

    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            (
                {
                    "op": "command",
                    "ns": "shop.users",
                    "command": {
                        "aggregate": "users",
                        "pipeline": [
                            {"$match": {"age": 2}},
                            {"$sort": {"name": 1}},
                            {"$group": {"_id": 1, "n": {"$sum": 1}}},
                        ],
                    },
                },
                QueryShape(
                    "shop.users", "command", "aggregate", {"age": "?"}, {"name": 1}
                ),
            ),
            (
                {
                    "op": "command",
                    "ns": "shop.users",
                    "command": {"distinct": "users", "key": "age", "query": {"u": 1}},
                },
                QueryShape("shop.users", "command", "distinct", {"u": "?"}),
            ),
            (
                {
                    "op": "command",
                    "ns": "shop.users",
                    "command": {"count": "users", "query": {"u": {"$lt": 1}}},
                },
                QueryShape("shop.users", "command", "count", {"u": {"$lt": "?"}}),
            ),
            (
                # MongoDB: one entry per update statement, the statement as command.
                {
                    "op": "update",
                    "ns": "shop.users",
                    "command": {"q": {"u": 5}, "u": {"$set": {"x": 1}}, "multi": False},
                },
                QueryShape("shop.users", "update", "update", {"u": "?"}),
            ),
            (
                # SecantusDB 0.7.0b3: the whole update command as command.
                {
                    "op": "update",
                    "ns": "shop.users",
                    "command": {
                        "update": "users",
                        "updates": [{"q": {"u": 5}, "u": {"$set": {"x": 1}}}],
                    },
                },
                QueryShape("shop.users", "update", "update", {"u": "?"}),
            ),
            (
                {
                    "op": "remove",
                    "ns": "shop.users",
                    "command": {"q": {"u": {"$lt": 0}}, "limit": 0},
                },
                QueryShape("shop.users", "remove", "delete", {"u": {"$lt": "?"}}),
            ),
            (
                {
                    "op": "remove",
                    "ns": "shop.users",
                    "command": {"delete": "users", "deletes": [{"q": {"u": 1}}]},
                },
                QueryShape("shop.users", "remove", "delete", {"u": "?"}),
            ),
            (
                {
                    "op": "command",
                    "ns": "shop.users",
                    "command": {
                        "findandmodify": "users",
                        "query": {"state": "new"},
                        "sort": {"at": 1},
                        "update": {"$set": {"state": "taken"}},
                    },
                },
                QueryShape(
                    "shop.users", "command", "findAndModify", {"state": "?"}, {"at": 1}
                ),
            ),
            (
                {
                    "op": "getmore",
                    "ns": "shop.users",
                    "command": {"getMore": 123, "collection": "users"},
                    "originatingCommand": {"find": "users", "filter": {"a": 1}},
                },
                QueryShape("shop.users", "getmore", "find", {"a": "?"}),
            ),
        ],
    )
    def test_shape_of_each_operation(
        self, entry: dict[str, Any], expected: QueryShape
    ) -> None:
        assert shape_of(entry) == expected

    @pytest.mark.parametrize(
        "entry",
        [
            {"op": "insert", "ns": "shop.users", "command": {"insert": "users"}},
            {
                "op": "command",
                "ns": "shop.users",
                "command": {"createIndexes": "users"},
            },
            {"op": "query", "ns": "shop.users"},
        ],
    )
    def test_operations_without_a_filter_have_no_shape(
        self, entry: dict[str, Any]
    ) -> None:
        assert shape_of(entry) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"ns": "shop.users", "command": {"find": "users", "comment": "streamheal"}},
            True,
        ),
        (
            {
                "ns": "shop.users",
                "command": {"getMore": 1},
                "originatingCommand": {"find": "users", "comment": "streamheal"},
            },
            True,
        ),
        ({"ns": "shop.system.profile", "command": {"find": "system.profile"}}, True),
        ({"ns": "shop.streamheal_backups", "command": {"find": "x"}}, True),
        ({"ns": "shop.users", "command": {"find": "users", "comment": "app"}}, False),
        ({"ns": "shop.users", "command": {"find": "users"}}, False),
    ],
)
def test_own_and_internal_operations_are_ignored(
    entry: dict[str, Any], expected: bool
) -> None:
    assert is_ignored(entry) is expected


def shape(query: dict[str, Any], sort: dict[str, Any] | None = None) -> QueryShape:
    return QueryShape("shop.cars", "query", "find", normalise_filter(query), sort or {})


RECOMMENDATIONS = [
    pytest.param(
        {"model": "x", "make": "y"}, None, (("make", 1), ("model", 1)), id="equality"
    ),
    pytest.param(
        {"price": {"$gte": 1}, "make": "GM"},
        {"model": -1},
        (("make", 1), ("model", -1), ("price", 1)),
        id="equality-sort-range",
    ),
    pytest.param(
        {"make": {"$in": ["a", "b"]}, "price": {"$lt": 9}},
        None,
        (("make", 1), ("price", 1)),
        id="in-alone-is-equality",
    ),
    pytest.param(
        {"make": {"$in": ["a", "b"]}},
        {"model": 1},
        (("model", 1), ("make", 1)),
        id="in-with-sort-is-range",
    ),
    pytest.param(
        {"a": {"$ne": 1}, "b": {"$nin": [1]}, "c": {"$regex": "x"}, "d": {"$eq": 4}},
        None,
        (("d", 1), ("a", 1), ("b", 1), ("c", 1)),
        id="ne-nin-regex-are-ranges",
    ),
    pytest.param(
        {"age": {"$gt": 3}}, {"age": -1}, (("age", -1),), id="range-field-sorted-once"
    ),
    pytest.param(
        {"make": "GM"},
        {"make": 1, "model": -1},
        (("make", 1), ("model", -1)),
        id="sort-on-equality-field-not-repeated",
    ),
    pytest.param(
        {"$and": [{"make": "GM"}, {"price": {"$lt": 5}}], "year": 2020},
        None,
        (("make", 1), ("year", 1), ("price", 1)),
        id="and-branches-count",
    ),
    pytest.param({"$or": [{"a": 1}, {"b": 2}]}, None, (), id="or-is-left-out"),
    pytest.param({"tags": {"$size": 2}}, None, (), id="unindexable-operator"),
    pytest.param({}, None, (), id="nothing-to-index"),
]


@pytest.mark.parametrize(("query", "sort", "expected"), RECOMMENDATIONS)
def test_recommend_index_follows_esr(
    query: dict[str, Any], sort: dict[str, Any] | None, expected: tuple[Any, ...]
) -> None:
    assert recommend_index(shape(query, sort)) == expected


COVERAGE = [
    pytest.param({"a": 1, "b": 1, "c": 1}, (("a", 1), ("b", 1)), (), True, id="prefix"),
    pytest.param({"a": 1, "b": 1}, (("a", 1), ("b", 1)), (), True, id="same"),
    pytest.param({"b": 1, "a": 1}, (("a", 1), ("b", 1)), (), False, id="other-order"),
    pytest.param({"a": 1}, (("a", 1), ("b", 1)), (), False, id="too-short"),
    pytest.param({"a": -1}, (("a", 1),), (), True, id="equality-any-direction"),
    pytest.param(
        {"s": -1, "t": 1}, (("s", 1), ("t", -1)), ("s", "t"), True, id="sort-reversed"
    ),
    pytest.param(
        {"s": 1, "t": 1}, (("s", 1), ("t", -1)), ("s", "t"), False, id="sort-mixed"
    ),
    pytest.param({"a": "text"}, (("a", 1),), (), False, id="text-index"),
    pytest.param({"a": "hashed", "b": 1}, (("a", 1),), (), False, id="hashed-index"),
]


@pytest.mark.parametrize(("index_key", "keys", "sort_fields", "expected"), COVERAGE)
def test_is_covered_by_needs_the_keys_as_a_prefix(
    index_key: dict[str, Any],
    keys: tuple[tuple[str, int], ...],
    sort_fields: tuple[str, ...],
    expected: bool,
) -> None:
    assert is_covered_by(index_key, keys, sort_fields) is expected


EQUALITY_COVERAGE = [
    pytest.param(
        {"b": 1, "a": -1, "c": 1},
        (("a", 1), ("b", 1), ("c", 1)),
        (),
        2,
        True,
        id="equality-prefix-in-any-order",
    ),
    pytest.param(
        {"a": 1, "c": 1, "b": 1},
        (("a", 1), ("b", 1), ("c", 1)),
        (),
        2,
        False,
        id="range-field-inside-the-equality-prefix",
    ),
    pytest.param(
        {"b": 1, "a": 1, "s": 1},
        (("a", 1), ("b", 1), ("s", -1)),
        ("s",),
        2,
        True,
        id="sort-after-the-prefix-walked-backwards",
    ),
    pytest.param(
        {"b": 1, "s": -1, "a": 1},
        (("a", 1), ("b", 1), ("s", -1)),
        ("s",),
        2,
        False,
        id="sort-field-inside-the-equality-prefix",
    ),
    pytest.param(
        {"b": "text", "a": 1},
        (("a", 1), ("b", 1)),
        (),
        2,
        False,
        id="text-index-in-the-equality-prefix",
    ),
]


@pytest.mark.parametrize(
    ("index_key", "keys", "sort_fields", "equality_count", "expected"),
    EQUALITY_COVERAGE,
)
def test_is_covered_by_takes_equality_fields_in_any_order(
    index_key: dict[str, Any],
    keys: tuple[tuple[str, int], ...],
    sort_fields: tuple[str, ...],
    equality_count: int,
    expected: bool,
) -> None:
    assert is_covered_by(index_key, keys, sort_fields, equality_count) is expected
