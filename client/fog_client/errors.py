"""Refusals from the gateway: RFC 9457 problem details, or whatever a proxy in front of it answered."""

from __future__ import annotations

import json
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

#: how much of a non-JSON error body to keep: enough to recognise a proxy's page, not a whole one
_BODY_EXCERPT = 200


class ApiError(Exception):
    """An HTTP error reply. ``code`` is the problem's stable machine-readable code, when it has one."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, title, detail)
        self.status, self.title, self.detail, self.code = status, title, detail, code
        #: seconds to wait before trying again (``Retry-After`` on 429 and 503)
        self.retry_after = retry_after
        #: the whole problem body, extension members included (e.g. ``errors`` on 422)
        self.problem = problem or {}
        #: the gateway's ``X-Request-ID`` for the call: what its logs and traces are searchable by
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail and self.detail != self.title:
            text += f": {self.detail}"
        if self.code:
            text += f" [{self.code}]"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g}s)"
        return text

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        request_id = response.headers.get("X-Request-ID")
        problem = _json_object(response)
        if problem is None:
            excerpt = response.text.strip()[:_BODY_EXCERPT]
            return cls(
                response.status_code, response.reason_phrase, excerpt, retry_after=retry_after, request_id=request_id
            )
        code = problem.get("code")
        return cls(
            response.status_code,
            str(problem.get("title") or response.reason_phrase),
            str(problem.get("detail") or ""),
            code=code if isinstance(code, str) else None,
            retry_after=retry_after,
            problem=problem,
            request_id=request_id,
        )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": a date in UTC from an unknown zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:  # also UnicodeDecodeError
        return None
    return body if isinstance(body, dict) else None
