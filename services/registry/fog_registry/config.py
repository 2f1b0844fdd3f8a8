"""Settings of the registry service: environment variables prefixed ``FOG_REGISTRY_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_REGISTRY_", extra="ignore")

    service: ClassVar[str] = "registry"
