"""``python -m fog_<svc> serve|migrate``: the two things a service process does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import typer
import uvicorn
from fastapi import FastAPI

from fog_shared.pg.migrate import migrate, migrations_for
from fog_shared.pg.pool import connect
from fog_shared.settings import CommonSettings
from fog_shared.telemetry import configure_logging


def run_service_cli(
    settings_cls: type[CommonSettings],
    build_app: Callable[[CommonSettings], FastAPI],
    migrations_dir: Path | None,
) -> None:
    cli = typer.Typer(add_completion=False, help=f"The fog-{settings_cls.service} service.")

    @cli.command()
    def serve() -> None:
        """Run the service until SIGTERM/SIGINT."""
        settings = settings_cls()
        configure_logging(settings.service, settings.log_level, settings.log_json)
        app = build_app(settings)
        uvicorn.run(
            app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False,
            ws_per_message_deflate=settings.ws_per_message_deflate,
        )  # fmt: skip

    @cli.command("migrate")
    def migrate_cmd() -> None:
        """Apply pending migrations to the service's schema (as the schema owner)."""
        settings = settings_cls()
        configure_logging(settings.service, settings.log_level, settings.log_json)
        if migrations_dir is None:
            typer.echo(f"{settings.service} has no database")
            return
        applied = asyncio.run(_migrate(settings, migrations_dir))
        typer.echo(f"{settings.service}: {len(applied)} migration(s) applied")

    cli()


async def _migrate(settings: CommonSettings, migrations_dir: Path) -> list[str]:
    dsn = (settings.migrate_database_url or settings.database_url).get_secret_value()
    conn = await connect(dsn)
    try:
        return await migrate(conn, settings.db_schema, migrations_for(migrations_dir, settings.service))
    finally:
        await conn.close()
