"""Bus adapters of the auth service: decode, call one use case, reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from fog_auth import admin, credentials, own_account, service
from fog_auth.passwords import Passwords
from fog_auth.service import AuthConfig
from fog_shared.bus.broker import queue_group
from fog_shared.commands import auth as contract
from fog_shared.runtime import ServiceRuntime


def _tokens(pair: service.TokenPair) -> dict[str, Any]:
    reply = contract.TokenReply(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )
    return reply.model_dump()


UseCase = Callable[[asyncpg.Connection], Awaitable[dict[str, Any] | BaseModel | None]]


def register(runtime: ServiceRuntime, passwords: Passwords, config: AuthConfig) -> None:
    answer = runtime.answer
    _account_handlers(runtime, passwords, config, answer)
    _own_account_handlers(runtime, passwords, answer)
    _credential_handlers(runtime, answer)
    _admin_handlers(runtime, config, answer)


def _account_handlers(
    runtime: ServiceRuntime,
    passwords: Passwords,
    config: AuthConfig,
    answer: Callable[[UseCase], Awaitable[dict[str, Any]]],
) -> None:
    broker, group = runtime.broker, queue_group("auth")

    @broker.subscriber(contract.REGISTER, queue=group, title="register")
    async def register_user(body: contract.RegisterRequest) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            roles = sorted(set[str](body.roles))
            user_id = await service.register(
                conn, passwords, email=body.email, password=body.password, roles=roles, now=_now()
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
        async def run(conn: asyncpg.Connection) -> None:
            await service.logout(conn, refresh_token=body.refresh_token, now=datetime.now(UTC))

        return await answer(run)

    @broker.subscriber(contract.JWKS, queue=group, title="jwks")
    async def jwks() -> dict[str, Any]:
        return await answer(lambda conn: service.published_jwks(conn, config, now=datetime.now(UTC)))


def _own_account_handlers(
    runtime: ServiceRuntime, passwords: Passwords, answer: Callable[[UseCase], Awaitable[dict[str, Any]]]
) -> None:
    broker, group = runtime.broker, queue_group("auth")

    @broker.subscriber(contract.PASSWORD_CHANGE, queue=group, title="password_change")
    async def change_password(body: contract.PasswordChangeCommand) -> dict[str, Any]:
        return await answer(lambda conn: own_account.change_password(conn, passwords, body, now=_now()))

    @broker.subscriber(contract.PASSWORD_RESET, queue=group, title="password_reset")
    async def reset_password(body: contract.PasswordResetRequest) -> dict[str, Any]:
        return await answer(lambda conn: own_account.reset_password(conn, passwords, body, now=_now()))

    @broker.subscriber(contract.SESSION_LIST, queue=group, title="session_list")
    async def list_sessions(body: contract.SessionQuery) -> dict[str, Any]:
        return await answer(lambda conn: own_account.list_sessions(conn, body, now=_now()))

    @broker.subscriber(contract.SESSION_END, queue=group, title="session_end")
    async def end_session(body: contract.SessionEndCommand) -> dict[str, Any]:
        return await answer(lambda conn: own_account.end_session(conn, body, now=_now()))

    @broker.subscriber(contract.SESSION_END_OTHERS, queue=group, title="session_end_others")
    async def end_other_sessions(body: contract.SessionQuery) -> dict[str, Any]:
        return await answer(lambda conn: own_account.end_other_sessions(conn, body, now=_now()))


def _credential_handlers(runtime: ServiceRuntime, answer: Callable[[UseCase], Awaitable[dict[str, Any]]]) -> None:
    broker, group = runtime.broker, queue_group("auth")

    @broker.subscriber(contract.INTROSPECT, queue=group, title="introspect")
    async def introspect(body: contract.IntrospectRequest) -> dict[str, Any]:
        return await answer(lambda conn: credentials.introspect(conn, credential=body.credential, now=_now()))

    @broker.subscriber(contract.API_KEY_CREATE, queue=group, title="api_key_create")
    async def create_api_key(body: contract.ApiKeyCreateCommand) -> dict[str, Any]:
        return await answer(
            lambda conn: credentials.create_api_key(conn, user_id=body.user_id, request=body.key, now=_now())
        )

    @broker.subscriber(contract.API_KEY_LIST, queue=group, title="api_key_list")
    async def list_api_keys(body: contract.UserQuery) -> dict[str, Any]:
        return await answer(lambda conn: credentials.list_api_keys(conn, user_id=body.user_id))

    @broker.subscriber(contract.API_KEY_REVOKE, queue=group, title="api_key_revoke")
    async def revoke_api_key(body: contract.ApiKeyRevokeCommand) -> dict[str, Any]:
        return await answer(
            lambda conn: credentials.revoke_api_key(conn, user_id=body.user_id, api_key_id=body.api_key_id, now=_now())
        )

    @broker.subscriber(contract.NODE_CREDENTIAL_ISSUE, queue=group, title="node_credential_issue")
    async def issue_node_credential(body: contract.NodeCredentialIssueCommand) -> dict[str, Any]:
        node_id, owner_id = body.node_id, body.owner_id
        return await answer(
            lambda conn: credentials.issue_node_credential(conn, node_id=node_id, owner_id=owner_id, now=_now())
        )

    @broker.subscriber(contract.NODE_CREDENTIAL_REVOKE, queue=group, title="node_credential_revoke")
    async def revoke_node_credential(body: contract.NodeCredentialRevokeCommand) -> dict[str, Any]:
        return await answer(
            lambda conn: credentials.revoke_node_credential(conn, node_id=body.node_id, by=body.by, now=_now())
        )


def _admin_handlers(
    runtime: ServiceRuntime, config: AuthConfig, answer: Callable[[UseCase], Awaitable[dict[str, Any]]]
) -> None:
    broker, group = runtime.broker, queue_group("auth")

    @broker.subscriber(contract.USER_LIST, queue=group, title="user_list")
    async def list_users(body: contract.ListUsersQuery) -> dict[str, Any]:
        return await answer(lambda conn: admin.list_users(conn, body))

    @broker.subscriber(contract.USER_SET_ROLES, queue=group, title="user_set_roles")
    async def set_roles(body: contract.SetRolesCommand) -> dict[str, Any]:
        return await answer(lambda conn: admin.set_roles(conn, body, now=_now()))

    @broker.subscriber(contract.USER_DISABLE, queue=group, title="user_disable")
    async def disable_user(body: contract.DisableUserCommand) -> dict[str, Any]:
        return await answer(lambda conn: admin.disable_user(conn, body, now=_now()))

    @broker.subscriber(contract.USER_ENABLE, queue=group, title="user_enable")
    async def enable_user(body: contract.EnableUserCommand) -> dict[str, Any]:
        return await answer(lambda conn: admin.enable_user(conn, body, now=_now()))

    @broker.subscriber(contract.USER_GET, queue=group, title="user_get")
    async def get_user(body: contract.UserQuery) -> dict[str, Any]:
        return await answer(lambda conn: admin.get_user(conn, body))

    @broker.subscriber(contract.USER_UNLOCK, queue=group, title="user_unlock")
    async def unlock_user(body: contract.UnlockUserCommand) -> dict[str, Any]:
        return await answer(lambda conn: admin.unlock_user(conn, body, now=_now()))

    @broker.subscriber(contract.PASSWORD_RESET_ISSUE, queue=group, title="password_reset_issue")
    async def issue_password_reset(body: contract.PasswordResetIssueCommand) -> dict[str, Any]:
        return await answer(lambda conn: admin.issue_password_reset(conn, body, now=_now()))

    @broker.subscriber(contract.SIGNING_KEY_ROTATE, queue=group, title="signing_key_rotate")
    async def rotate_signing_key() -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> contract.RotatedKey:
            return contract.RotatedKey(kid=await service.rotate_signing_key(conn, config, now=_now()))

        return await answer(run)


def _now() -> datetime:
    return datetime.now(UTC)
