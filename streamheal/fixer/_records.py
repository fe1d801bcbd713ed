"""What the fixer keeps in MongoDB, and how it reads and matches documents.

Backups (`streamheal_backups`) and audit records (`streamheal_fixes`) live in
the watched database, so they survive a restart of streamheal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.collection import AsyncCollection

from streamheal._bson import to_json_text
from streamheal.rules import Database


BACKUPS = "streamheal_backups"
FIXES = "streamheal_fixes"
DOCUMENT_ACTIONS = ("insert", "replace", "delete")
CHANGING_ACTIONS = ("replace", "delete")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def raw_collection(db: Database, name: str) -> AsyncCollection[RawBSONDocument]:
    """The collection read as raw BSON: nothing is decoded, so nothing changes."""
    options = db.codec_options.with_options(document_class=RawBSONDocument)
    collection: AsyncCollection[RawBSONDocument] = db.get_collection(
        name, codec_options=options
    )  # type: ignore[assignment]  # the codec options make it raw; typing cannot see that
    return collection


def unchanged_filter(document_id: Any, document: Mapping[str, Any]) -> dict[str, Any]:
    """Match the document only while it is still exactly `document`."""
    return {"_id": document_id, "$expr": {"$eq": ["$$ROOT", {"$literal": document}]}}


def document_key(collection: str, document_id: Any) -> tuple[str, str]:
    return (collection, to_json_text(document_id))
