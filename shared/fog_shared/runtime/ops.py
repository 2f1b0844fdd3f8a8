"""``/healthz``, ``/readyz``, ``/metrics`` and ``/asyncapi.json`` on every service process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

if TYPE_CHECKING:
    from fog_shared.runtime.service import ServiceRuntime


class Health(BaseModel):
    status: str
    service: str
    #: only while failing: the background tasks that ended, and how (see ``ServiceRuntime.dead_tasks``)
    ended_tasks: dict[str, str] | None = None


class Readiness(BaseModel):
    status: str
    service: str
    checks: dict[str, str]


def add_ops_routes(app: FastAPI, runtime: ServiceRuntime, *, metrics: bool = True) -> None:
    """The ops routes; ``/metrics`` only when ``metrics`` (else it is served on a port of its own)."""

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="The process is alive: it answers, and none of its background tasks has ended",
        response_model=Health,
        response_model_exclude_none=True,
        responses={503: {"model": Health, "description": "A background task ended: restart the process"}},
    )
    async def healthz() -> JSONResponse:
        if not runtime.dead_tasks:
            return JSONResponse({"status": "ok", "service": runtime.service})
        body = {"status": "failing", "service": runtime.service, "ended_tasks": dict(runtime.dead_tasks)}
        return JSONResponse(body, status_code=503)

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="NATS and Postgres reachable, migrations applied",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency is not ready"}},
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ready" if ready else "not ready", "service": runtime.service, "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    if metrics:

        @app.get(
            "/metrics",
            tags=["ops"],
            summary="Prometheus metrics",
            response_class=PlainTextResponse,
            # Not part of the API: whether a process serves it here depends on FOG_<SVC>_METRICS_PORT.
            include_in_schema=False,
        )
        async def metrics_route() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["ops"], summary="AsyncAPI document of this service's subjects")
    async def asyncapi() -> dict[str, Any]:
        return asyncapi_document(runtime)


def asyncapi_document(runtime: ServiceRuntime) -> dict[str, Any]:
    spec = AsyncAPI(runtime.broker, title=f"fog-{runtime.service}", schema_version="3.0.0")
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    # Event consumers run on the consumer engine, not on FastStream subscribers: list them too.
    document["x-fog-consumes"] = [
        {"durable": c.spec.durable, "stream": c.spec.stream, "subjects": list(c.spec.filter_subjects)}
        for c in runtime.consumers
    ]
    return document
