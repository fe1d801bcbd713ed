"""The web layer: a Quart app served by Hypercorn on the monitor's event loop."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from typing import TYPE_CHECKING

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from streamheal.errors import DashboardError
from streamheal.web.app import TOKEN_HEADER, create_app


if TYPE_CHECKING:
    from streamheal.monitor import Monitor


__all__ = [
    "LOOPBACK_HOSTS",
    "TOKEN_HEADER",
    "bind_dashboard",
    "create_app",
    "resolve_token",
    "serve",
]

TOKEN_ENV = "STREAMHEAL_TOKEN"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
GRACEFUL_TIMEOUT_S = 2.0


def resolve_token() -> str:
    """STREAMHEAL_TOKEN, or a new random token printed once to the terminal."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    token = secrets.token_urlsafe(24)
    print(
        f"streamheal: action token for this run: {token}", file=sys.stderr, flush=True
    )
    return token


def bind_dashboard(host: str, port: int) -> socket.socket:
    """A socket listening on the dashboard address, bound now.

    Binding before the server starts makes a busy port fail at once with a
    plain OSError, and lets a client connect as soon as this returns: the
    kernel holds the connection until Hypercorn accepts it.
    """
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )[0]
    listening = socket.socket(family, kind, protocol)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening.bind(address)
        listening.listen()
    except OSError as exc:
        listening.close()
        raise DashboardError(
            f"The dashboard cannot listen on {host}:{port}: {exc.strerror}. "
            "Is another streamheal running? Choose another port with --port "
            "or dashboard.port in the rule file."
        ) from None
    return listening


async def serve(
    monitor: Monitor, stop: asyncio.Event, *, listening: socket.socket | None = None
) -> None:
    """Serve the dashboard and API until `stop` is set.

    `listening` is a socket from `bind_dashboard`; without one, the address
    from the dashboard settings is bound here. Either way the server owns
    and closes the socket. `monitor.dashboard_url` says where it listens.
    """
    settings = monitor.settings.dashboard
    loopback = settings.host in LOOPBACK_HOSTS
    if listening is None:
        listening = bind_dashboard(settings.host, settings.port)
    listening.setblocking(False)
    # The bound port, not the configured one: port 0 asks for any free port.
    port = listening.getsockname()[1]
    if not loopback:
        monitor.events.warning(
            "dashboard_exposed",
            host=settings.host,
            port=port,
            note="reachable from other machines; actions still need the token",
        )
    # Bound to loopback, only loopback names may reach it (DNS rebinding).
    app = create_app(
        monitor,
        monitor.token,
        shutdown=stop,
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
    )
    config = Config()
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT_S

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    monitor.dashboard_url = f"http://{host}:{port}/"
    monitor.events.info("dashboard_started", url=monitor.dashboard_url)
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),
        config,
        sockets=Sockets(
            secure_sockets=[], insecure_sockets=[listening], quic_sockets=[]
        ),
        shutdown_trigger=stop.wait,
    )
