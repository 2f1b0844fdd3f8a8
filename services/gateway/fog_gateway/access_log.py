"""The gateway's access log: a line for each request it answered with a server error, or for every request.

Why the errors by default: a user who got a 5xx is told its request id (``fogctl`` prints it), and a 503
``no answer within 5s`` from a service that was down leaves no event behind for ``fogctl events trace``
to find. The line carries the request id (as ``correlation_id``) and the trace id like every log line,
the method, the path without its query (a query may hold an e-mail address), the route template, the
status, the time taken, the caller's address (``client``) and the problem's code and detail. Every request
(``access_log = "all"``) is a line per request: for debugging, at a cost on the hot path.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fog_shared.telemetry.http_metrics import route_of

log = logging.getLogger(__name__)

AccessLog = Literal["errors", "all", "off"]

#: the most of an error's body read for its problem's code and detail
_PROBLEM_BYTES = 4096


class AccessLogMiddleware:
    """Logs a request once answered: its server errors (5xx, and an exception no handler took) at WARNING,
    and with ``every`` the others at INFO. Placed inside the request id's middleware, so that the line is
    stamped with the request's id and trace."""

    def __init__(self, app: ASGIApp, *, every: bool = False) -> None:
        self.app, self.every = app, every

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status, problem = time.perf_counter(), 500, bytearray()  # 500: an exception before any answer
        keeps_problem = False  # an error this line will log: its body is read for the problem's code and detail

        async def sending(message: Message) -> None:
            nonlocal status, keeps_problem
            if message["type"] == "http.response.start":
                status = message["status"]
                keeps_problem = status >= 400 and self._logs(status)
            elif keeps_problem and message["type"] == "http.response.body" and len(problem) < _PROBLEM_BYTES:
                problem.extend(message.get("body", b"")[: _PROBLEM_BYTES - len(problem)])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            self._log(scope, 500, began, b"", raised=True)
            raise
        if self._logs(status):
            self._log(scope, status, began, bytes(problem), raised=False)

    def _logs(self, status: int) -> bool:
        return status >= 500 or self.every

    def _log(self, scope: Scope, status: int, began: float, body: bytes, *, raised: bool) -> None:
        facts: dict[str, object] = {
            "method": scope["method"], "path": scope["path"], "route": route_of(scope), "status": status,
            "duration_ms": round((time.perf_counter() - began) * 1000, 1), "client": _client(scope),
        }  # fmt: skip
        facts.update(problem_of(body))
        if raised:
            facts["problem_code"] = "unhandled_exception"  # its traceback is logged by the server
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "%s %s answered %d", scope["method"], scope["path"], status, extra=facts)


def _client(scope: Scope) -> str:
    """The caller's address as the server saw it (a proxy's, unless uvicorn is told to trust its headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def problem_of(body: bytes) -> dict[str, str]:
    """The code and detail of a problem+json body; nothing for another body."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    found = {"problem_code": decoded.get("code"), "problem_detail": decoded.get("detail")}
    return {key: value[:500] for key, value in found.items() if isinstance(value, str)}
