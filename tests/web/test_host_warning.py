"""`serve` on a non-loopback address: a warning, and actions still need the token.

The dashboard is served for real by Hypercorn on a free port, and the API is
reached over TCP, as another machine on the network would reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamheal.config import parse_settings
from streamheal.monitor import Monitor
from streamheal.web import TOKEN_HEADER, serve
from tests.helpers import (
    TEST_TOKEN,
    WAIT_TIMEOUT_S,
    running_monitor,
    wait_for_state,
)


RULES = """\
mongodb:
  uri: unused
  database: {database}
engine:
  fix_delay: 0
  sweep_interval: 1h
dashboard:
  host: '{host}'
  port: 0
rules:
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    mode: detect
"""
PAUSE_PATH = "api/fixer/pause"


async def post(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    """POST with no body from a worker thread; the status and the JSON answer."""

    def send() -> tuple[int, Any]:
        request = urllib.request.Request(url, data=b"", headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=WAIT_TIMEOUT_S) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    return await asyncio.to_thread(send)


@pytest.fixture
def serving_dashboard(db: Any, mongo_uri: str) -> Any:
    """A factory: a running monitor whose dashboard is served on `host`."""

    @contextlib.asynccontextmanager
    async def serving(host: str) -> AsyncIterator[tuple[Monitor, list[Any]]]:
        settings = parse_settings(RULES.format(database=db.name, host=host))
        async with running_monitor(mongo_uri, settings) as monitor:
            stop = asyncio.Event()
            with capture_logs() as logs:
                server = asyncio.create_task(serve(monitor, stop))
                try:
                    await wait_for_state(
                        monitor, lambda _: monitor.dashboard_url is not None
                    )
                    yield monitor, logs
                finally:
                    stop.set()
                    await asyncio.wait_for(server, WAIT_TIMEOUT_S)

    return serving


def port_of(url: str | None) -> int:
    assert url is not None
    return int(url.rstrip("/").rsplit(":", 1)[1])


class TestDashboardHost:
    async def test_all_interfaces_warn_that_the_dashboard_is_exposed(
        self, serving_dashboard: Any
    ) -> None:
        async with serving_dashboard("0.0.0.0") as (monitor, logs):
            url = monitor.dashboard_url

        exposed = [log for log in logs if log["event"] == "dashboard_exposed"]
        # The port asked for is 0 (any free one); the warning names the bound one.
        assert port_of(url) > 0
        assert exposed == [
            {
                "event": "dashboard_exposed",
                "log_level": "warning",
                "component": "monitor",
                "host": "0.0.0.0",
                "port": port_of(url),
                "note": "reachable from other machines; actions still need the token",
            }
        ]
        [started] = [log for log in logs if log["event"] == "dashboard_started"]
        assert started["url"] == f"http://0.0.0.0:{port_of(url)}/"

    async def test_loopback_does_not_warn(self, serving_dashboard: Any) -> None:
        async with serving_dashboard("127.0.0.1") as (monitor, logs):
            url = monitor.dashboard_url

        assert [log for log in logs if log["event"] == "dashboard_exposed"] == []
        [started] = [log for log in logs if log["event"] == "dashboard_started"]
        assert started["url"] == f"http://127.0.0.1:{port_of(url)}/"

    async def test_an_exposed_dashboard_still_refuses_actions_without_the_token(
        self, serving_dashboard: Any
    ) -> None:
        async with serving_dashboard("0.0.0.0") as (monitor, _):
            # Reached by a name outside the loopback set, as from another machine.
            address = f"http://127.0.0.1:{port_of(monitor.dashboard_url)}/"
            headers = {"Host": f"streamheal.example:{port_of(monitor.dashboard_url)}"}
            refused = await post(address + PAUSE_PATH, headers)
            paused_after_refusal = monitor.state.paused
            accepted = await post(
                address + PAUSE_PATH, {**headers, TOKEN_HEADER: TEST_TOKEN}
            )
            paused_after_acceptance = monitor.state.paused

        assert refused == (401, {"error": "This action needs the streamheal token."})
        assert paused_after_refusal is False
        assert accepted[0] == 200
        assert paused_after_acceptance is True
