"""`GET /metrics`: the monitor state in Prometheus text format.

The collector reads `MonitorState` when Prometheus scrapes instead of keeping
counters of its own, so the numbers on the dashboard and in Prometheus come
from one place and can never drift apart. Each app gets its own registry:
the global one would mix several monitors (the tests run many) and refuse a
second registration of the same names.
https://prometheus.github.io/client_python/collector/custom/
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamheal.state import FIXER_STATUSES


if TYPE_CHECKING:
    from streamheal.state import MonitorState


PREFIX = "streamheal"
# Every status the fixer reports, so that a state's series exists (at 0)
# before the fixer first enters it and alerts can be written against it.
FIXER_STATES = FIXER_STATUSES


class StateCollector(Collector):
    """Turns one monitor's state into metric families at scrape time."""

    def __init__(self, state: MonitorState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._violations()
        yield from self._queue_and_fixer()
        yield from self._stream()
        yield from self._checks()

    def _violations(self) -> Iterator[Metric]:
        kinds = {rule.name: rule.kind for rule in self.state.rules}
        families = {
            "detected": CounterMetricFamily(
                f"{PREFIX}_violations_detected",
                "Violations detected and queued, by rule.",
                labels=["rule", "kind"],
            ),
            "fixed": CounterMetricFamily(
                f"{PREFIX}_violations_fixed",
                "Violations repaired by an applied fix, by rule.",
                labels=["rule", "kind"],
            ),
            "failed": CounterMetricFamily(
                f"{PREFIX}_violations_failed",
                "Violations whose fix was given up after its attempts, by rule.",
                labels=["rule", "kind"],
            ),
            "simulated": CounterMetricFamily(
                f"{PREFIX}_violations_simulated",
                "Dry-run fixes recorded without changing data, by rule.",
                labels=["rule", "kind"],
            ),
            "failed_attempts": CounterMetricFamily(
                f"{PREFIX}_fix_attempts_failed",
                "Fix attempts that failed, retried or given up, by rule.",
                labels=["rule", "kind"],
            ),
            "conflicts": CounterMetricFamily(
                f"{PREFIX}_fix_conflicts",
                "Fix attempts stopped because a document changed first, by rule.",
                labels=["rule", "kind"],
            ),
        }
        for rule, stats in sorted(self.state.rule_stats.items()):
            labels = [rule, kinds.get(rule, "unknown")]
            families["detected"].add_metric(labels, stats.detected)
            families["fixed"].add_metric(labels, stats.fixed)
            families["failed"].add_metric(labels, stats.failed)
            families["simulated"].add_metric(labels, stats.simulated)
            families["failed_attempts"].add_metric(labels, stats.failed_attempts)
            families["conflicts"].add_metric(labels, stats.conflicts)
        yield from families.values()

    def _queue_and_fixer(self) -> Iterator[Metric]:
        state = self.state
        yield gauge("queue_length", "Violations in the queue now.", len(state.queue))
        yield gauge(
            "queue_deferred",
            "Violations left out of the full queue until the next sweep.",
            state.queue.deferred_count,
        )
        fixer = GaugeMetricFamily(
            f"{PREFIX}_fixer_state",
            "1 for the fixer's current status, 0 for the others.",
            labels=["state"],
        )
        known = (
            FIXER_STATES
            if state.fixer_status in FIXER_STATES
            else (
                *FIXER_STATES,
                state.fixer_status,
            )
        )
        for name in known:
            fixer.add_metric([name], 1 if name == state.fixer_status else 0)
        yield fixer
        yield gauge(
            "fixer_paused", "1 while a person has paused the fixer.", state.paused
        )

    def _stream(self) -> Iterator[Metric]:
        state = self.state
        yield gauge("database_connected", "1 while MongoDB answers.", state.connected)
        yield gauge(
            "change_stream_healthy",
            "1 while the change stream is open.",
            state.stream_healthy,
        )
        # Unknown values are left out rather than reported as 0, which
        # would read as "no lag" to an alert.
        if state.stream_lag_s is not None:
            yield gauge(
                "change_stream_lag_seconds",
                "Now minus the cluster time of the last change event handled.",
                state.stream_lag_s,
            )
        if state.resume_token_saved_at is not None:
            yield gauge(
                "resume_token_age_seconds",
                "Seconds since the resume token was last stored.",
                max(0.0, time.time() - state.resume_token_saved_at),
            )

    def _checks(self) -> Iterator[Metric]:
        state = self.state
        yield counter("sweeps", "Full sweeps finished.", state.sweeps)
        yield counter("history_lost", "Resume points lost; swept.", state.history_lost)
        yield counter(
            "stream_batches", "Batches of change events checked.", state.stream_batches
        )
        if state.last_sweep_duration_s is not None:
            yield gauge(
                "sweep_duration_seconds",
                "How long the last sweep took.",
                state.last_sweep_duration_s,
            )
        if state.last_sweep_at is not None:
            yield gauge(
                "last_sweep_timestamp_seconds",
                "When the last sweep finished, in seconds since the epoch.",
                state.last_sweep_at,
            )
        sizes = state.write_batch_sizes
        histogram = HistogramMetricFamily(
            f"{PREFIX}_write_batch_size",
            "Change events per per-write check batch.",
            buckets=[
                (bucket_label(bound), count) for bound, count in sizes.cumulative()
            ],
            sum_value=sizes.total,
        )
        yield histogram


def bucket_label(bound: float) -> str:
    """An `le` label as Prometheus writes one: "5.0", "+Inf"."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def state_registry(state: MonitorState) -> CollectorRegistry:
    """A registry holding only this monitor's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    return registry
