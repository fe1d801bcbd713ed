"""What the fixer's fault tests share: fail points, raw reads, a fixer worker.

Fail points are scoped to streamheal's connections (`appName: streamheal`),
so the test's own client keeps working while streamheal is held or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bson import CodecOptions, Decimal128, Int64, MaxKey, MinKey, Regex, Timestamp
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from tests.process import StreamhealProcess


APP_NAME = "streamheal"
BLOCK_MS = 4000
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
RAW = CodecOptions(document_class=RawBSONDocument)


@contextlib.asynccontextmanager
async def fail_point(
    client: Any,
    commands: list[str],
    *,
    skip: int = 0,
    times: int = 1,
    block_ms: int = 0,
    error_code: int | None = None,
) -> AsyncIterator[None]:
    """`failCommand` on streamheal's connections, switched off on the way out."""
    data: dict[str, Any] = {"failCommands": commands, "appName": APP_NAME}
    if block_ms:
        data.update(blockConnection=True, blockTimeMS=block_ms)
    if error_code is not None:
        data["errorCode"] = error_code
    mode: dict[str, int] = {"times": times}
    if skip:
        mode["skip"] = skip
    await client.admin.command(
        {"configureFailPoint": "failCommand", "mode": mode, "data": data}
    )
    try:
        yield
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def raw_documents(db: Any, collection: str) -> dict[Any, bytes]:
    """Every document of a collection as its raw BSON bytes, by `_id`."""
    raw = db.get_collection(collection, codec_options=RAW)
    found: dict[Any, bytes] = {}
    async for document in raw.find({}):
        found[document["_id"]] = document.raw
    return found


def every_bson_type(document_id: str, email: str) -> dict[str, Any]:
    """A document holding each BSON type a production collection may hold."""
    return {
        "_id": document_id,
        "email": email,
        "double": 1.5,
        "negative_zero": -0.0,
        "infinity": float("inf"),
        "int32": 7,
        "int64": Int64(2**40),
        "decimal": Decimal128("1234.5000"),
        "decimal_nan": Decimal128("NaN"),
        "binary": Binary(b"\x00\x01\xff", 0),
        "uuid_old": Binary(b"0123456789abcdef", 3),
        "uuid": Binary(b"fedcba9876543210", 4),
        "md5": Binary(b"0123456789abcdef", 5),
        "user_binary": Binary(b"\x80custom", 0x80),
        "regex": Regex("^a.*z$", "im"),
        "timestamp": Timestamp(1700000000, 7),
        "date": DatetimeMS(1_700_000_000_123),
        # SecantusDB (a Python server) refuses dates outside Python's range
        # (years 1 to 9999) with "invalid BSON"; MongoDB stores any int64 of
        # milliseconds. The test keeps to the edges that both accept.
        "date_last": DatetimeMS(LAST_MS),
        "date_first": DatetimeMS(FIRST_MS),
        "object_id": ObjectId("64b7f0c2a1b2c3d4e5f60718"),
        "min": MinKey(),
        "max": MaxKey(),
        "code": Code("function () { return 1; }"),
        "flag": True,
        "nothing": None,
        "nested": {"b": 2, "a": [1, "two", {"three": Int64(3)}], "": "empty key"},
    }


async def wait_for_step(
    streamheal: StreamhealProcess, step: str, operation: int | None = None
) -> dict[str, Any]:
    """The log event of the fixer starting `step` (and write `operation`)."""
    return await streamheal.wait_for(
        "fix_step_started",
        lambda event: event.get("step") == step and event.get("operation") == operation,
    )


async def kill(streamheal: StreamhealProcess) -> None:
    """SIGKILL: no clean-up of any kind runs."""
    streamheal.process.kill()
    await asyncio.wait_for(streamheal.process.wait(), 20)


@contextlib.asynccontextmanager
async def fixer_worker(rules: Path) -> AsyncIterator[StreamhealProcess]:
    """`python -m tests.fault.fixer_worker RULES`: sweeps and fixer, no stream.

    A standalone server has neither transactions nor change streams, so
    `streamheal run` cannot watch it; the worker runs the monitor's own
    sweeper and fixer, which is all a fix needs.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fault.fixer_worker", str(rules),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    running = StreamhealProcess(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            await running.stop()
