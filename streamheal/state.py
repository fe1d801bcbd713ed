"""What the monitor knows right now, as the dashboard and the API show it.

The state is written only by the monitor's own tasks (one event loop), read
as a JSON snapshot by `GET /api/state` and the websocket. Every change bumps
a version and wakes whoever waits for one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamheal._bson import to_json_value
from streamheal.rules import Rule, Violation


if TYPE_CHECKING:
    from streamheal.fixer._queue import QueueEntry, ViolationQueue


RECENT_SIZE = 50
ACTIVITY_SIZE = 50
CHART_MINUTES = 60
SECONDS_PER_MINUTE = 60
# Upper bounds of the per-write check batch-size histogram, in writes.
BATCH_SIZE_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
CHART_SERIES = ("detected", "fixed", "simulated")
# Every status the fixer reports in `fixer_status`. "simulating" is a dry run
# in progress, which writes nothing, so it is not "fixing".
FIXER_STATUSES = (
    "idle",
    "fixing",
    "simulating",
    "waiting",
    "paused",
    "waiting for approval",
    "auto-fix off",
    "stopped",
)


def iso_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(
        timespec="milliseconds"
    )


def optional_iso_time(timestamp: float | None) -> str | None:
    return None if timestamp is None else iso_time(timestamp)


def describe_violation(violation: Violation) -> dict[str, Any]:
    """The JSON form of a violation, shared by the API and `streamheal check`."""
    return {
        "id": violation.id,
        "rule": violation.rule,
        "kind": violation.kind,
        "collection": violation.collection,
        "severity": violation.severity.value,
        "description": violation.description,
        "documents": to_json_value(list(violation.documents)),
        "key": to_json_value(violation.key),
        "details": to_json_value(dict(violation.details)),
    }


@dataclass
class RuleStats:
    open: int = 0
    detected: int = 0
    fixed: int = 0
    failed: int = 0
    simulated: int = 0
    failed_attempts: int = 0  # each failed try, retried or the last
    conflicts: int = 0  # tries stopped because a document changed first
    last_seen: float | None = None


@dataclass
class MinuteCounts:
    """Detections and fixes per wall-clock minute over the last hour.

    The chart needs counts per minute, and only the server saw every event:
    a page opened later must draw the same bars as one open all along. The
    buckets form a ring keyed by minute number, so memory stays flat.
    """

    size: int = CHART_MINUTES
    _buckets: dict[int, dict[str, int]] = field(default_factory=dict)

    def add(self, series: str, timestamp: float) -> None:
        minute = int(timestamp // SECONDS_PER_MINUTE)
        bucket = self._buckets.setdefault(minute, {})
        bucket[series] = bucket.get(series, 0) + 1
        for old in [number for number in self._buckets if number <= minute - self.size]:
            del self._buckets[old]

    def series(self, now: float, names: tuple[str, ...]) -> dict[str, list[int]]:
        """The last `size` minutes up to `now`, oldest first, zeros filled in.

        `minutes` holds each minute's start in seconds since the epoch.
        """
        last = int(now // SECONDS_PER_MINUTE)
        numbers = range(last - self.size + 1, last + 1)
        result = {"minutes": [number * SECONDS_PER_MINUTE for number in numbers]}
        for name in names:
            result[name] = [
                self._buckets.get(number, {}).get(name, 0) for number in numbers
            ]
        return result


@dataclass
class SizeHistogram:
    """A cumulative histogram of sizes, read by the metrics collector.

    It lives in the state rather than in a prometheus-client object so that
    every web app built for the monitor (one per dashboard restart) reports
    the same counts since the monitor started.
    """

    bounds: tuple[int, ...] = BATCH_SIZE_BOUNDS
    counts: list[int] = field(
        default_factory=lambda: [0] * (len(BATCH_SIZE_BOUNDS) + 1)
    )
    total: int = 0
    observations: int = 0

    def observe(self, size: int) -> None:
        slot = next(
            (index for index, bound in enumerate(self.bounds) if size <= bound),
            len(self.bounds),
        )
        self.counts[slot] += 1
        self.total += size
        self.observations += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count at or below it) pairs, ending with infinity."""
        pairs: list[tuple[float, int]] = []
        running = 0
        bounds = [*map(float, self.bounds), math.inf]
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


