"""Wiring of the scheduler service: the one place that builds it."""

from pathlib import Path

from fastapi import FastAPI

from fog_scheduler import handlers
from fog_scheduler.assignment_push import AssignmentPusher, PreparationPusher
from fog_scheduler.config import Settings
from fog_scheduler.domain import PlacementPolicy
from fog_scheduler.metrics import QueueGauges
from fog_scheduler.placement import PlacementLoop
from fog_scheduler.retention import JobRetention
from fog_shared.commands.gateway import ASSIGNMENTS, PREPARATIONS, AssignmentPush, Preparation
from fog_shared.pg.leader import LeaderLock
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=MIGRATIONS)
    dsn = settings.database_url.get_secret_value()
    placement = PlacementLoop(
        LeaderLock(dsn, settings.db_schema, "placement"), PlacementPolicy(strategy=settings.strategy),
        dsn=dsn, schema=settings.db_schema, batch_size=settings.placement_batch, idle_s=settings.placement_idle_s,
        push=AssignmentPusher(lambda: runtime.nc) if settings.push_assignments else None,
        place_at_submit=settings.place_at_submit,
        prepare=PreparationPusher(lambda: runtime.nc) if settings.prepare_at_submit else None,
    )  # fmt: skip

    async def attach_placement() -> None:
        placement.attach(runtime.pool)

    runtime.on_start(attach_placement)
    handlers.register(runtime, placement, waiting_max=settings.waiting_jobs_max_per_owner)
    # Sent on the raw client (fog_shared.bus.push); declared here so that AsyncAPI shows the channel.
    runtime.broker.publisher(
        ASSIGNMENTS, title="assignments", schema=AssignmentPush,
        description="New assignments, to every gateway (core NATS, at most once; job.assigned is the record)",
    )  # fmt: skip
    runtime.broker.publisher(
        PREPARATIONS, title="preparations", schema=Preparation,
        description="A job placed at submit, before its insert commits: its node may get it ready (core NATS)",
    )  # fmt: skip
    runtime.in_background("placement", placement.run)
    runtime.report_in_status("leads_placement", lambda: placement.leading)
    gauges = QueueGauges(lambda: runtime.pool, lambda: placement.leading, placement.wall, settings.queue_gauges_every_s)
    runtime.in_background("queue-gauges", gauges.run)
    retention = JobRetention(
        lambda: runtime.pool, lambda: placement.leading, placement.wall,
        keep_s=settings.keep_ended_jobs_s, every_s=settings.purge_every_s, batch=settings.purge_batch,
    )  # fmt: skip
    runtime.in_background("retention", retention.run)
    return runtime.http_app()
