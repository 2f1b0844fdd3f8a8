"""Settings of the scheduler service: environment variables prefixed ``FOG_SCHEDULER_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_SCHEDULER_", extra="ignore")

    service: ClassVar[str] = "scheduler"
