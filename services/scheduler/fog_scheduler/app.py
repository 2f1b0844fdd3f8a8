"""Wiring of the scheduler service: the one place that builds it."""

from pathlib import Path

from fastapi import FastAPI

from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(settings: CommonSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, migrations_dir=MIGRATIONS)
    return runtime.http_app()
