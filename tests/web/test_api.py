"""The JSON API, the websocket and the actions, through Quart's test client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart import Quart
from quart.testing import WebsocketResponseError
from structlog.testing import capture_logs

from streamheal.config import redact_uri
from streamheal.fixer import EntryStatus
from streamheal.monitor import Monitor
from streamheal.web import LOOPBACK_HOSTS, TOKEN_HEADER, create_app
from streamheal.web._actions import ACTIONS
from tests.helpers import TEST_TOKEN, running_monitor, settings_for, wait_for_state


DETECT_USERS = """
  - name: users_need_email
    kind: required
    collection: users
    fields: [email]
    fix: set_default
    defaults: {email: unknown@example.com}
    mode: detect
"""
FIX_USERS = DETECT_USERS.replace("mode: detect", "mode: fix")
FAST = "  fix_delay: 0\n  sweep_interval: 1h"
AUTHORISED = {TOKEN_HEADER: TEST_TOKEN}


def app_for(monitor: Monitor) -> Quart:
    return create_app(monitor, TEST_TOKEN)


class TestActionsNeedTheToken:
    @pytest.mark.parametrize(
        ("path", "action", "target"),
        [
            ("/api/fixer/pause", "pause", "fixer"),
            ("/api/fixer/resume", "resume", "fixer"),
            ("/api/violations/v1/approve", "approve", "v1"),
            ("/api/violations/v1/skip", "skip", "v1"),
            ("/api/fixes/f1/rollback", "rollback", "f1"),
        ],
    )
    async def test_without_token_answers_401_and_is_audited(
        self, db: Any, mongo_uri: str, path: str, action: str, target: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            with capture_logs() as logs:
                response = await client.post(path)
                wrong = await client.post(path, headers={TOKEN_HEADER: "not-the-token"})

            assert response.status_code == 401
            assert wrong.status_code == 401
            assert monitor.state.paused is False
            audits = (
                await db[ACTIONS].find({}, {"_id": 0, "time": 0, "client": 0}).to_list()
            )
            refusal = {
                "action": action,
                "target": target,
                "outcome": "refused",
                "error": "This action needs the streamheal token.",
            }
            assert audits == [refusal, refusal]
            refused = [log for log in logs if log["event"] == "action_refused"]
            assert [(log["action"], log["outcome"]) for log in refused] == [
                (action, "refused"),
                (action, "refused"),
            ]

    async def test_auth_check_tells_right_from_wrong(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()

            assert (await client.get("/api/auth")).status_code == 401
            wrong = await client.get("/api/auth", headers={TOKEN_HEADER: "nope"})
            right = await client.get("/api/auth", headers=AUTHORISED)
            bearer = await client.get(
                "/api/auth", headers={"Authorization": f"Bearer {TEST_TOKEN}"}
            )

            assert wrong.status_code == 401
            assert (right.status_code, await right.get_json()) == (
                200,
                {"authorised": True},
            )
            assert bearer.status_code == 200


class TestActionsWithTheToken:
    async def test_pause_and_resume(self, db: Any, mongo_uri: str) -> None:
        settings = settings_for(db.name, FIX_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            with capture_logs() as logs:
                paused = await client.post("/api/fixer/pause", headers=AUTHORISED)
                assert monitor.state.paused is True
                assert monitor.state.fixer_status == "paused"
                resumed = await client.post(
                    "/api/fixer/resume",
                    headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                )

            assert (paused.status_code, await paused.get_json()) == (
                200,
                {"paused": True},
            )
            assert (resumed.status_code, await resumed.get_json()) == (
                200,
                {"paused": False},
            )
            assert monitor.state.paused is False
            audits = (
                await db[ACTIONS].find({}, {"_id": 0, "time": 0, "client": 0}).to_list()
            )
            assert audits == [
                {"action": "pause", "target": "fixer", "outcome": "done"},
                {"action": "resume", "target": "fixer", "outcome": "done"},
            ]
            taken = [log for log in logs if log["event"] == "action_taken"]
            assert [(log["action"], log["target"]) for log in taken] == [
                ("pause", "fixer"),
                ("resume", "fixer"),
            ]
            activity = [
                entry["event"] for entry in monitor.state.snapshot()["activity"]
            ]
            assert activity[:2] == ["action_taken", "action_taken"]

    async def test_skip_marks_the_queue_entry(self, db: Any, mongo_uri: str) -> None:
        await db.users.insert_one({"_id": "u1"})
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            [entry] = list(monitor.queue)

            response = await client.post(
                f"/api/violations/{entry.id}/skip", headers=AUTHORISED
            )
            missing = await client.post("/api/violations/nope/skip", headers=AUTHORISED)

            assert (response.status_code, await response.get_json()) == (
                200,
                {"skipped": entry.id},
            )
            assert entry.status is EntryStatus.SKIPPED
            assert missing.status_code == 404
            audits = (
                await db[ACTIONS].find({}, {"_id": 0, "time": 0, "client": 0}).to_list()
            )
            assert audits == [
                {"action": "skip", "target": entry.id, "outcome": "done"},
                {
                    "action": "skip",
                    "target": "nope",
                    "outcome": "not_found",
                    "error": "Violation nope is not in the queue.",
                },
            ]

    async def test_approve_releases_a_held_fix(self, db: Any, mongo_uri: str) -> None:
        rules = """
  - name: one_account_per_email
    kind: unique
    collection: users
    keys: [email]
    fix: delete
    mode: fix