@dataclass
class MonitorState:
    """Counters, lists and the current fix; `snapshot()` is the API's body."""

    database: str
    server_address: str
    queue: ViolationQueue
    rules: list[Rule]
    connected: bool = False
    server_version: str | None = None
    replica_set: str | None = None
    stream_healthy: bool = False
    detected_total: int = 0
    fixed_total: int = 0
    failed_total: int = 0
    simulated_total: int = 0
    sweeps: int = 0
    stream_batches: int = 0
    last_sweep_at: float | None = None
    last_sweep_duration_s: float | None = None
    last_event_at: float | None = None
    stream_lag_s: float | None = None
    resume_token_saved_at: float | None = None
    fixer_status: str = "idle"  # one of FIXER_STATUSES
    paused: bool = False
    current_fix: dict[str, Any] | None = None
    history_lost: int = 0
    started_at: float = field(default_factory=time.time)
    recent_detections: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_SIZE)
    )
    recent_fixes: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_SIZE)
    )
    activity: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=ACTIVITY_SIZE)
    )
    rule_stats: dict[str, RuleStats] = field(default_factory=dict)
    per_minute: MinuteCounts = field(default_factory=MinuteCounts)
    write_batch_sizes: SizeHistogram = field(default_factory=SizeHistogram)
    version: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        for rule in self.rules:
            self.rule_stats.setdefault(rule.name, RuleStats())

    def touch(self) -> None:
        """Mark the state changed and wake the websocket pushers."""
        self.version += 1
        self._changed.set()

    async def wait_changed(self, after_version: int) -> int:
        """Wait until the version passes `after_version`; return the new one."""
        while self.version <= after_version:
            self._changed.clear()
            await self._changed.wait()
        return self.version

    def add_activity(self, level: str, event: str, fields: Mapping[str, Any]) -> None:
        entry = {"time": iso_time(time.time()), "level": level, "event": event}
        entry["fields"] = to_json_value(
            {k: v for k, v in fields.items() if v is not None}
        )
        self.activity.appendleft(entry)
        self.touch()

    def record_detection(self, violation: Violation, source: str) -> None:
        self.detected_total += 1
        stats = self.rule_stats.setdefault(violation.rule, RuleStats())
        stats.detected += 1
        stats.last_seen = time.time()
        self.per_minute.add("detected", stats.last_seen)
        entry = describe_violation(violation)
        entry.update(time=iso_time(time.time()), source=source)
        self.recent_detections.appendleft(entry)
        self.touch()

    def record_fix(self, record: Mapping[str, Any]) -> None:
        """A fix that finished, was simulated, failed or was rolled back."""
        status = record.get("status")
        rule = str(record.get("rule"))
        stats = self.rule_stats.setdefault(rule, RuleStats())
        if status == "applied":
            self.fixed_total += 1
            stats.fixed += 1
            self.per_minute.add("fixed", time.time())
        elif status == "dry_run":
            self.simulated_total += 1
            stats.simulated += 1
            self.per_minute.add("simulated", time.time())
        elif status == "failed":
            self.failed_total += 1
            stats.failed += 1
        self.recent_fixes.appendleft(to_json_value(dict(record)))
        self.touch()

    def record_write_batch(self, writes: int) -> None:
        """A per-write check ran on a batch of `writes` change events."""
        self.write_batch_sizes.observe(writes)

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard shows, as plain JSON values."""
        entries = list(self.queue)
        open_by_rule: dict[str, int] = {}
        for entry in entries:
            open_by_rule[entry.violation.rule] = (
                open_by_rule.get(entry.violation.rule, 0) + 1
            )

        return {
            "version": self.version,
            "database": {
                "name": self.database,
                "address": self.server_address,
                "connected": self.connected,
                "server_version": self.server_version,
                "replica_set": self.replica_set,
                "stream_healthy": self.stream_healthy,
            },
            "counts": {
                "detected": self.detected_total,
                "fixed": self.fixed_total,
                "failed": self.failed_total,
                "simulated": self.simulated_total,
                "in_queue": len(entries),
                "deferred": self.queue.deferred_count,
                "checks": self.sweeps + self.stream_batches,
                "sweeps": self.sweeps,
                "stream_batches": self.stream_batches,
                "history_lost": self.history_lost,
            },
            "fixer": {
                "status": self.fixer_status,
                "paused": self.paused,
                "current": self.current_fix,
            },
            "stream": {
                "last_event_at": iso_time(self.last_event_at)
                if self.last_event_at
                else None,
                "lag_s": self.stream_lag_s,
                "resume_token_saved_at": (
                    iso_time(self.resume_token_saved_at)
                    if self.resume_token_saved_at
                    else None
                ),
            },
            "sweep": {
                "last_at": iso_time(self.last_sweep_at) if self.last_sweep_at else None,
                "duration_s": self.last_sweep_duration_s,
            },
            "queue": [describe_entry(entry) for entry in entries],
            "recent_detections": list(self.recent_detections),
            "recent_fixes": list(self.recent_fixes),
            "activity": list(self.activity),
            "rules": [
                {
                    "name": rule.name,
                    "kind": rule.kind,
                    "collection": rule.collection,
                    "mode": rule.mode,
                    "severity": rule.severity.value,
                    "description": rule.description,
                    "fix": rule.describe_fix(),
                    "open": open_by_rule.get(rule.name, 0),
                    "detected": self.rule_stats[rule.name].detected,
                    "fixed": self.rule_stats[rule.name].fixed,
                    "failed": self.rule_stats[rule.name].failed,
                    "simulated": self.rule_stats[rule.name].simulated,
                    "last_seen": optional_iso_time(
                        self.rule_stats[rule.name].last_seen
                    ),
                }
                for rule in self.rules
            ],
            "per_minute": self.per_minute.series(time.time(), CHART_SERIES),
            "started_at": iso_time(self.started_at),
        }


def describe_entry(entry: QueueEntry) -> dict[str, Any]:
    described = describe_violation(entry.violation)
    described.update(
        status=entry.status.value,
        source=entry.source,
        first_seen=iso_time(entry.first_seen),
        last_seen=iso_time(entry.last_seen),
        seen_count=entry.seen_count,
        attempts=entry.attempts,
        last_error=entry.last_error,
        held_fix_id=entry.held_fix_id,
    )
    return described
