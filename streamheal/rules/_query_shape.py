"""Query shapes: what a profiled operation asked, without the values it asked.

Two finds that differ only in the values they compare with (`{"user": 9}` and
`{"user": 3}`) need the same index, so the slow-query rule counts them as one
problem. A shape keeps the namespace, the operation, the filter's fields and
operators and the sort; every compared value becomes a placeholder.

Profile entries are read as MongoDB documents them
(https://www.mongodb.com/docs/manual/reference/database-profiler/), with the
variations servers show in practice handled where noted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamheal._bson import to_json_text
from streamheal.rules._base import COMMENT, Document


PLACEHOLDER = "?"
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})

# The ESR guideline's classes of predicates
# (https://www.mongodb.com/docs/manual/tutorial/equality-sort-range-guideline/):
# `$ne`, `$nin` and `$regex` are ranges; `$in` is a series of equality matches
# alone, but acts as a range once the query also sorts.
EQUALITY_OPERATORS = frozenset({"$eq"})
RANGE_OPERATORS = frozenset({"$gt", "$gte", "$lt", "$lte", "$ne", "$nin", "$regex"})
IN_OPERATOR = "$in"

# The commands whose filter an index can serve, by their lower-case spelling
# (some drivers send `findandmodify`).
SHAPED_COMMANDS = {
    name.lower(): name
    for name in (
        "find",
        "aggregate",
        "count",
        "distinct",
        "findAndModify",
        "update",
        "delete",
    )
}
# MongoDB profiles each update or delete statement on its own, with the
# statement ({q: …, u: …}) as `command`; only `op` names the operation then.
STATEMENT_COMMANDS = {"update": "update", "remove": "delete"}
STATEMENT_LISTS = {"update": "updates", "delete": "deletes"}
INTERNAL_PREFIXES = ("system.", "streamheal_")

IndexKeys = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class QueryShape:
    """One query shape: the same request, whatever values it carried."""

    namespace: str
    op: str
    command: str
    filter: dict[str, Any] = field(default_factory=dict)
    sort: dict[str, Any] = field(default_factory=dict)

    @property
    def collection(self) -> str:
        return self.namespace.partition(".")[2]

    @property
    def key(self) -> dict[str, Any]:
        """The shape as plain JSON types, for the violation's key."""
        return {
            "ns": self.namespace,
            "op": self.op,
            "command": self.command,
            "filter": self.filter,
            "sort": self.sort,
        }

    @property
    def text(self) -> str:
        """A one-line rendering that is equal exactly when the shapes are."""
        operation = f"{self.namespace} {self.op}/{self.command}"
        text = f"{operation} filter={to_json_text(self.filter)}"
        if self.sort:
            text += f" sort={to_json_text(self.sort)}"
        return text


def normalise_filter(query: Mapping[str, Any]) -> dict[str, Any]:
    """The filter's fields and operators with every value replaced.

    Fields are sorted because their order does not change what a filter
    matches; the branches of `$and`, `$or` and `$nor` keep their order.
    """
    shape: dict[str, Any] = {}
    for name in sorted(query):
        value = query[name]
        if name in LOGICAL_OPERATORS and isinstance(value, list):
            shape[name] = [
                normalise_filter(branch) if isinstance(branch, Mapping) else PLACEHOLDER
                for branch in value
            ]
        elif name == "$expr":
            shape[name] = normalise_expression(value)
        elif name.startswith("$"):
            shape[name] = PLACEHOLDER
        else:
            shape[name] = normalise_condition(value)
    return shape


def normalise_condition(value: Any) -> Any:
    """A field's condition: operators kept, operands replaced.

    A document that is not made of operators is a value to compare with (an
    equality match on an embedded document), so it is replaced as a whole.
    """
    if not _is_operator_document(value):
        return PLACEHOLDER
    shape: dict[str, Any] = {}
    for operator in sorted(value):
        operand = value[operator]
        if operator == "$not":
            shape[operator] = normalise_condition(operand)
        elif operator == "$elemMatch" and isinstance(operand, Mapping):
            shape[operator] = (
                normalise_condition(operand)
                if _is_operator_document(operand)
                else normalise_filter(operand)
            )
        else:
            shape[operator] = PLACEHOLDER
    return shape


