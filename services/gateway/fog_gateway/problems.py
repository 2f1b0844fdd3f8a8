"""Errors as RFC 9457 ``application/problem+json``, for every route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from fog_shared.bus.rpc import ServiceUnavailable

PROBLEM = "application/problem+json"

#: services' refusal codes → HTTP statuses (anything else is a 400)
STATUS_BY_CODE = {
    "weak_password": 422, "invalid_role": 422, "invalid_expiry": 422, "email_taken": 409, "last_admin": 409,
    "invalid_credentials": 401, "invalid_grant": 401, "invalid_credential": 401, "account_disabled": 403,
    "forbidden": 403, "scope_exceeds_roles": 403, "not_found": 404, "locked": 429,
    # not 401: the request's credential is fine, the password in its body is not (and a client would refresh)
    "wrong_password": 403, "invalid_reset_token": 400,
    # messaging
    "invalid_clock": 422, "invalid_reply_to": 422, "invalid_receipt": 422, "invalid_member": 422,
    "invalid_recipient": 422, "too_large": 422, "empty": 422, "group_full": 409, "owner_must_transfer": 409,
    "use_transfer": 409, "deleted": 409, "stale_clock": 409, "invalid_chunk": 422, "chunk_corrupt": 422,
    "checksum_mismatch": 422, "incomplete": 409, "complete": 409, "too_many_uploads": 409, "quota_exceeded": 409,
    "invalid_signature": 422,
    "too_many_labels": 422,
    # scheduler
    "too_many_waiting": 409, "invalid_dependency": 422,
    "service_unavailable": 503,
    # a service's bug (ServiceRuntime.answer logs it)
    "internal_error": 500,
}  # fmt: skip


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 400)


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str
    title: str
    status: int
    detail: str
    code: str | None = None
    errors: list[dict[str, Any]] | None = None


_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 409: "Conflict",
    413: "Request body too large", 416: "Range not satisfiable", 422: "Invalid request", 429: "Too many requests",
    500: "Internal error", 503: "A service did not answer in time",
}  # fmt: skip


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all problem+json."""
    schema = ProblemDetails.model_json_schema()
    return {status: {"description": _TITLES[status], "content": {PROBLEM: {"schema": schema}}} for status in statuses}


#: what any /v1 route can answer whatever it does
COMMON_ERRORS = documented(400, 413, 422, 429, 503)
#: ... and any route that needs a credential
GUARDED_ERRORS = documented(401, 403)


class Problem(Exception):
    def __init__(
        self, status: int, title: str, detail: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.code, self.headers = status, title, detail, code, headers or {}


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": f"urn:fog:problem:{code or status}", "title": title, "status": status, "detail": detail}
    if code is not None:
        body["code"] = code  # an extension member: the stable, machine-readable reason
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, code=exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem_response(
            422, "Invalid request", "the request does not match the schema", code="invalid", errors=errors
        )

    @app.exception_handler(HTTPException)
    async def on_http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(ServiceUnavailable)
    async def on_unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        return problem_response(
            503, "Service unavailable", exc.reason, code="service_unavailable", headers={"Retry-After": "1"}
        )
