"""Turn BSON values into JSON-friendly ones for the API, logs and reports.

Relaxed Extended JSON is used throughout, so an ObjectId reads as
{"$oid": "..."} everywhere streamheal shows one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions


RELAXED = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)
MAX_LOGGED_CHARS = 500


def to_json_value(value: Any) -> Any:
    """A structure of plain JSON types equal to `value` in relaxed Extended JSON."""
    return json.loads(json_util.dumps(value, json_options=RELAXED))


def to_json_text(value: Any) -> str:
    """Canonical text for a value: keys kept in their order, no spaces."""
    return json_util.dumps(value, json_options=RELAXED, separators=(",", ":"))


def from_json_value(value: Any) -> Any:
    """The inverse of `to_json_value` for the values streamheal writes."""
    return json_util.loads(json.dumps(value), json_options=RELAXED)


def truncate_text(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """Cut a long text so that a huge document cannot flood a log line."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def short_hash(*parts: str, length: int = 16) -> str:
    """A stable hexadecimal digest of some texts, for ids and fingerprints."""
    digest = hashlib.sha256("\x00".join(parts).encode())
    return digest.hexdigest()[:length]


def get_path(document: Mapping[str, Any], path: str) -> list[Any]:
    """Values at a dotted path, walking into arrays as MongoDB does.

    Returns an empty list when the path is absent. An array at the end of the
    path is returned as one value (the array itself).
    """
    values: list[Any] = [document]
    for part in path.split("."):
        found: list[Any] = []
        for value in values:
            if isinstance(value, Mapping):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                if part.isdigit() and int(part) < len(value):
                    found.append(value[int(part)])
                found += [
                    item[part]
                    for item in value
                    if isinstance(item, Mapping) and part in item
                ]
        values = found
    return values
