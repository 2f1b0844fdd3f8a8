"""Wiring of the messaging service: the one place that builds it."""

from pathlib import Path

from fastapi import FastAPI

from fog_messaging import handlers
from fog_messaging.config import Settings
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=MIGRATIONS)
    handlers.register(runtime, settings)
    return runtime.http_app()
