"""``fog-provision streams|database``: a cluster's setup steps, each idempotent, run as Jobs.

* ``streams`` creates or updates every JetStream stream and durable consumer of the topology, as
  the NATS provisioning user (services' own users may not administer streams);
* ``database`` creates the database and, per service, its schema, login role and owner role with
  the passwords given, as a PostgreSQL superuser. Each service's ``migrate`` runs afterwards, as
  its owner role.

Everything comes from the environment (``FOG_PROVISION_``), which Kubernetes fills from Secrets.
The dev stack does the same steps in-process (``fogctl dev up``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import typer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fog_shared.bus.permissions import PROVISIONER
from fog_shared.bus.provision import provision
from fog_shared.bus.topology import Topology
from fog_shared.pg.roles import ServiceDatabase, ensure_database, provision_service
from fog_shared.subjects import inbox_prefix

#: the services that own a schema (the gateway keeps nothing durable)
DATABASE_SERVICES: tuple[str, ...] = ("auth", "registry", "scheduler", "messaging")


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_PROVISION_", extra="ignore")

    #: as the provisioning user, e.g. nats://provision:<password>@nats:4222
    nats_url: str = "nats://127.0.0.1:14222"
    #: JetStream replicas per stream: 1 on a single server, 3 on a three-server cluster
    stream_replicas: int = Field(default=1, ge=1, le=5)


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_PROVISION_", extra="ignore")

    #: a superuser DSN; its database is only where to connect first (e.g. ``postgres``)
    database_url: SecretStr
    #: the one database every service's schema lives in
    database: str = "fog"
    auth_password: SecretStr
    auth_owner_password: SecretStr
    registry_password: SecretStr
    registry_owner_password: SecretStr
    scheduler_password: SecretStr
    scheduler_owner_password: SecretStr
    messaging_password: SecretStr
    messaging_owner_password: SecretStr

    def service_databases(self) -> list[ServiceDatabase]:
        """Schema ``<svc>``, login role ``fog_<svc>``, owner ``fog_<svc>_owner``, as the dev stack names them."""
        return [
            ServiceDatabase(
                schema=svc,
                role=f"fog_{svc}",
                password=self._password(f"{svc}_password"),
                owner_role=f"fog_{svc}_owner",
                owner_password=self._password(f"{svc}_owner_password"),
            )
            for svc in DATABASE_SERVICES
        ]

    def _password(self, field: str) -> str:
        value: SecretStr = getattr(self, field)
        return value.get_secret_value()


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointed at another database on the same server, as the same user."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def provision_streams(nats_url: str, replicas: int, topology: Topology | None = None) -> None:
    nc = await nats.connect(nats_url, max_reconnect_attempts=3, inbox_prefix=inbox_prefix(PROVISIONER))
    try:
        await provision(nc.jetstream(), topology or Topology(replicas=replicas))
    finally:
        await nc.close()


async def provision_databases(admin_dsn: str, database: str, dbs: list[ServiceDatabase]) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await ensure_database(admin, database)
    finally:
        await admin.close()
    admin = await asyncpg.connect(with_database(admin_dsn, database))
    try:
        for db in dbs:
            await provision_service(admin, database, db)
    finally:
        await admin.close()


cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Provision a Fog cluster's NATS and PostgreSQL.")


@cli.command()
def streams() -> None:
    """Create or update every stream and durable consumer (FOG_PROVISION_NATS_URL, _STREAM_REPLICAS)."""
    settings = StreamSettings()
    asyncio.run(provision_streams(settings.nats_url, settings.stream_replicas))
    typer.echo(f"streams and consumers provisioned ({settings.stream_replicas} replica(s) each)")


@cli.command()
def database() -> None:
    """Create the database, and each service's schema and roles (FOG_PROVISION_DATABASE_URL, _<SVC>_PASSWORD, ...)."""
    settings = DatabaseSettings()  # the required values come from the environment
    dbs = settings.service_databases()
    asyncio.run(provision_databases(settings.database_url.get_secret_value(), settings.database, dbs))
    typer.echo(f"database {settings.database!r}: schemas and roles of {', '.join(DATABASE_SERVICES)} provisioned")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
