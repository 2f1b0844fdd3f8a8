"""Wiring of the gateway: the public HTTP API in front of the services' NATS subjects."""

from fastapi import FastAPI

from fog_gateway import __version__, problems
from fog_gateway.config import Settings
from fog_gateway.routes import auth
from fog_gateway.security import Verifier
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

#: the gateway keeps nothing durable, so it has no schema and no migrations
MIGRATIONS = None


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=None, uses_database=False)
    api = FastAPI(title="Fog API", version=__version__, openapi_url="/openapi.json")
    problems.install(api)
    verifier = Verifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        access_ttl_s=settings.access_token_ttl_s,
        timeout_s=settings.request_timeout_s,
    )

    async def start_verifier() -> None:
        await verifier.start(runtime.broker, runtime.js)

    runtime.after_start(start_verifier)
    api.include_router(auth.build_router(runtime.broker, verifier, settings.request_timeout_s))
    return runtime.http_app(api)