def normalise_expression(expression: Any) -> Any:
    """An aggregation expression with field paths kept and literals replaced."""
    if isinstance(expression, Mapping):
        return {name: normalise_expression(value) for name, value in expression.items()}
    if isinstance(expression, list):
        return [normalise_expression(item) for item in expression]
    if isinstance(expression, str) and expression.startswith("$"):
        return expression
    return PLACEHOLDER


def normalise_sort(sort: Any) -> dict[str, Any]:
    """The sort's fields in order, directions as 1 or -1 (`$meta` kept)."""
    if not isinstance(sort, Mapping):
        return {}
    shape: dict[str, Any] = {}
    for name, direction in sort.items():
        if isinstance(direction, int | float) and not isinstance(direction, bool):
            shape[name] = 1 if direction >= 0 else -1
        elif isinstance(direction, Mapping):
            shape[name] = {key: str(value) for key, value in direction.items()}
        else:
            shape[name] = PLACEHOLDER
    return shape


def is_ignored(entry: Document) -> bool:
    """Whether a profile entry is streamheal's own or about internal data.

    streamheal tags its commands with `comment: "streamheal"`; MongoDB puts
    the comment into the profiled `command` (for a getMore, into
    `originatingCommand`). Collections named `system.*` or `streamheal_*` are
    the server's and ours, never the application's.
    """
    for name in ("command", "originatingCommand"):
        command = entry.get(name)
        if isinstance(command, Mapping) and command.get("comment") == COMMENT:
            return True
    collection = str(entry.get("ns", "")).partition(".")[2]
    return collection.startswith(INTERNAL_PREFIXES)


def shape_of(entry: Document) -> QueryShape | None:
    """The shape of a profiled operation, or None when no index could serve it.

    Inserts, commands without a filter and entries without a namespace have
    no shape. A getMore takes the shape of the command that opened its cursor.
    """
    op = str(entry.get("op", ""))
    command = entry.get("originatingCommand" if op == "getmore" else "command")
    if not isinstance(command, Mapping) or not command:
        return None

    name = SHAPED_COMMANDS.get(str(next(iter(command))).lower())
    if name is None and "q" in command:
        name = STATEMENT_COMMANDS.get(op)
    if name is None:
        return None

    namespace = _namespace_of(entry, command)
    if namespace is None:
        return None
    query, sort = _filter_and_sort(name, command)
    return QueryShape(
        namespace, op, name, normalise_filter(query), normalise_sort(sort)
    )


def recommend_index(shape: QueryShape) -> IndexKeys:
    """Index keys for the shape, ordered by the ESR guideline.

    Equality fields first (in the shape's sorted order: their order does not
    matter to the server), then the sort fields with their directions, then
    the range fields. Fields only inside `$or` or `$nor` are left out: each
    branch would need its own index.
    """
    equality, ranges = _classify_fields(shape.filter, is_sorted=bool(shape.sort))
    keys: list[tuple[str, int]] = [(name, 1) for name in equality]
    listed = set(equality)

    for name, direction in shape.sort.items():
        if isinstance(direction, int) and name not in listed:
            keys.append((name, direction))
            listed.add(name)

    keys += [(name, 1) for name in ranges if name not in listed]
    return tuple(keys)


def equality_count_of(shape: QueryShape) -> int:
    """How many of the recommended index's leading fields are equality fields."""
    equality, _ = _classify_fields(shape.filter, is_sorted=bool(shape.sort))
    return len(equality)


