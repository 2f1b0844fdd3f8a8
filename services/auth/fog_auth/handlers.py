"""Bus adapters of the auth service: decode, call one use case, reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fog_auth import service
from fog_auth.passwords import Passwords
from fog_auth.service import AuthConfig, AuthError
from fog_shared.bus.broker import queue_group
from fog_shared.commands import auth as contract
from fog_shared.runtime import ServiceRuntime


def _tokens(pair: service.TokenPair) -> dict[str, Any]:
    reply = contract.TokenReply(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )
    return reply.model_dump()


def _refused(exc: AuthError) -> dict[str, Any]:
    return contract.error(exc.code, exc.detail, exc.retry_after_s)


def register(runtime: ServiceRuntime, passwords: Passwords, config: AuthConfig) -> None:
    broker, group = runtime.broker, queue_group("auth")

    @broker.subscriber(contract.REGISTER, queue=group, title="register")
    async def register_user(body: contract.RegisterRequest) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            try:
                user_id = await service.register(
                    conn, passwords, email=body.email, password=body.password, roles=["user"], now=datetime.now(UTC)
                )
            except AuthError as exc:
                return _refused(exc)
        return contract.RegisteredReply(user_id=str(user_id)).model_dump()

    @broker.subscriber(contract.LOGIN, queue=group, title="login")
    async def login(body: contract.LoginRequest) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            try:
                pair = await service.login(
                    conn, passwords, config, email=body.email, password=body.password, source=body.source,
                    now=datetime.now(UTC),
                )  # fmt: skip
            except AuthError as exc:
                return _refused(exc)
        return _tokens(pair)

    @broker.subscriber(contract.REFRESH, queue=group, title="refresh")
    async def refresh(body: contract.RefreshRequest) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            try:
                pair = await service.refresh(conn, config, refresh_token=body.refresh_token, now=datetime.now(UTC))
            except AuthError as exc:
                return _refused(exc)
        return _tokens(pair)

    @broker.subscriber(contract.LOGOUT, queue=group, title="logout")
    async def logout(body: contract.RefreshRequest) -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            await service.logout(conn, refresh_token=body.refresh_token, now=datetime.now(UTC))
        return {}

    @broker.subscriber(contract.JWKS, queue=group, title="jwks")
    async def jwks() -> dict[str, Any]:
        async with runtime.pool.acquire() as conn:
            return await service.published_jwks(conn, config, now=datetime.now(UTC))
