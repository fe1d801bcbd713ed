"""Screenshots of the dashboard for the README, taken from the running demo.

The demo's own rules, data and traffic run against the test server; the
pictures are saved under docs/ at desktop and phone width.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from streamheal.config import load_settings
from streamheal.demo import DEMO_RULES, load_demo_data, write_traffic
from tests.helpers import wait_for_state
from tests.web.dashboard import running_dashboard


pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHOTS = {
    "dashboard-desktop.png": {"width": 1280, "height": 800},
    "dashboard-phone.png": {"width": 375, "height": 812},
}
# Shorter than the demo's 2 s so that the fixed list fills while we wait.
FIX_DELAY_S = 0.2
ENOUGH_FIXES = 6
ENOUGH_SIMULATED = 2
DATA_TIMEOUT_S = 60.0


def has_enough_data(state: Any) -> bool:
    return (
        state.fixed_total >= ENOUGH_FIXES
        and state.simulated_total >= ENOUGH_SIMULATED
        and state.stream_batches >= 1
        and len(state.queue) >= 1
    )


async def test_screenshots_of_the_running_demo(
    db: Any, mongo_uri: str, browser: Browser
) -> None:
    demo = load_settings(str(DEMO_RULES))
    settings = demo.model_copy(
        update={
            "mongodb": demo.mongodb.model_copy(update={"database": db.name}),
            "engine": demo.engine.model_copy(update={"fix_delay": FIX_DELAY_S}),
        }
    )
    await load_demo_data(db)
    stop_traffic = asyncio.Event()

    async with running_dashboard(mongo_uri, settings) as dashboard:
        traffic = asyncio.create_task(write_traffic(db, stop_traffic))
        try:
            await wait_for_state(dashboard.monitor, has_enough_data, DATA_TIMEOUT_S)
            for name, viewport in SHOTS.items():
                context = await browser.new_context(viewport=viewport)
                page = await context.new_page()
                await page.goto(dashboard.url)
                await expect(page.locator("#connection")).to_have_text("Live")
                await expect(page.locator("#chart canvas")).to_be_visible()
                await expect(page.locator("#fixed li").first).to_be_visible()
                await page.screenshot(path=str(DOCS / name), full_page=True)
                await context.close()
        finally:
            stop_traffic.set()
            await traffic

    for name in SHOTS:
        assert (DOCS / name).stat().st_size > 0
