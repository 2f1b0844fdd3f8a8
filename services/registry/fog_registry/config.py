"""Settings of the registry service: environment variables prefixed ``FOG_REGISTRY_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_REGISTRY_", extra="ignore")

    service: ClassVar[str] = "registry"
    #: how often agents heartbeat (the gateway tells them; keep FOG_GATEWAY_NODE_HEARTBEAT_INTERVAL_S equal)
    heartbeat_interval_s: float = 5.0
    #: how often the leader looks for silent nodes
    liveness_tick_s: float = 1.0
