"""The gateway's access log on a tiny FastAPI app: server errors logged with their request's id, the rest not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from fog_gateway import problems
from fog_gateway.access_log import AccessLogMiddleware, problem_of
from fog_gateway.middleware import RequestIdMiddleware
from fog_gateway.problems import Problem
from fog_shared.telemetry.context import correlation_id


class Lines(logging.Handler):
    """The access log's records, each with the correlation id in force when it was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[logging.LogRecord, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record, correlation_id()))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler, logger = Lines(), logging.getLogger("fog_gateway.access_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def client(*, every: bool) -> httpx.AsyncClient:
    app = FastAPI()
    problems.install(app)

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        if job_id == "away":
            raise Problem(503, "Service unavailable", "no answer within 5s", code="service_unavailable")
        if job_id == "missing":
            raise Problem(404, "Not found", "no such job", code="not_found")
        if job_id == "bug":
            raise RuntimeError("a bug")
        return {"id": job_id}

    app.add_middleware(AccessLogMiddleware, every=every)
    app.add_middleware(RequestIdMiddleware)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("198.51.100.7", 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_a_server_error_is_logged_with_its_request_id_route_and_problem(lines: Lines) -> None:
    async with client(every=False) as http:
        answer = await http.get("/v1/jobs/away", params={"email": "someone@example.org"})
        assert answer.status_code == 503
        assert (await http.get("/v1/jobs/j1")).status_code == 200
        assert (await http.get("/v1/jobs/missing")).status_code == 404
    assert len(lines.seen) == 1  # the 200 and the 404 are not logged
    record, request_id = lines.seen[0]
    assert request_id == answer.headers["X-Request-ID"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "GET /v1/jobs/away answered 503"
    facts = {key: getattr(record, key) for key in ("method", "path", "route", "status", "problem_code", "client")}
    assert facts == {"method": "GET", "path": "/v1/jobs/away", "route": "/v1/jobs/{job_id}", "status": 503,
                     "problem_code": "service_unavailable", "client": "198.51.100.7"}  # fmt: skip
    assert record.problem_detail == "no answer within 5s"  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]
    assert "someone" not in repr(record.__dict__)  # the query, which may hold an address, is not logged


async def test_an_exception_no_handler_took_is_logged_as_a_500(lines: Lines) -> None:
    async with client(every=False) as http:
        answer = await http.get("/v1/jobs/bug")
    assert answer.status_code == 500
    (record, request_id), *_ = lines.seen
    assert (record.status, record.problem_code) == (500, "unhandled_exception")  # type: ignore[attr-defined]
    assert request_id is not None


async def test_every_request_is_logged_when_asked(lines: Lines) -> None:
    async with client(every=True) as http:
        await http.get("/v1/jobs/j1")
        await http.get("/v1/jobs/missing")
    logged = [(record.levelno, record.status, getattr(record, "problem_code", None)) for record, _ in lines.seen]  # type: ignore[attr-defined]
    assert logged == [(logging.INFO, 200, None), (logging.INFO, 404, "not_found")]


def test_a_problems_code_and_detail_are_read_from_its_body_and_nothing_else() -> None:
    assert problem_of(b'{"code": "internal", "detail": "x"}') == {"problem_code": "internal", "problem_detail": "x"}
    assert problem_of(b'{"detail": "' + b"y" * 900 + b'"}') == {"problem_detail": "y" * 500}
    assert problem_of(b"<html>bad gateway</html>") == {}
    assert problem_of(b'["code"]') == {}
    assert problem_of(b"") == {}