"""
        engine = f"{FAST}\n  max_docs_per_fix: 1"
        await db.users.insert_many(
            [{"_id": n, "email": "same@example.com"} for n in (1, 2, 3)]
        )
        settings = settings_for(db.name, rules, engine)
        async with running_monitor(mongo_uri, settings) as monitor:
            await wait_for_state(
                monitor, lambda s: [e.status for e in s.queue] == [EntryStatus.HELD]
            )
            [entry] = list(monitor.queue)
            assert entry.status is EntryStatus.HELD
            client = app_for(monitor).test_client()

            response = await client.post(
                f"/api/violations/{entry.id}/approve", headers=AUTHORISED
            )
            again = await client.post(
                "/api/violations/nope/approve", headers=AUTHORISED
            )

            # What the fixer does with the approval is the fixer's tests' job.
            assert (response.status_code, await response.get_json()) == (
                200,
                {"approved": entry.id},
            )
            assert again.status_code == 404
            audits = (
                await db[ACTIONS].find({}, {"_id": 0, "time": 0, "client": 0}).to_list()
            )
            assert [audit["outcome"] for audit in audits] == ["done", "not_found"]
            assert audits[0] == {
                "action": "approve",
                "target": entry.id,
                "outcome": "done",
            }

    async def test_rollback_restores_and_is_recorded(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, FIX_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            await db.users.insert_one({"_id": "u1", "name": "no mail"})
            await wait_for_state(monitor, lambda s: s.fixed_total == 1)
            fix_id = monitor.state.recent_fixes[0]["_id"]
            violation_id = monitor.state.recent_fixes[0]["violation_id"]
            client = app_for(monitor).test_client()

            response = await client.post(
                f"/api/fixes/{fix_id}/rollback", headers=AUTHORISED
            )
            again = await client.post(
                f"/api/fixes/{fix_id}/rollback", headers=AUTHORISED
            )
            unknown = await client.post("/api/fixes/nope/rollback", headers=AUTHORISED)

            assert response.status_code == 200
            assert await db.users.find_one({"_id": "u1"}) == {
                "_id": "u1",
                "name": "no mail",
            }
            assert monitor.state.recent_fixes[0]["status"] == "rolled_back"
            # Found again by the stream, the violation waits as skipped: the
            # fixer, running all along, does not repair what a person undid.
            await wait_for_state(monitor, lambda s: violation_id in s.queue)
            entry = monitor.queue.get(violation_id)
            assert entry is not None and entry.status is EntryStatus.SKIPPED
            assert monitor.state.fixed_total == 1
            assert again.status_code == 409
            assert unknown.status_code == 404
            assert await unknown.get_json() == {
                "error": "There is no fix with id nope."
            }
            outcomes = [
                (audit["action"], audit["target"], audit["outcome"])
                async for audit in db[ACTIONS].find({})
            ]
            assert outcomes == [
                ("rollback", fix_id, "done"),
                ("rollback", fix_id, "conflict"),
                ("rollback", "nope", "not_found"),
            ]


class TestStateAndHealth:
    async def test_state_and_websocket_carry_the_same_snapshot(
        self, db: Any, mongo_uri: str
    ) -> None:
        await db.users.insert_one({"_id": "u1"})
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            over_http = await (await client.get("/api/state")).get_json()

            async with client.websocket("/ws") as socket:
                first = json.loads(await socket.receive())
                await db.users.insert_one({"_id": "u2"})
                second = json.loads(await socket.receive())
                while second["counts"]["detected"] < 2:
                    second = json.loads(await socket.receive())

            assert first["version"] == over_http["version"]
            assert first["counts"] == over_http["counts"]
            assert first["counts"]["detected"] == 1
            assert [d["documents"] for d in second["recent_detections"]] == [
                ["u2"],
                ["u1"],
            ]
            assert second["per_minute"]["detected"][-1] == 2
            assert len(second["per_minute"]["minutes"]) == 60

    async def test_healthz_follows_database_and_stream(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            healthy = await client.get("/healthz")
            monitor.state.stream_healthy = False
            unhealthy = await client.get("/healthz")
            monitor.state.stream_healthy = True

            assert healthy.status_code == 200
            assert unhealthy.status_code == 503
            assert await unhealthy.get_json() == {
                "status": "unhealthy",
                "checks": {"database": True, "change_stream": False},
            }

    async def test_page_and_vendored_chart_are_served_with_a_strict_policy(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            page = await client.get("/")
            chart = await client.get("/static/vendor/uPlot.iife.min.js")
            licence = await client.get("/static/vendor/uPlot.LICENSE")

            assert page.status_code == 200
            assert "<title>streamheal</title>" in await page.get_data(as_text=True)
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            assert chart.status_code == 200
            assert "MIT License" in await licence.get_data(as_text=True)

    async def test_no_password_reaches_page_api_or_metrics(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            secret_uri = "mongodb://admin:s3cret-pw@db.example.com:27017/?tls=true"
            monitor.state.server_address = redact_uri(secret_uri)
            client = app_for(monitor).test_client()
            bodies = [
                await (await client.get(path)).get_data(as_text=True)
                for path in ("/", "/api/state", "/metrics", "/healthz")
            ]

            assert "admin:***@db.example.com" in bodies[1]
            assert not [body for body in bodies if "s3cret-pw" in body]


class TestOtherSitesAreRefused:
    """A page on another site must not read the state, nor reach the actions."""

    async def test_websocket_from_another_origin_is_refused(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            with pytest.raises(WebsocketResponseError) as refused:
                async with client.websocket(
                    "/ws", headers={"Origin": "https://evil.example"}
                ) as socket:
                    await socket.receive()
            async with client.websocket(
                "/ws", headers={"Origin": "http://localhost"}
            ) as socket:
                same_origin = json.loads(await socket.receive())

            assert refused.value.response.status_code == 403
            assert same_origin["counts"]["detected"] == 0

    async def test_a_post_from_another_origin_is_refused_even_with_the_token(
        self, db: Any, mongo_uri: str
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            client = app_for(monitor).test_client()
            response = await client.post(
                "/api/fixer/pause",
                headers={**AUTHORISED, "Origin": "null"},
            )

            assert response.status_code == 403
            assert monitor.state.snapshot()["fixer"]["paused"] is False

    @pytest.mark.parametrize(
        ("host", "status"),
        [
            ("127.0.0.1:5000", 200),
            ("localhost:5000", 200),
            ("[::1]:5000", 200),
            ("rebound.example:5000", 421),
        ],
    )
    async def test_a_loopback_dashboard_answers_only_to_loopback_names(
        self, db: Any, mongo_uri: str, host: str, status: int
    ) -> None:
        settings = settings_for(db.name, DETECT_USERS, FAST)
        async with running_monitor(mongo_uri, settings) as monitor:
            app = create_app(monitor, TEST_TOKEN, allowed_hosts=LOOPBACK_HOSTS)
            response = await app.test_client().get("/api/state", headers={"Host": host})

            assert response.status_code == status
