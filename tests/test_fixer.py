"""The fixer's status: what the state, the metrics and the dashboard report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from streamheal.state import FIXER_STATUSES
from streamheal.web._metrics import FIXER_STATES, state_registry
from tests.fault.fixer_support import fail_point
from tests.helpers import running_monitor, settings_for, wait_for_state


DASHBOARD_JS = (
    Path(__file__).resolve().parents[1] / "streamheal/web/static/dashboard.js"
)
ALLOWED = """
  - name: order_status_is_known
    kind: allowed
    collection: orders
    field: status
    values: [pending, paid]
    fix: set_default
    default: pending
    mode: dry_run
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h"
# Long enough to be seen by the test, short enough not to slow the suite.
HOLD_MS = 2000
# The statuses the fixer reports (issue: fixer status), in sorted order.
EVERY_STATUS = [
    "auto-fix off",
    "fixing",
    "idle",
    "paused",
    "simulating",
    "stopped",
    "waiting",
    "waiting for approval",
]


def fixer_state(monitor: Any, status: str) -> float | None:
    registry = state_registry(monitor.state)
    return registry.get_sample_value("streamheal_fixer_state", {"state": status})


async def test_a_dry_run_in_progress_is_simulating_not_fixing(
    db: Any, mongo_client: Any, mongo_uri: str
) -> None:
    """The dry run's audit record (streamheal's first insert) is held meanwhile."""
    settings = settings_for(db.name, ALLOWED, FAST)
    await db.orders.insert_one({"_id": "o1", "status": "bogus"})

    async with fail_point(mongo_client, ["insert"], block_ms=HOLD_MS):
        async with running_monitor(mongo_uri, settings) as monitor:

            def is_held_at_audit(state: Any) -> bool:
                current = state.current_fix
                return current is not None and current["step"] == "audit"

            await wait_for_state(monitor, is_held_at_audit)

            assert monitor.state.fixer_status == "simulating"
            assert monitor.state.snapshot()["fixer"]["status"] == "simulating"
            assert fixer_state(monitor, "simulating") == 1.0
            assert fixer_state(monitor, "fixing") == 0.0

            await wait_for_state(
                monitor,
                lambda state: (
                    state.simulated_total == 1 and state.fixer_status == "idle"
                ),
            )

    assert await db.orders.find({}).to_list() == [{"_id": "o1", "status": "bogus"}]


def test_the_metrics_and_the_dashboard_know_every_fixer_status() -> None:
    labels = re.search(r"FIXER_LABELS = \{(.*?)\};", DASHBOARD_JS.read_text(), re.S)
    assert labels is not None
    keys = re.findall(r'^\s*"?([a-z -]+?)"?:', labels.group(1), re.M)

    assert sorted(FIXER_STATUSES) == EVERY_STATUS
    assert sorted(FIXER_STATES) == EVERY_STATUS
    assert sorted(keys) == EVERY_STATUS
