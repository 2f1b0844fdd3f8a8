"""Wiring of the gateway: the public HTTP API in front of the services' NATS subjects."""

from fastapi import FastAPI

from fog_gateway import __version__
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

#: the gateway keeps nothing durable, so it has no schema and no migrations
MIGRATIONS = None


def build_app(settings: CommonSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, migrations_dir=None, uses_database=False)
    api = FastAPI(title="Fog API", version=__version__, openapi_url="/openapi.json")
    return runtime.http_app(api)
