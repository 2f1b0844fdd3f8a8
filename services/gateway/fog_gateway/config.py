"""Settings of the gateway service: environment variables prefixed ``FOG_GATEWAY_``."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_GATEWAY_", extra="ignore")

    service: ClassVar[str] = "gateway"
    http_port: int = 8080
    token_issuer: str = "fog-auth"  # noqa: S105 - a name, not a secret
    token_audience: str = "fog"  # noqa: S105 - a name, not a secret
    access_token_ttl_s: int = 600
