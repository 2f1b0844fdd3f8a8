"""Settings of the auth service: environment variables prefixed ``FOG_AUTH_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_AUTH_", extra="ignore")

    service: ClassVar[str] = "auth"
