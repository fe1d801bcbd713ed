"""Turn what the database says into violations: stream, sweep, profiler."""

from __future__ import annotations

from streamheal.watchers.profiler import ProfilerWatcher
from streamheal.watchers.stream import StreamWatcher, build_pipeline, is_history_lost
from streamheal.watchers.sweep import Sweeper


__all__ = [
    "ProfilerWatcher",
    "StreamWatcher",
    "Sweeper",
    "build_pipeline",
    "is_history_lost",
]
