"""`GET /metrics`: the series and their values after known events."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamheal.monitor import Monitor
from streamheal.web import create_app
from tests.helpers import TEST_TOKEN, running_monitor, settings_for, wait_for_state


RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {email: unknown@example.com}
    mode: fix
  - name: orders_need_status
    kind: required
    collection: orders
    fields: [status]
    severity: high
    mode: detect
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(monitor: Monitor) -> tuple[Samples, str]:
    response = await create_app(monitor, TEST_TOKEN).test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = await response.get_data(as_text=True)
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_counters_gauges_and_fixer_state_after_known_events(
    db: Any, mongo_uri: str
) -> None:
    settings = settings_for(db.name, RULES, FAST)
    async with running_monitor(mongo_uri, settings) as monitor:
        await db.users.insert_one({"_id": "u1"})
        await wait_for_state(monitor, lambda s: s.fixed_total == 1)
        await db.orders.insert_many([{"_id": 1}, {"_id": 2}])
        await wait_for_state(
            monitor, lambda s: s.detected_total == 3 and s.fixer_status == "idle"
        )

        samples, _ = await scrape(monitor)

        users = {"rule": "users_need_email", "kind": "required"}
        orders = {"rule": "orders_need_status", "kind": "required"}
        assert value(samples, "streamheal_violations_detected_total", **users) == 1
        assert value(samples, "streamheal_violations_fixed_total", **users) == 1
        assert value(samples, "streamheal_violations_failed_total", **users) == 0
        assert value(samples, "streamheal_fix_attempts_failed_total", **users) == 0
        assert value(samples, "streamheal_fix_conflicts_total", **users) == 0
        assert value(samples, "streamheal_violations_detected_total", **orders) == 2
        assert value(samples, "streamheal_violations_fixed_total", **orders) == 0
        assert value(samples, "streamheal_queue_length") == 2
        assert value(samples, "streamheal_queue_deferred") == 0
        assert value(samples, "streamheal_fixer_state", state="idle") == 1
        assert value(samples, "streamheal_fixer_state", state="paused") == 0
        assert value(samples, "streamheal_fixer_paused") == 0
        assert value(samples, "streamheal_database_connected") == 1
        assert value(samples, "streamheal_change_stream_healthy") == 1
        assert value(samples, "streamheal_sweeps_total") == 1
        assert value(samples, "streamheal_sweep_duration_seconds") == (
            monitor.state.last_sweep_duration_s
        )
        assert value(samples, "streamheal_last_sweep_timestamp_seconds") == (
            monitor.state.last_sweep_at
        )
        assert value(samples, "streamheal_change_stream_lag_seconds") == (
            monitor.state.stream_lag_s
        )
        assert 0 <= value(samples, "streamheal_resume_token_age_seconds") < 10
        batches = monitor.state.stream_batches
        assert value(samples, "streamheal_stream_batches_total") == batches
        assert value(samples, "streamheal_write_batch_size_count") == batches


async def test_pausing_shows_in_the_fixer_state(db: Any, mongo_uri: str) -> None:
    settings = settings_for(db.name, RULES, FAST)
    async with running_monitor(mongo_uri, settings) as monitor:
        monitor.fixer.pause()

        samples, _ = await scrape(monitor)

        assert value(samples, "streamheal_fixer_state", state="paused") == 1
        assert value(samples, "streamheal_fixer_state", state="idle") == 0
        assert value(samples, "streamheal_fixer_paused") == 1


async def test_batch_sizes_form_a_cumulative_histogram(db: Any, mongo_uri: str) -> None:
    settings = settings_for(db.name, RULES, FAST)
    async with running_monitor(mongo_uri, settings) as monitor:
        before = monitor.state.write_batch_sizes.observations
        assert before == 0
        for size in (1, 3, 250):
            monitor.state.record_write_batch(size)

        samples, _ = await scrape(monitor)

        bucket = "streamheal_write_batch_size_bucket"
        assert value(samples, bucket, le="1.0") == 1
        assert value(samples, bucket, le="2.0") == 1
        assert value(samples, bucket, le="5.0") == 2
        assert value(samples, bucket, le="200.0") == 2
        assert value(samples, bucket, le="500.0") == 3
        assert value(samples, bucket, le="+Inf") == 3
        assert value(samples, "streamheal_write_batch_size_count") == 3
        assert value(samples, "streamheal_write_batch_size_sum") == 254


async def test_each_monitor_has_its_own_registry(db: Any, mongo_uri: str) -> None:
    """Two monitors in one process must not share or clash over series."""
    settings = settings_for(db.name, RULES, FAST)
    async with running_monitor(mongo_uri, settings) as first:
        async with running_monitor(mongo_uri, settings) as second:
            first.state.record_write_batch(7)

            first_samples, _ = await scrape(first)
            second_samples, _ = await scrape(second)

            assert value(first_samples, "streamheal_write_batch_size_count") == 1
            assert value(second_samples, "streamheal_write_batch_size_count") == 0
