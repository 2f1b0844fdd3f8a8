"""Settings of the auth service: environment variables prefixed ``FOG_AUTH_``."""

from typing import ClassVar

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from fog_shared.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="FOG_AUTH_", extra="ignore")

    service: ClassVar[str] = "auth"

    token_issuer: str = "fog-auth"  # noqa: S105 - a name, not a secret
    token_audience: str = "fog"  # noqa: S105 - a name, not a secret
    access_token_ttl_s: int = 600
    refresh_token_ttl_s: int = 30 * 86_400
    #: argon2id at its defaults costs ~64 MiB and ~130 ms a hash: bound how many run at once
    max_concurrent_hashes: int = 2
    #: minimal argon2id cost, for test suites only: never set this in a deployment
    insecure_cheap_hashing: bool = False
    #: the first admin, created at start unless that account exists (on Kubernetes both come from
    #: a Secret; the dev stack generates the password). No default password anywhere.
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None
    #: encrypts signing keys at rest (from a Secret); without it they are stored unencrypted
    signing_key_passphrase: SecretStr | None = None
