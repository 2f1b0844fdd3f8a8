"""Wiring of the auth service: the one place that builds it."""

from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr

from fog_auth import admin, handlers, service
from fog_auth.config import Settings
from fog_auth.passwords import Passwords, cheap_hasher_for_tests
from fog_auth.service import AuthConfig
from fog_auth.signing import KeyVault
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(settings: CommonSettings) -> FastAPI:
    assert isinstance(settings, Settings)
    runtime = ServiceRuntime(settings, migrations_dir=MIGRATIONS)
    hasher = cheap_hasher_for_tests() if settings.insecure_cheap_hashing else PasswordHasher()
    passwords = Passwords(hasher, max_concurrent=settings.max_concurrent_hashes)
    config = AuthConfig(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
        vault=KeyVault(_passphrase(settings.signing_key_passphrase)),
    )

    async def first_signing_key() -> None:
        async with runtime.pool.acquire() as conn:
            await service.ensure_signing_key(conn, config, now=datetime.now(UTC))

    async def first_admin() -> None:
        if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
            async with runtime.pool.acquire() as conn:
                await admin.ensure_first_admin(
                    conn, passwords, email=settings.bootstrap_admin_email,
                    password=settings.bootstrap_admin_password.get_secret_value(), now=datetime.now(UTC),
                )  # fmt: skip

    runtime.on_start(first_signing_key)
    runtime.on_start(first_admin)
    handlers.register(runtime, passwords, config)
    return runtime.http_app()


def _passphrase(secret: SecretStr | None) -> bytes | None:
    return secret.get_secret_value().encode() if secret is not None else None
