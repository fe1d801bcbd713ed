"""The per-write check and the sweep agree, for every rule kind (design principle 1).

Hypothesis draws small collections from a deliberately crowded domain (case
and space variants, null, absent fields, arrays, sub-documents), and for each
one the violations the sweep reports must be exactly those the per-write
check reports for the inserts of every document. pytest-asyncio runs each
example of an `async def` test under `@given` on the session's event loop, so
the `db` fixture is shared by the examples and each one starts by dropping
what the last one wrote.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamheal.config import parse_settings
from streamheal.rules import Rule, Violation, Write
from tests.helpers import running_monitor, settings_for, wait_for_state


EXAMPLES_PER_RULE = 25
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES_PER_RULE,
    deadline=None,
    # The function-scoped `db` is emptied by each example itself.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

SCALARS = st.sampled_from(
    [0, 1, 2, 5, 150, -1, 1.5, True, "a", "A", " a", "a ", "b", "42", None]
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.fixed_dictionaries({"x": SCALARS}),
)
DOCUMENTS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={"v": VALUES, "n": st.fixed_dictionaries({}, optional={"v": VALUES})},
    ),
    max_size=8,
)
PARENTS = st.lists(
    st.fixed_dictionaries({}, optional={"code": VALUES}), min_size=1, max_size=4
)

# A narrower domain for references, so that children and parents often meet.
REFERENCED = st.sampled_from([0, 1, 2, "a", None])
REFERENCES = st.one_of(REFERENCED, st.lists(REFERENCED, max_size=2))
CHILDREN = st.lists(
    st.fixed_dictionaries(
        {"v": REFERENCES, "n": st.fixed_dictionaries({"v": REFERENCES})}
    ),
    max_size=6,
)
REFERENCED_PARENTS = st.lists(
    st.fixed_dictionaries({"code": REFERENCES}), min_size=1, max_size=4
)

RULES = {
    "required": "kind: required\n    fields: [v]",
    "unique": "kind: unique\n    keys: [v]",
    "unique_compound_normalized": (
        "kind: unique\n    keys: [v, n.v]\n    normalize: [lowercase, trim]"
    ),
    "reference_by_id": "kind: reference\n    field: v\n    references: parents",
    "reference_by_code": (
        "kind: reference\n    field: n.v\n    references: parents.code"
    ),
    "allowed": "kind: allowed\n    field: v\n    values: [1, a, 2]",
    "type": "kind: type\n    field: v\n    types: [int, string]",
    "range": "kind: range\n    field: v\n    min: 0\n    max: 5",
    "pattern": "kind: pattern\n    field: v\n    regex: '^a$'\n    options: i",
    "query": "kind: query\n    filter: {$or: [{v: {$in: [1, A]}}, {n.v: null}]}",
}


def make_rule(body: str) -> Rule:
    text = (
        "mongodb: {database: x}\nrules:\n"
        f"  - name: property\n    collection: items\n    {body}\n"
    )
    return parse_settings(text).build_rules()[0]


def numbered(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"_id": index, **document} for index, document in enumerate(documents)]


def summary(violations: list[Violation]) -> dict[str, tuple[Any, ...]]:
    """What must agree: each violation's id, its documents and its key."""
    return {v.id: (v.documents, v.key) for v in violations}


async def fill(
    db: Any, items: list[dict[str, Any]], parents: list[dict[str, Any]]
) -> None:
    await db.items.drop()
    await db.parents.drop()
    if items:
        await db.items.insert_many(items)
    await db.parents.insert_many(parents)


@pytest.mark.parametrize("body", RULES.values(), ids=RULES.keys())
@PROPERTY_SETTINGS
@given(documents=DOCUMENTS, parents=PARENTS)
async def test_write_checks_find_what_the_sweep_finds(
    db: Any, body: str, documents: list[dict[str, Any]], parents: list[dict[str, Any]]
) -> None:
    rule = make_rule(body)
    items = numbered(documents)
    await fill(db, items, numbered(parents))

    swept = summary([v async for v in rule.sweep(db)])
    writes = [Write("items", "insert", item["_id"]) for item in items]
    together = summary(await rule.check_writes(db, writes))
    one_by_one: dict[str, tuple[Any, ...]] = {}
    for write in writes:
        one_by_one |= summary(await rule.check_writes(db, [write]))

    assert together == swept
    assert one_by_one == swept


