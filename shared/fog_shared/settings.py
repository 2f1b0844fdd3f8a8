"""Settings every service process shares, read from the environment (pydantic-settings).

Each service subclasses :class:`CommonSettings` with its own prefix, ``FOG_<NAME>_``, so one
machine can run all of them side by side with different roles and ports.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_", extra="ignore")

    #: the service's name; subclasses set it (it names the schema, role, stream and source)
    service: ClassVar[str] = "fog"

    nats_url: str = "nats://127.0.0.1:14222"
    #: the service's own login role, which can touch only its own schema
    database_url: SecretStr = SecretStr("postgresql://fog@127.0.0.1:15432/fog")
    #: the schema owner, used only by ``migrate``; defaults to ``database_url``
    migrate_database_url: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 0
    #: serve ``/metrics`` on this port of ``http_host`` instead of the HTTP port (0: a free one, logged); None keeps it
    #: on the HTTP port. The gateway's HTTP port is the public API: its metrics are served apart by default.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    #: offer permessage-deflate on WebSockets. Off: the frames are small (chat changes, heartbeats,
    #: assignments), and deflating each one for each connection cost the gateway 8 % of its CPU
    #: in the BitChat fan-out benchmark (docs/performance.md) for a few hundred bytes saved.
    ws_per_message_deflate: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    #: OTLP/HTTP traces endpoint (e.g. http://collector:4318/v1/traces); tracing export is off when unset
    otlp_endpoint: str | None = None
    request_timeout_s: float = Field(default=5.0, gt=0)
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    outbox_batch_size: int = Field(default=500, ge=1)
    #: the relay's fallback poll when no NOTIFY arrives (a missed notify is never a lost event)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    #: published outbox rows are kept this long for debugging, then deleted
    outbox_keep_s: float = Field(default=86_400.0, gt=0)
    #: handled-event records outlive the streams' retention (7 days), so a redelivery is caught
    inbox_keep_s: float = Field(default=14 * 86_400.0, gt=0)
    housekeeping_interval_s: float = Field(default=600.0, gt=0)

    @property
    def db_schema(self) -> str:
        return self.service

    @property
    def source(self) -> str:
        """CloudEvents ``source`` of everything this service publishes."""
        return f"fog/{self.service}"