def is_covered_by(
    index_key: Mapping[str, Any],
    keys: IndexKeys,
    sort_fields: Sequence[str] = (),
    equality_count: int = 0,
) -> bool:
    """Whether an index's key pattern starts with `keys`.

    The first `equality_count` keys are equality fields: the server does not
    care in which order the index holds them, so they may come in any order
    within that prefix. The rest must follow in order. Directions matter only
    for the sort fields, and there an index walked backwards serves too: all
    of them must agree with the index, or all be its opposite. Special index
    types (text, hashed, 2dsphere) never cover.
    """
    pattern = list(index_key.items())[: len(keys)]
    if len(pattern) < len(keys):
        return False

    equality = {name for name, _ in keys[:equality_count]}
    if equality != {name for name, _ in pattern[:equality_count]}:
        return False

    forward = backward = True
    for position, ((name, direction), (index_name, index_direction)) in enumerate(
        zip(keys, pattern, strict=True)
    ):
        if not _is_direction(index_direction):
            return False
        if position < equality_count:
            continue
        if name != index_name:
            return False
        if name in sort_fields:
            index_sign = 1 if index_direction > 0 else -1
            forward = forward and index_sign == direction
            backward = backward and index_sign == -direction
    return forward or backward


def _is_operator_document(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(str(name).startswith("$") for name in value)
    )


def _is_direction(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value != 0


def _namespace_of(entry: Document, command: Mapping[str, Any]) -> str | None:
    database, _, collection = str(entry.get("ns", "")).partition(".")
    # Commands profiled against `db.$cmd` name their collection in the command.
    if not collection or collection.startswith("$cmd"):
        target = command.get(next(iter(command)))
        if not isinstance(target, str):
            return None
        collection = target
    if not database or not collection:
        return None
    return f"{database}.{collection}"


def _filter_and_sort(name: str, command: Mapping[str, Any]) -> tuple[Any, Any]:
    if name == "find":
        return command.get("filter") or {}, command.get("sort") or {}
    if name == "findAndModify":
        return command.get("query") or {}, command.get("sort") or {}
    if name in ("count", "distinct"):
        return command.get("query") or {}, {}
    if name == "aggregate":
        return _leading_match_and_sort(command.get("pipeline"))

    # MongoDB gives the statement itself; a server that profiles the whole
    # command (SecantusDB 0.7.0b3 does) is read by its first statement.
    statement: Any = command
    if "q" not in command:
        statements = command.get(STATEMENT_LISTS[name])
        statement = statements[0] if isinstance(statements, list) and statements else {}
    if not isinstance(statement, Mapping):
        return {}, {}
    return statement.get("q") or {}, {}


def _leading_match_and_sort(pipeline: Any) -> tuple[Any, Any]:
    """The first `$match` and `$sort` among the stages an index can serve."""
    query: Any = {}
    sort: Any = {}
    for stage in pipeline if isinstance(pipeline, list) else []:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            break
        if "$match" in stage and not query:
            query = stage["$match"]
        elif "$sort" in stage and not sort:
            sort = stage["$sort"]
        else:
            break
    return (query if isinstance(query, Mapping) else {}), sort


def _classify_fields(
    query: Mapping[str, Any], *, is_sorted: bool
) -> tuple[list[str], list[str]]:
    """The equality fields and the range fields of a normalised filter."""
    equality: list[str] = []
    ranges: list[str] = []
    for name, condition in query.items():
        if name == "$and" and isinstance(condition, list):
            for branch in condition:
                if isinstance(branch, Mapping):
                    more_equality, more_ranges = _classify_fields(
                        branch, is_sorted=is_sorted
                    )
                    equality += more_equality
                    ranges += more_ranges
            continue
        if name.startswith("$"):
            continue

        operators = set(condition) if isinstance(condition, Mapping) else set()
        is_in_equality = IN_OPERATOR in operators and not is_sorted
        if condition == PLACEHOLDER or operators & EQUALITY_OPERATORS or is_in_equality:
            equality.append(name)
        elif operators & RANGE_OPERATORS or IN_OPERATOR in operators:
            ranges.append(name)

    equality = list(dict.fromkeys(equality))
    ranges = [name for name in dict.fromkeys(ranges) if name not in equality]
    return equality, ranges
