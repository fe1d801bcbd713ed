"""Actions a person takes from the dashboard: the token check and the audit.

Every attempt, allowed or not, becomes a document in `streamheal_actions`
and a log event, so that "who paused the fixer" has an answer after the fact
even when the log has rotated away.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError
from quart import Response, jsonify, request

from streamheal.rules import COMMENT


if TYPE_CHECKING:
    from streamheal.monitor import Monitor


ACTIONS = "streamheal_actions"
TOKEN_HEADER = "X-Streamheal-Token"
BEARER_PREFIX = "Bearer "

# What the audit record says happened, by the status the endpoint answered.
OUTCOMES = {
    HTTPStatus.OK: "done",
    HTTPStatus.UNAUTHORIZED: "refused",
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.CONFLICT: "conflict",
    HTTPStatus.SERVICE_UNAVAILABLE: "failed",
}

ActionResult = tuple[dict[str, Any], int]
ActionHandler = Callable[..., Awaitable[ActionResult]]


def given_token() -> str:
    """The token sent with the request, from our header or a bearer header."""
    token = request.headers.get(TOKEN_HEADER, "")
    authorization = request.headers.get("Authorization", "")
    if not token and authorization.startswith(BEARER_PREFIX):
        token = authorization.removeprefix(BEARER_PREFIX)
    return token


def is_authorised(token: str) -> bool:
    """Whether the request carries `token`, compared in constant time."""
    given = given_token()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


class ActionAudit:
    """Writes the audit record and the log event of each action."""

    def __init__(self, monitor: Monitor, token: str) -> None:
        self.monitor = monitor
        self.token = token

    async def record(
        self, action: str, target: str, outcome: str, details: Mapping[str, Any]
    ) -> None:
        document = {
            "time": dt.datetime.now(dt.UTC),
            "action": action,
            "target": target,
            "outcome": outcome,
            "client": request.remote_addr,
            **details,
        }
        try:
            await self.monitor.db[ACTIONS].insert_one(document, comment=COMMENT)
        except PyMongoError as exc:
            # The action itself already happened; losing its record is worth
            # an error line but not a failed response.
            self.monitor.events.error(
                "action_audit_failed", action=action, target=target, error=str(exc)
            )

        fields = {"action": action, "target": target, "outcome": outcome, **details}
        if outcome == "done":
            self.monitor.events.info("action_taken", **fields)
        elif outcome == "refused":
            self.monitor.events.warning("action_refused", **fields)
        else:
            self.monitor.events.warning("action_failed", **fields)

    def guarded(
        self, action: str, target_of: Callable[[Mapping[str, Any]], str]
    ) -> Callable[[ActionHandler], Callable[..., Awaitable[tuple[Response, int]]]]:
        """Wrap an action handler: check the token, answer, audit the outcome.

        The handler returns a JSON body and a status; an "error" in the body
        is copied into the audit record.
        """

        def decorate(
            handler: ActionHandler,
        ) -> Callable[..., Awaitable[tuple[Response, int]]]:
            @functools.wraps(handler)
            async def run(**arguments: Any) -> tuple[Response, int]:
                target = target_of(arguments)
                if not is_authorised(self.token):
                    body: dict[str, Any] = {
                        "error": "This action needs the streamheal token."
                    }
                    status = int(HTTPStatus.UNAUTHORIZED)
                else:
                    body, status = await handler(**arguments)

                outcome = OUTCOMES.get(HTTPStatus(status), "failed")
                details = {"error": body["error"]} if "error" in body else {}
                await self.record(action, target, outcome, details)
                return jsonify(body), status

            return run

        return decorate
