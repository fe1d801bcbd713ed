"""The Quart application: dashboard, JSON API, websocket, health, metrics, actions.

It is a client of the monitor's state and nothing more: every page and
endpoint reads `MonitorState.snapshot()` or calls one of the fixer's actions.
Actions that change anything need the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError
from quart import Quart, Response, jsonify, request, websocket

from streamheal.errors import FixError, FixNotFoundError
from streamheal.fixer import FIXES, rollback_fix
from streamheal.rules import COMMENT
from streamheal.web._actions import (
    TOKEN_HEADER,
    ActionAudit,
    ActionResult,
    is_authorised,
)
from streamheal.web._metrics import state_registry
from streamheal.web._push import push_snapshots


if TYPE_CHECKING:
    from streamheal.monitor import Monitor


__all__ = ["TOKEN_HEADER", "create_app"]

WEB_DIR = Path(__file__).resolve().parent

# The page needs nothing from other origins; saying so in the policy means a
# value that slipped past the text-only rendering still could not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_same_origin(origin: str | None, host: str) -> bool:
    """Whether a browser's `Origin` names this server, or no browser sent one.

    Browsers apply no CORS to websockets: without this check any page the
    user has open could read the live state from `/ws`.
    """
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == host.lower()


def is_allowed_host(host: str, allowed_hosts: Collection[str] | None) -> bool:
    """Whether the `Host` header names an address the dashboard listens as.

    A dashboard bound to loopback refuses other names, so that a web page
    whose domain was re-pointed at 127.0.0.1 (DNS rebinding) reads nothing.
    """
    if allowed_hosts is None:
        return True
    return urlsplit(f"//{host}").hostname in allowed_hosts


def create_app(
    monitor: Monitor,
    token: str,
    shutdown: asyncio.Event | None = None,
    *,
    allowed_hosts: Collection[str] | None = None,
) -> Quart:
    """The app for one monitor; `token` guards every action.

    Setting `shutdown` ends the websocket pushes, so that a stopping server
    closes them at once instead of waiting out its graceful timeout. With
    `allowed_hosts`, requests naming another host in `Host` are refused;
    requests from another origin are always refused.
    """
    # The paths are given because Flask's search for them fails on a
    # namespace package, which `streamheal` is.
    app = Quart(
        "streamheal",
        root_path=str(WEB_DIR),
        instance_path=str(WEB_DIR),
        static_folder="static",
        static_url_path="/static",
    )
    app.config["STREAMHEAL_TOKEN"] = token
    stopping = shutdown or asyncio.Event()
    registry = state_registry(monitor.state)
    audit = ActionAudit(monitor, token)

    def refusal(origin: str | None, host: str) -> tuple[Response, int] | None:
        if not is_allowed_host(host, allowed_hosts):
            return jsonify({"error": f"Host {host!r} is not served here."}), 421
        if not is_same_origin(origin, host):
            return jsonify({"error": "Requests from other origins are refused."}), 403
        return None

    @app.before_request
    async def refuse_other_sites() -> tuple[Response, int] | None:
        return refusal(request.headers.get("Origin"), request.host)

    @app.before_websocket
    async def refuse_other_sites_websocket() -> tuple[Response, int] | None:
        return refusal(websocket.headers.get("Origin"), websocket.host)

    @app.after_request
    async def add_security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/")
    async def dashboard() -> Response:
        return await app.send_static_file("index.html")

    @app.get("/api/state")
    async def state() -> Response:
        return jsonify(monitor.state.snapshot())

    @app.websocket("/ws")
    async def push_state() -> None:
        await push_snapshots(monitor.state, websocket.send, stopping)

    @app.get("/api/auth")
    async def check_token() -> tuple[Response, int]:
        """Lets the page tell a wrong token from a right one before acting."""
        if not is_authorised(token):
            return jsonify({"authorised": False}), 401
        return jsonify({"authorised": True}), 200

    @app.get("/healthz")
    async def healthz() -> tuple[Response, int]:
        checks = {
            "database": monitor.state.connected,
            "change_stream": monitor.state.stream_healthy,
        }
        status = 200 if all(checks.values()) else 503
        body = {"status": "ok" if status == 200 else "unhealthy", "checks": checks}
        return jsonify(body), status

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    register_actions(app, monitor, audit)
    return app


def register_actions(app: Quart, monitor: Monitor, audit: ActionAudit) -> None:
    """The token-guarded endpoints that change what the monitor does."""

    def fixer_target(_: Any) -> str:
        return "fixer"

    def violation_target(arguments: Any) -> str:
        return str(arguments["violation_id"])

    def fix_target(arguments: Any) -> str:
        return str(arguments["fix_id"])

    @app.post("/api/fixer/pause")
    @audit.guarded("pause", fixer_target)
    async def pause() -> ActionResult:
        monitor.fixer.pause()
        return {"paused": True}, 200

    @app.post("/api/fixer/resume")
    @audit.guarded("resume", fixer_target)
    async def resume() -> ActionResult:
        monitor.fixer.resume()
        return {"paused": False}, 200

    @app.post("/api/violations/<violation_id>/approve")
    @audit.guarded("approve", violation_target)
    async def approve(violation_id: str) -> ActionResult:
        if not monitor.fixer.approve(violation_id):
            return {
                "error": f"No fix of violation {violation_id} waits for approval."
            }, 404
        return {"approved": violation_id}, 200

    @app.post("/api/violations/<violation_id>/skip")
    @audit.guarded("skip", violation_target)
    async def skip(violation_id: str) -> ActionResult:
        if not monitor.fixer.skip(violation_id):
            return {"error": f"Violation {violation_id} is not in the queue."}, 404
        return {"skipped": violation_id}, 200

    @app.post("/api/fixes/<fix_id>/rollback")
    @audit.guarded("rollback", fix_target)
    async def rollback(fix_id: str) -> ActionResult:
        # A person undid this fix: its violation, found again as soon as the
        # documents are back, must not be fixed again by this run. Marked
        # before the rollback, so that the fixer cannot take it in between.
        newly_kept: str | None = None
        try:
            fixed = await monitor.db[FIXES].find_one(
                {"_id": fix_id}, {"violation_id": 1}, comment=COMMENT
            )
            violation_id = fixed.get("violation_id") if fixed else None
            if violation_id and monitor.queue.keep_unfixed(violation_id):
                newly_kept = violation_id
            record = await rollback_fix(
                monitor.client,
                monitor.db,
                fix_id,
                use_transaction=monitor.fixer.use_transaction,
            )
        except (FixError, PyMongoError) as exc:
            if newly_kept is not None:
                monitor.queue.allow_fixing(newly_kept)
            if isinstance(exc, FixNotFoundError):
                return {"error": str(exc)}, 404
            if isinstance(exc, FixError):
                return {"error": str(exc)}, 409
            return {"error": f"The rollback failed: {exc}"}, 503
        monitor.state.record_fix(record)
        return {"rolled_back": fix_id, "rule": record.get("rule")}, 200
