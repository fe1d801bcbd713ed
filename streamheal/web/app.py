"""The Quart application: JSON API, health, metrics, actions, dashboard.

It is a client of the monitor's state and nothing more: every page and
endpoint reads `MonitorState.snapshot()` or calls one of the fixer's actions.
Actions that change anything need the token.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError
from quart import Quart, Response, jsonify, request

from streamheal.errors import FixError
from streamheal.fixer import rollback_fix


if TYPE_CHECKING:
    from streamheal.monitor import Monitor


TOKEN_HEADER = "X-Streamheal-Token"


def create_app(monitor: Monitor, token: str) -> Quart:
    """The app for one monitor; `token` guards every action."""
    app = Quart("streamheal")
    app.config["STREAMHEAL_TOKEN"] = token

    def is_authorised() -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = given or bearer.removeprefix("Bearer ")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def refused() -> tuple[Response, int]:
        return jsonify({"error": "This action needs the streamheal token."}), 401

    def audit_action(action: str, **fields: Any) -> None:
        monitor.events.info("action_taken", action=action, **fields)

    @app.get("/api/state")
    async def state() -> Response:
        return jsonify(monitor.state.snapshot())

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        checks = {
            "database": monitor.state.connected,
            "change_stream": monitor.state.stream_healthy,
        }
        status = 200 if all(checks.values()) else 503
        body = {"status": "ok" if status == 200 else "unhealthy", "checks": checks}
        return jsonify(body), status

    @app.post("/api/fixer/pause")
    async def pause() -> Any:
        if not is_authorised():
            return refused()
        monitor.fixer.pause()
        audit_action("pause")
        return jsonify({"paused": True})

    @app.post("/api/fixer/resume")
    async def resume() -> Any:
        if not is_authorised():
            return refused()
        monitor.fixer.resume()
        audit_action("resume")
        return jsonify({"paused": False})

    @app.post("/api/violations/<violation_id>/approve")
    async def approve(violation_id: str) -> Any:
        if not is_authorised():
            return refused()
        if not monitor.fixer.approve(violation_id):
            return jsonify({"error": f"No fix of violation {violation_id} waits for approval."}), 404
        audit_action("approve", violation_id=violation_id)
        return jsonify({"approved": violation_id})

    @app.post("/api/violations/<violation_id>/skip")
    async def skip(violation_id: str) -> Any:
        if not is_authorised():
            return refused()
        if not monitor.fixer.skip(violation_id):
            return jsonify({"error": f"Violation {violation_id} is not in the queue."}), 404
        audit_action("skip", violation_id=violation_id)
        return jsonify({"skipped": violation_id})

    @app.post("/api/fixes/<fix_id>/rollback")
    async def rollback(fix_id: str) -> Any:
        if not is_authorised():
            return refused()
        try:
            record = await rollback_fix(
                monitor.client, monitor.db, fix_id, use_transaction=monitor.fixer.use_transaction
            )
        except FixError as exc:
            return jsonify({"error": str(exc)}), 409
        except PyMongoError as exc:
            return jsonify({"error": f"The rollback failed: {exc}"}), 503
        monitor.state.record_fix(record)
        audit_action("rollback", fix_id=fix_id, rule=record.get("rule"))
        return jsonify({"rolled_back": fix_id})

    return app
