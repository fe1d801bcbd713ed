"""The sweep keeps the deferred count true: what stopped holding is not counted."""

from __future__ import annotations

import hashlib
from typing import Any

from streamheal.web._metrics import state_registry
from tests.helpers import running_monitor, settings_for, wait_for_state


RULE_NAME = "orders_need_customer"
RULES = f"""
  - name: {RULE_NAME}
    kind: required
    collection: orders
    fields: [customer]
    mode: detect
"""
ENGINE = "  queue_max: 2\n  sweep_interval: 1h"


def violation_id(document_id: int) -> str:
    """A violation's id as the design defines it: rule and subject, hashed."""
    text = f"{RULE_NAME}\x00{document_id}".encode()
    return hashlib.sha256(text).hexdigest()[:16]


async def test_a_sweep_forgets_deferred_violations_that_no_longer_hold(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(db.name, RULES, ENGINE)
    async with running_monitor(mongo_uri, settings) as monitor:
        queue = monitor.queue
        await db.orders.insert_many([{"_id": 1}, {"_id": 2}])
        await wait_for_state(monitor, lambda _: len(queue) == 2)
        await db.orders.insert_many([{"_id": 3}, {"_id": 4}, {"_id": 5}])
        await wait_for_state(monitor, lambda _: queue.deferred_count == 3)
        assert queue.deferred_ids() == {
            violation_id(3),
            violation_id(4),
            violation_id(5),
        }

        await db.orders.update_many(
            {"_id": {"$in": [3, 4]}}, {"$set": {"customer": "c1"}}
        )
        counts = await monitor.sweeper.sweep_all()

        assert counts == {RULE_NAME: 3}
        assert queue.deferred_ids() == {violation_id(5)}
        assert {entry.id for entry in queue} == {violation_id(1), violation_id(2)}
        assert monitor.state.snapshot()["counts"]["deferred"] == 1
        registry = state_registry(monitor.state)
        assert registry.get_sample_value("streamheal_queue_deferred") == 1.0
