"""Bus adapters of the auth service: decode, call one use case, reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

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


def register(runtime: ServiceRuntime, passwords: Passwords, config: AuthConfig) -> None:
    broker, group = runtime.broker, queue_group("auth")

    async def answer(use_case: Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run one use case on a pooled connection; a refusal becomes an error reply."""
        async with runtime.pool.acquire() as conn:
            try:
                return await use_case(conn)
            except AuthError as exc:
                return contract.error(exc.code, exc.detail, exc.retry_after_s)

    @broker.subscriber(contract.REGISTER, queue=group, title="register")
    async def register_user(body: contract.RegisterRequest) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            user_id = await service.register(
                conn, passwords, email=body.email, password=body.password, roles=["user"], now=datetime.now(UTC)
            )
            return contract.RegisteredReply(user_id=str(user_id)).model_dump()

        return await answer(run)

    @broker.subscriber(contract.LOGIN, queue=group, title="login")
    async def login(body: contract.LoginRequest) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            return _tokens(
                await service.login(
                    conn,
                    passwords,
                    config,
                    email=body.email,
                    password=body.password,
                    source=body.source,
                    now=datetime.now(UTC),
                )
            )

        return await answer(run)

    @broker.subscriber(contract.REFRESH, queue=group, title="refresh")
    async def refresh(body: contract.RefreshRequest) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            return _tokens(await service.refresh(conn, config, refresh_token=body.refresh_token, now=datetime.now(UTC)))

        return await answer(run)

    @broker.subscriber(contract.LOGOUT, queue=group, title="logout")
    async def logout(body: contract.RefreshRequest) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            await service.logout(conn, refresh_token=body.refresh_token, now=datetime.now(UTC))
            return {}

        return await answer(run)

    @broker.subscriber(contract.JWKS, queue=group, title="jwks")
    async def jwks() -> dict[str, Any]:
        return await answer(lambda conn: service.published_jwks(conn, config, now=datetime.now(UTC)))
