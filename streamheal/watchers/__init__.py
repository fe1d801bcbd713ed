"""Turn what the database says into violations: stream, sweep, profiler."""

from __future__ import annotations

from streamheal.watchers._errors import is_history_lost, is_too_large, is_transient
from streamheal.watchers.profiler import ProfilerWatcher
from streamheal.watchers.stream import StreamWatcher, build_pipeline
from streamheal.watchers.sweep import Sweeper


__all__ = [
    "ProfilerWatcher",
    "StreamWatcher",
    "Sweeper",
    "build_pipeline",
    "is_history_lost",
    "is_too_large",
    "is_transient",
]