@pytest.mark.parametrize(
    "body", [RULES["reference_by_id"], RULES["reference_by_code"]], ids=["id", "code"]
)
@PROPERTY_SETTINGS
@given(documents=CHILDREN, parents=REFERENCED_PARENTS, data=st.data())
async def test_deleting_parents_reports_every_new_orphan(
    db: Any,
    body: str,
    documents: list[dict[str, Any]],
    parents: list[dict[str, Any]],
    data: st.DataObject,
) -> None:
    rule = make_rule(body)
    parent_documents = numbered(parents)
    await fill(db, numbered(documents), parent_documents)
    before = {v.id async for v in rule.sweep(db)}

    deleted = data.draw(st.lists(st.sampled_from(parent_documents), unique_by=str))
    for parent in deleted:
        await db.parents.delete_one({"_id": parent["_id"]})
    writes = [Write("parents", "delete", p["_id"], before=p) for p in deleted]
    reported = {v.id for v in await rule.check_writes(db, writes)}

    # Deleting parents only adds orphans: the old ones plus those reported.
    assert {v.id async for v in rule.sweep(db)} == before | reported


# Every kind at once, each rule under its own name, for the monitor test below.
MONITOR_RULES = "".join(
    f"  - name: {name}\n    collection: items\n    mode: detect\n    {body}\n"
    for name, body in RULES.items()
)
MONITOR_EXAMPLES = 12
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "replace", "delete", "parent"]),
        st.integers(min_value=0, max_value=7),
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "v": VALUES,
                    "n": st.fixed_dictionaries({}, optional={"v": VALUES}),
                },
            )
        ),
    ),
    min_size=1,
    max_size=8,
)


async def apply_operations(
    db: Any, operations: list[tuple[str, int, dict[str, Any]]], first_new_id: int
) -> int:
    """Run the writes; return how many changed something (one change event each).

    A replace always writes a new `rev`, so that it never leaves the document
    as it was (a write that changes nothing has no change event).
    """
    changes = 0
    next_id = first_new_id
    for revision, (operation, target, document) in enumerate(operations):
        if operation == "insert":
            await db.items.insert_one({"_id": next_id, **document})
            next_id += 1
            changes += 1
        elif operation == "replace":
            result = await db.items.replace_one(
                {"_id": target}, {**document, "rev": revision}
            )
            changes += result.modified_count
        elif operation == "delete":
            result = await db.items.delete_one({"_id": target})
            changes += result.deleted_count
        else:
            result = await db.parents.replace_one(
                {"_id": target % 4}, {"code": document.get("v"), "rev": revision}
            )
            changes += result.modified_count
    return changes


def writes_handled(state: Any, changes: int) -> bool:
    """Every change event arrived and every batch's checks have finished."""
    sizes = state.write_batch_sizes
    return sizes.total >= changes and state.stream_batches == sizes.observations


@settings(
    max_examples=MONITOR_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(documents=DOCUMENTS, parents=PARENTS, operations=OPERATIONS)
async def test_the_queue_after_writes_is_what_a_sweep_finds(
    db: Any,
    mongo_uri: str,
    documents: list[dict[str, Any]],
    parents: list[dict[str, Any]],
    operations: list[tuple[str, int, dict[str, Any]]],
) -> None:
    """Inserts, replaces and deletes through the stream leave the sweep's answer.

    Violations the writes create must be queued, and those they end (a
    duplicate's twin deleted, a parent appearing) must leave the queue.
    """
    items = numbered(documents)
    await fill(db, items, numbered(parents))
    await db.streamheal_state.drop()
    monitor_settings = settings_for(
        db.name, MONITOR_RULES, "  sweep_interval: 1h\n  queue_max: 1000"
    )

    async with running_monitor(mongo_uri, monitor_settings) as monitor:
        changes = await apply_operations(db, operations, len(items))
        await wait_for_state(monitor, lambda state: writes_handled(state, changes))
        queued = summary([entry.violation for entry in monitor.queue])

    swept: dict[str, tuple[Any, ...]] = {}
    for rule in monitor_settings.build_rules():
        swept |= summary([v async for v in rule.sweep(db)])
    assert queued == swept
