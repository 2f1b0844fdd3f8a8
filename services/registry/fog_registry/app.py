"""Wiring of the registry service: the one place that builds it."""

from pathlib import Path

from fastapi import FastAPI

from fog_registry import handlers
from fog_registry.config import Settings
from fog_registry.domain import LivenessPolicy
from fog_registry.liveness import LivenessMonitor
from fog_shared.pg.leader import LeaderLock
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=MIGRATIONS)
    lock = LeaderLock(settings.database_url.get_secret_value(), settings.db_schema, "liveness")
    policy = LivenessPolicy.for_interval(settings.heartbeat_interval_s)
    monitor = LivenessMonitor(lock, policy, tick_s=settings.liveness_tick_s)

    async def attach_monitor() -> None:
        monitor.attach(runtime.pool)

    runtime.on_start(attach_monitor)
    handlers.register(runtime, monitor)
    runtime.in_background("liveness", monitor.run)
    runtime.report_in_status("leads_liveness", lambda: monitor.leading)
    return runtime.http_app()
