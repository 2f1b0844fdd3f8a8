"""What users do to their own account: change the password, look over their sessions and end them, and set a
new password with a reset token an admin issued.

Each runs in one transaction with the events it causes (the outbox). Ending a session is revoking it
(``session.revoked``): gateways refuse its access tokens from then on, as after a logout.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from fog_auth import domain, store
from fog_auth.credentials import hash_secret
from fog_auth.passwords import Passwords
from fog_auth.service import (
    SOURCE,
    AuthError,
    count_wrong_password,
    end_sessions,
    keeping_refusals,
    parse_id,
    refuse_while_locked,
    revoke_session,
)
from fog_shared.commands import auth as contract
from fog_shared.events.auth import UserPasswordChanged
from fog_shared.pg import outbox


def _refuse_weak(problems: list[domain.PolicyViolation]) -> None:
    if problems:
        raise AuthError("weak_password", "; ".join(p.message for p in problems))


async def change_password(
    conn: asyncpg.Connection, passwords: Passwords, command: contract.PasswordChangeCommand, *, now: datetime
) -> contract.SessionsEnded:
    """The current password proves it is the user (not just someone with their token); every other session
    of theirs ends, the one asking stays signed in. A wrong current password counts as a failed login."""
    user_id, session_id = parse_id(command.user_id, "user"), parse_id(command.session_id, "session")
    async with keeping_refusals(conn):  # a wrong password's count is kept
        user = await store.lock_user(conn, user_id)
        if user is None or user.disabled:
            raise AuthError("account_disabled", "this account is disabled")
        refuse_while_locked(user.locked_until, now)
        if not await passwords.verify(user.password_hash, command.current_password):
            await count_wrong_password(conn, user, command.source, now)
            raise AuthError("wrong_password", "the current password is not right")
        _refuse_weak(
            domain.check_new_password(command.new_password, email=user.email, current=command.current_password)
        )
        await store.set_password(conn, user.id, await passwords.hash(command.new_password), now)
        ended = await end_sessions(conn, user.id, "password_changed", now, keep=session_id)
        await _record_change(conn, user.id, "changed", ended, now)
    return contract.SessionsEnded(sessions_ended=ended)


async def reset_password(
    conn: asyncpg.Connection, passwords: Passwords, request: contract.PasswordResetRequest, *, now: datetime
) -> contract.SessionsEnded:
    """Spend a reset token for a new password: every session of the user ends; the lockout is lifted. A
    weak password leaves the token unspent, to try again."""
    token_hash = hash_secret(request.token)
    async with conn.transaction():
        reset = await store.password_reset_for_update(conn, token_hash)
        if reset is None or reset["used_at"] is not None or reset["expires_at"] <= now:
            raise AuthError("invalid_reset_token", "this password reset token is not valid; ask an admin for a new one")
        user = await store.lock_user(conn, reset["user_id"])
        assert user is not None  # the token references it
        if user.disabled:
            raise AuthError("account_disabled", "this account is disabled")
        _refuse_weak(domain.check_password(request.new_password, email=user.email))
        await store.set_password(conn, user.id, await passwords.hash(request.new_password), now)
        await store.mark_password_reset_used(conn, token_hash, now)
        ended = await end_sessions(conn, user.id, "password_reset", now)
        await _record_change(conn, user.id, "reset", ended, now)
    return contract.SessionsEnded(sessions_ended=ended)


async def _record_change(conn: asyncpg.Connection, user_id: uuid.UUID, how: str, ended: int, now: datetime) -> None:
    event = UserPasswordChanged(user_id=str(user_id), how=how, sessions_ended=ended, changed_at=now)
    await outbox.record(conn, event, source=SOURCE)


async def list_sessions(
    conn: asyncpg.Connection, query: contract.SessionQuery, *, now: datetime
) -> contract.SessionList:
    rows = await store.live_session_views(conn, parse_id(query.user_id, "user"), now)
    return contract.SessionList(
        items=[
            contract.SessionView(**{**dict(r), "id": str(r["id"]), "current": str(r["id"]) == query.session_id})
            for r in rows
        ]
    )


async def end_session(conn: asyncpg.Connection, command: contract.SessionEndCommand, *, now: datetime) -> None:
    """End one of the user's own sessions (another user's is "no such session", as one that never was)."""
    user_id, session_id = parse_id(command.user_id, "user"), parse_id(command.session_id, "session")
    async with conn.transaction():
        if await store.session_owner(conn, session_id) != user_id:
            raise AuthError("not_found", "no such session")
        await revoke_session(conn, session_id, user_id, "ended_by_user", now)


async def end_other_sessions(
    conn: asyncpg.Connection, query: contract.SessionQuery, *, now: datetime
) -> contract.SessionsEnded:
    """Sign out everywhere else: every live session of the user but the one asking."""
    user_id, keep = parse_id(query.user_id, "user"), parse_id(query.session_id, "session")
    async with conn.transaction():
        ended = await end_sessions(conn, user_id, "ended_by_user", now, keep=keep)
    return contract.SessionsEnded(sessions_ended=ended)
