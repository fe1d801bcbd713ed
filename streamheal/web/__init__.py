"""The web layer: a Quart app served by Hypercorn on the monitor's event loop."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from typing import TYPE_CHECKING

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from streamheal.web.app import TOKEN_HEADER, create_app


if TYPE_CHECKING:
    from streamheal.monitor import Monitor


__all__ = ["TOKEN_HEADER", "create_app", "resolve_token", "serve"]

TOKEN_ENV = "STREAMHEAL_TOKEN"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def resolve_token() -> str:
    """STREAMHEAL_TOKEN, or a new random token printed once to the terminal."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    token = secrets.token_urlsafe(24)
    print(f"streamheal: action token for this run: {token}", file=sys.stderr, flush=True)
    return token


async def serve(monitor: Monitor, stop: asyncio.Event) -> None:
    """Serve the dashboard and API until `stop` is set."""
    settings = monitor.settings.dashboard
    if settings.host not in LOOPBACK_HOSTS:
        monitor.events.warning(
            "dashboard_exposed",
            host=settings.host,
            port=settings.port,
            note="reachable from other machines; actions still need the token",
        )
    app = create_app(monitor, monitor.token)
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    monitor.events.info("dashboard_started", url=f"http://{settings.host}:{settings.port}/")
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]  # Quart is an ASGI app
