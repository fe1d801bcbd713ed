"""The dashboard in a real browser: numbers, live updates, safety, actions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Route, expect

from streamheal.state import describe_violation
from streamheal.web._actions import ACTIONS
from tests.helpers import TEST_TOKEN, settings_for, wait_for_state
from tests.web.conftest import WatchedPage
from tests.web.dashboard import running_dashboard


pytestmark = pytest.mark.browser

USERS_RULE = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {{email: unknown@example.com}}
    severity: high
    mode: {mode}
"""
ORDERS_RULE = """
  - name: orders_need_status
    kind: required
    collection: orders
    fields: [status]
    severity: low
    mode: detect
"""
FAST = "  fix_delay: 0\n  sweep_interval: 1h"
HOSTILE = "<img src=x onerror=alert(1)>"
SNAPSHOT_ON_OPEN = 2  # the page's first fetch is on load, the second on opening


def users_rule(mode: str) -> str:
    return USERS_RULE.format(mode=mode)


async def test_cards_carry_the_monitor_numbers(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    await db.users.insert_many([{"_id": "u1"}, {"_id": "u2"}])
    await db.orders.insert_one({"_id": 1})
    settings = settings_for(db.name, users_rule("detect") + ORDERS_RULE, FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        state = dashboard.monitor.state
        await page.goto(dashboard.url)

        await expect(page.locator("#card-detected .value")).to_have_text("3")
        await expect(page.locator("#card-queue .value")).to_have_text("3")
        await expect(page.locator("#card-queue .sub")).to_have_text("0 deferred")
        await expect(page.locator("#card-fixed .value")).to_have_text("0")
        await expect(page.locator("#card-fixer .value")).to_have_text("Auto-fix off")
        await expect(page.locator("#card-checks .value")).to_have_text(
            str(state.sweeps + state.stream_batches)
        )
        await expect(page.locator("#card-database .value")).to_have_text("Connected")
        await expect(page.locator("#card-database .sub")).to_have_text(
            f"MongoDB {state.server_version} · {state.replica_set}"
        )
        await expect(page.locator("#rules tbody tr")).to_have_count(2)
        await expect(page.locator("#rules tbody tr").first).to_contain_text(
            "users_need_email"
        )
        assert watched_page.errors == []
        assert watched_page.console_errors == []


async def test_bad_write_appears_live_then_moves_to_fixed(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    settings = settings_for(db.name, users_rule("fix"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        await page.goto(dashboard.url)
        await expect(page.locator("#connection")).to_have_text("Live")
        # A reload would lose this marker, so keeping it proves none happened.
        await page.evaluate("window.notReloaded = true")

        await db.users.insert_one({"_id": "live-1", "name": "no mail"})

        detected = page.locator("#detected li", has_text="live-1")
        await expect(detected).to_have_count(1)
        await expect(detected).to_contain_text("missing email")
        await expect(detected).to_contain_text("via stream")
        await expect(detected).to_have_class("item sev-high")
        fixed = page.locator("#fixed li", has_text="users_need_email")
        await expect(fixed).to_have_count(1)
        await expect(fixed).to_contain_text("Fixed")
        await expect(fixed).to_contain_text("set email='unknown@example.com'")
        await expect(detected).to_have_attribute("data-status", "fixed")
        await expect(page.locator("#card-fixed .value")).to_have_text("1")
        assert await page.evaluate("window.notReloaded") is True
        assert watched_page.errors == []


async def test_hostile_document_renders_as_text_and_runs_nothing(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    settings = settings_for(db.name, users_rule("dry_run"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        await page.goto(dashboard.url)
        await expect(page.locator("#connection")).to_have_text("Live")

        await db.users.insert_one({"_id": HOSTILE, "name": HOSTILE})
        await wait_for_state(dashboard.monitor, lambda s: s.simulated_total == 1)

        detected = page.locator("#detected li").first
        await expect(detected).to_contain_text(HOSTILE)
        simulated = page.locator("#fixed li").first
        await expect(simulated).to_contain_text("Simulated")
        # The dry run's before/after shows the document's fields as text.
        diff = page.locator("#current-body table.diff")
        await expect(diff).to_contain_text(HOSTILE)
        await expect(diff.locator("tr.is-added")).to_contain_text("unknown@example.com")
        await expect(page.locator("img[src='x']")).to_have_count(0)
        assert watched_page.dialogs == []
        assert watched_page.errors == []
        assert watched_page.console_errors == []


async def test_actions_are_refused_without_the_token_and_work_with_it(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    settings = settings_for(db.name, users_rule("fix") + ORDERS_RULE, FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        monitor = dashboard.monitor
        page = watched_page.page
        await db.users.insert_one({"_id": "u1", "name": "no mail"})
        await db.orders.insert_one({"_id": 7})
        await wait_for_state(
            monitor, lambda s: s.fixed_total == 1 and len(s.queue) == 1
        )
        await page.goto(dashboard.url)

        # Read-only: the buttons are there but disabled, and the API says 401.
        pause = page.locator("#pause-button")
        await expect(pause).to_be_disabled()
        await expect(page.locator("#fixed li button.action")).to_be_disabled()
        status = await page.evaluate(
            "fetch('/api/fixer/pause', {method: 'POST'}).then(r => r.status)"
        )
        assert status == 401
        await page.click("#token-button")
        await page.fill("#token-input", "wrong-token")
        await page.click("#token-form button[type=submit]")
        await expect(page.locator("#token-message")).to_have_text(
            "The server refused this token."
        )
        await expect(pause).to_be_disabled()
        assert monitor.state.paused is False

        await page.fill("#token-input", TEST_TOKEN)
        await page.click("#token-form button[type=submit]")
        await expect(pause).to_be_enabled()

        await pause.click()
        await expect(page.locator("#card-fixer .value")).to_have_text("Paused")
        assert monitor.state.paused is True

        rollback = page.locator("#fixed li button", has_text="Roll back")
        await rollback.click()
        await expect(page.locator("#fixed li").first).to_contain_text("Rolled back")
        await expect(
            page.locator("#fixed li", has_text="then rolled back")
        ).to_have_count(1)
        assert await db.users.find_one({"_id": "u1"}) == {
            "_id": "u1",
            "name": "no mail",
        }

        order = page.locator("#detected li", has_text="orders_need_status")
        await order.locator("button", has_text="Skip").click()
        await expect(order).to_have_attribute("data-status", "skipped")

        await page.locator("#pause-button", has_text="Resume").click()
        await expect(page.locator("#card-fixer .value")).not_to_have_text("Paused")
        assert monitor.state.paused is False

        outcomes = [
            (audit["action"], audit["outcome"])
            async for audit in db[ACTIONS].find({}).sort("time", 1)
        ]
        assert outcomes == [
            ("pause", "refused"),
            ("pause", "done"),
            ("rollback", "done"),
            ("skip", "done"),
            ("resume", "done"),
        ]
        assert watched_page.errors == []


async def test_page_reconnects_and_catches_up_after_a_server_restart(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    settings = settings_for(db.name, users_rule("detect"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        await page.goto(dashboard.url)
        connection = page.locator("#connection")
        await expect(connection).to_have_text("Live")

        await dashboard.stop()
        await expect(connection).to_have_attribute("data-state", "down")
        await expect(page.locator("#banner")).to_contain_text("Reconnecting")
        # Written while the page cannot hear: it must catch up afterwards.
        await db.users.insert_one({"_id": "while-away"})
        await wait_for_state(dashboard.monitor, lambda s: s.detected_total == 1)
        dashboard.start()

        await expect(connection).to_have_text("Live")
        await expect(page.locator("#banner")).to_be_hidden()
        await expect(page.locator("#detected li", has_text="while-away")).to_have_count(
            1
        )
        await db.users.insert_one({"_id": "after-return"})
        await expect(
            page.locator("#detected li", has_text="after-return")
        ).to_have_count(1)
        assert watched_page.errors == []


async def test_detected_list_stops_following_while_the_reader_scrolls_down(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    await db.users.insert_many([{"_id": f"old-{n:02d}"} for n in range(20)])
    settings = settings_for(db.name, users_rule("detect"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        await page.goto(dashboard.url)
        feed = page.locator("#detected")
        await expect(feed.locator("li")).to_have_count(20)

        await feed.evaluate("list => { list.scrollTop = 300; }")
        await db.users.insert_one({"_id": "new-while-reading"})
        await expect(feed.locator("li", has_text="new-while-reading")).to_have_count(1)

        # The reader's place is kept and the new arrival is counted instead.
        await expect(page.locator("#detected-jump")).to_have_text("↑ 1 new")
        assert await feed.evaluate("list => list.scrollTop") > 300
        await page.click("#detected-jump")
        await expect(page.locator("#detected-jump")).to_be_hidden()
        await db.users.insert_one({"_id": "new-at-top"})
        await expect(feed.locator("li").first).to_contain_text("new-at-top")
        assert await feed.evaluate("list => list.scrollTop") == 0


async def test_current_fix_panel_follows_the_fixer_steps(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    """The bar shows the step the state reports, whatever the timing of a real fix."""
    await db.users.insert_one({"_id": "u1"})
    settings = settings_for(db.name, users_rule("detect"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        state = dashboard.monitor.state
        [entry] = list(dashboard.monitor.queue)
        page = watched_page.page
        await page.goto(dashboard.url)
        current = page.locator("#current-body .step.is-current")
        done = page.locator("#current-body .step.is-done")

        steps = [
            ("backup", ["re-check", "plan"]),
            ("commit", None),
            ("verify", ["re-check", "plan", "backup", "apply", "audit"]),
        ]
        for step, finished in steps:
            state.current_fix = {
                "violation": describe_violation(entry.violation),
                "fix_id": "f1",
                "summary": "set email='unknown@example.com'",
                "step": step,
            }
            state.touch()
            await expect(current).to_have_text(step)
            if finished is not None:
                await expect(done).to_have_text(finished)

        await expect(page.locator("#current-body")).to_contain_text("missing email")
        await expect(done).to_have_text(
            ["re-check", "plan", "backup", "apply", "audit"]
        )
        state.current_fix = None
        state.touch()
        await expect(current).to_have_count(0)
        await expect(page.locator("#current-state")).to_have_text("Auto-fix off")


async def test_a_late_http_snapshot_does_not_undo_a_pushed_one(
    db: Any, mongo_uri: str, watched_page: WatchedPage
) -> None:
    """The snapshot fetched when the websocket opens may arrive after pushes.

    The page loads a snapshot, opens the websocket, and on opening fetches
    another: that second answer is held back here until a newer state has
    been pushed, as a slow network would.
    """
    settings = settings_for(db.name, users_rule("detect"), FAST)
    async with running_dashboard(mongo_uri, settings) as dashboard:
        page = watched_page.page
        fetched, release, answered = asyncio.Event(), asyncio.Event(), asyncio.Event()
        requests: list[str] = []

        async def hold_the_snapshot(route: Route) -> None:
            requests.append(route.request.url)
            if len(requests) != SNAPSHOT_ON_OPEN:
                await route.continue_()
                return
            response = await route.fetch()  # the state as it is now: nothing yet
            fetched.set()
            await release.wait()
            await route.fulfill(response=response)
            answered.set()

        await page.route("**/api/state", hold_the_snapshot)
        await page.goto(dashboard.url)
        await asyncio.wait_for(fetched.wait(), 10)
        await db.users.insert_one({"_id": "late-1"})
        await expect(page.locator("#card-detected .value")).to_have_text("1")

        release.set()
        await asyncio.wait_for(answered.wait(), 10)
        # The page has the stale answer; it renders it, or not, on its next turn.
        await page.evaluate("new Promise((done) => setTimeout(done, 0))")

        await expect(page.locator("#card-detected .value")).to_have_text("1")
        await expect(page.locator("#detected li", has_text="late-1")).to_have_count(1)
