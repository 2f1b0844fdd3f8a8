"""What admins do to accounts: list them, change roles, disable and enable, issue a password reset; and the
first admin itself.

Changing roles or disabling revokes the user's sessions in the same transaction, so tokens
carrying the old roles stop working as soon as verifiers see the events.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from fog_auth import store
from fog_auth.credentials import hash_secret, new_secret
from fog_auth.passwords import Passwords
from fog_auth.service import SOURCE, AuthError, end_sessions, parse_id, register
from fog_shared.commands import auth as contract
from fog_shared.events.auth import PasswordResetIssued, UserDisabled, UserEnabled, UserRolesChanged, UserUnlocked
from fog_shared.pg import outbox


def _view(row: asyncpg.Record) -> contract.UserView:
    return contract.UserView(**{**dict(row), "id": str(row["id"])})


async def list_users(conn: asyncpg.Connection, query: contract.ListUsersQuery) -> contract.UserList:
    rows = await store.list_users(conn, query.limit, query.offset, email=query.email)
    return contract.UserList(items=[_view(r) for r in rows])


async def set_roles(conn: asyncpg.Connection, command: contract.SetRolesCommand, *, now: datetime) -> contract.UserView:
    user_id, roles = parse_id(command.user_id, "user"), sorted(set[str](command.roles))
    async with conn.transaction():
        user = await _lock_existing(conn, user_id)
        if "admin" in user.roles and "admin" not in roles:
            await _refuse_losing_last_admin(conn, user_id)
        if roles != sorted(user.roles):
            await store.set_roles(conn, user_id, roles)
            event = UserRolesChanged(
                user_id=str(user_id), roles=roles, previous_roles=sorted(user.roles), changed_by=command.by,
                changed_at=now,
            )  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            await end_sessions(conn, user_id, "roles_changed", now)
        return await _current_view(conn, user_id)


async def disable_user(
    conn: asyncpg.Connection, command: contract.DisableUserCommand, *, now: datetime
) -> contract.UserView:
    user_id = parse_id(command.user_id, "user")
    async with conn.transaction():
        user = await _lock_existing(conn, user_id)
        if not user.disabled:
            if "admin" in user.roles:
                await _refuse_losing_last_admin(conn, user_id)
            await store.disable_user(conn, user_id, now)
            event = UserDisabled(user_id=str(user_id), disabled_by=command.by, disabled_at=now)
            await outbox.record(conn, event, source=SOURCE)
            await end_sessions(conn, user_id, "account_disabled", now)
        return await _current_view(conn, user_id)


async def enable_user(
    conn: asyncpg.Connection, command: contract.EnableUserCommand, *, now: datetime
) -> contract.UserView:
    """Undo a disable: the account may log in again (its ended sessions stay ended)."""
    user_id = parse_id(command.user_id, "user")
    async with conn.transaction():
        user = await _lock_existing(conn, user_id)
        if user.disabled:
            await store.enable_user(conn, user_id)
            await outbox.record(
                conn, UserEnabled(user_id=str(user_id), enabled_by=command.by, enabled_at=now), source=SOURCE
            )
        return await _current_view(conn, user_id)


async def get_user(conn: asyncpg.Connection, query: contract.UserQuery) -> contract.UserView:
    row = await store.user_view(conn, parse_id(query.user_id, "user"))
    if row is None:
        raise AuthError("not_found", "no such user")
    return _view(row)


async def unlock_user(
    conn: asyncpg.Connection, command: contract.UnlockUserCommand, *, now: datetime
) -> contract.UserView:
    """End a lockout (a user who mistyped their password too often and cannot wait): logins are taken again."""
    user_id = parse_id(command.user_id, "user")
    async with conn.transaction():
        user = await _lock_existing(conn, user_id)
        if user.failed_logins or user.locked_until is not None:
            await store.unlock_user(conn, user_id)
            event = UserUnlocked(user_id=str(user_id), unlocked_by=command.by, unlocked_at=now)
            await outbox.record(conn, event, source=SOURCE)
        return await _current_view(conn, user_id)


async def issue_password_reset(
    conn: asyncpg.Connection, command: contract.PasswordResetIssueCommand, *, now: datetime
) -> contract.IssuedPasswordReset:
    """A one-time token the user sets a new password with (``own_account.reset_password``); it replaces any
    earlier unused one. Fog sends no mail: the admin hands it over."""
    user_id = parse_id(command.user_id, "user")
    async with conn.transaction():
        user = await _lock_existing(conn, user_id)
        token = new_secret(contract.PASSWORD_RESET_PREFIX)
        expires_at = now + timedelta(seconds=command.expires_in_s)
        await store.replace_password_reset(conn, hash_secret(token), user_id, command.by, now, expires_at)
        event = PasswordResetIssued(user_id=str(user_id), issued_by=command.by, issued_at=now, expires_at=expires_at)
        await outbox.record(conn, event, source=SOURCE)
    return contract.IssuedPasswordReset(user_id=str(user_id), email=user.email, token=token, expires_at=expires_at)


async def _lock_existing(conn: asyncpg.Connection, user_id: uuid.UUID) -> store.UserRow:
    user = await store.lock_user(conn, user_id)
    if user is None:
        raise AuthError("not_found", "no such user")
    return user


async def _refuse_losing_last_admin(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    # Serialise admin removals: two admins demoting each other at once must not leave none.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('fog.auth.admins'))")
    if await store.other_active_admins(conn, user_id) == 0:
        raise AuthError("last_admin", "this is the last active admin; make another admin first")


async def _current_view(conn: asyncpg.Connection, user_id: uuid.UUID) -> contract.UserView:
    row = await store.user_view(conn, user_id)
    assert row is not None  # locked in this transaction
    return _view(row)


async def ensure_first_admin(
    conn: asyncpg.Connection, passwords: Passwords, *, email: str, password: str, now: datetime
) -> bool:
    """Create the configured first admin unless that account exists. True if it was created.

    The password comes from the deployment (a Kubernetes Secret, or the dev stack's generated
    credentials file); there is no default.
    """
    if await store.user_by_email(conn, email) is not None:
        return False
    try:
        await register(conn, passwords, email=email, password=password, roles=["admin", "user"], now=now)
    except AuthError as exc:
        if exc.code == "email_taken":  # another replica created it first
            return False
        raise
    return True
