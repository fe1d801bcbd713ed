"""One call for an outcome: a structured log line and an activity entry.

The dashboard's activity list is the same events the log carries, so the
two can never tell different stories.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog


class ActivitySink(Protocol):
    def add_activity(self, level: str, event: str, fields: dict[str, Any]) -> None: ...


class EventLog:
    """Log an event with fields; info and above also go to the activity list."""

    def __init__(self, sink: ActivitySink | None, component: str) -> None:
        self._sink = sink
        self._logger = structlog.get_logger("streamheal").bind(component=component)

    def debug(self, event: str, **fields: Any) -> None:
        self._logger.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        getattr(self._logger, level)(event, **fields)
        if self._sink is not None:
            self._sink.add_activity(level, event, fields)
