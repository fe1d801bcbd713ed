"""A real Prometheus server scrapes `/metrics` and can query the series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Response, request

from streamheal.embedded import find_free_port
from streamheal.monitor import Monitor
from streamheal.web import create_app
from tests.helpers import (
    TEST_TOKEN,
    WAIT_TIMEOUT_S,
    running_monitor,
    settings_for,
    wait_for_state,
)
from tests.web.dashboard import LOOPBACK


PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"
# Prometheus is asked once after each scrape of ours; a sample can land just
# after the scrape's response, so a few scrapes are allowed.
MAX_SCRAPES = 10
QUERY_DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 2.0

RULES = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h"

CONFIG = """\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: streamheal
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


class ScrapeCounter:
    """Counts the scrapes of `/metrics`, so the test can await the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def seen(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def wait_beyond(self, count: int) -> int:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.count > count), QUERY_DEADLINE_S
            )
            return self.count


@contextlib.asynccontextmanager
async def serving_counted(
    monitor: Monitor, scrapes: ScrapeCounter
) -> AsyncIterator[str]:
    """The monitor's app on a free port, counting the scrapes; yields host:port."""
    app = create_app(monitor, TEST_TOKEN)

    @app.after_request
    async def count_scrapes(response: Response) -> Response:
        if request.path == "/metrics":
            await scrapes.seen()
        return response

    port = find_free_port()
    config = Config()
    config.bind = [f"{LOOPBACK}:{port}"]
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running_prometheus(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """Prometheus on a free loopback port scraping `target`; yields its URL."""
    assert shutil.which(PROMETHEUS), (
        "the Debian package `prometheus` is needed: apt-get install prometheus"
    )
    port = find_free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(interval=SCRAPE_INTERVAL, target=target))
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), WAIT_TIMEOUT_S)


async def query(base_url: str, expression: str) -> list[dict[str, Any]]:
    """One instant query's result list (empty when nothing matches yet)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})

    def fetch() -> list[dict[str, Any]]:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            result: list[dict[str, Any]] = json.load(response)["data"]["result"]
            return result

    return await asyncio.to_thread(fetch)


async def query_after_scrapes(
    base_url: str, scrapes: ScrapeCounter, expression: str
) -> list[dict[str, Any]]:
    """Ask after each scrape until the series shows, for a bounded number of scrapes."""
    seen = 0
    for _ in range(MAX_SCRAPES):
        seen = await scrapes.wait_beyond(seen)
        result = await query(base_url, expression)
        if result:
            return result
    raise AssertionError(
        f"Prometheus did not return {expression} after {MAX_SCRAPES} scrapes"
    )


@pytest.mark.slow
async def test_prometheus_scrapes_the_series(
    db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    settings = settings_for(db.name, RULES, FAST)
    async with running_monitor(mongo_uri, settings) as monitor:
        await db.users.insert_many([{"_id": "u1"}, {"_id": "u2"}])
        await wait_for_state(monitor, lambda s: s.detected_total == 2)
        scrapes = ScrapeCounter()

        async with (
            serving_counted(monitor, scrapes) as target,
            running_prometheus(tmp_path, target) as prometheus,
        ):
            detected = await query_after_scrapes(
                prometheus,
                scrapes,
                'streamheal_violations_detected_total{rule="users_need_email"}',
            )
            queue = await query_after_scrapes(
                prometheus, scrapes, "streamheal_queue_length"
            )
            batches = await query_after_scrapes(
                prometheus, scrapes, "streamheal_write_batch_size_count"
            )
            lag = await query_after_scrapes(
                prometheus, scrapes, "streamheal_change_stream_lag_seconds"
            )

        [series] = detected
        assert series["metric"]["kind"] == "required"
        assert series["metric"]["instance"] == target
        assert series["value"][1] == "2"
        assert queue[0]["value"][1] == "2"
        assert float(batches[0]["value"][1]) >= 1
        assert float(lag[0]["value"][1]) >= 0
