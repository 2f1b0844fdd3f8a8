"""Settings of the messaging service: environment variables prefixed ``FOG_MESSAGING_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_MESSAGING_", extra="ignore")

    service: ClassVar[str] = "messaging"
