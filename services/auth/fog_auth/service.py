"""Auth use cases: register, login, refresh (rotating, with reuse detection), logout, key rotation.

Each takes the connection it works in; state changes and the events they cause commit together
(the events go through the outbox). Errors are :class:`AuthError` with a stable code.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from fog_auth import domain, store
from fog_auth.passwords import Passwords
from fog_auth.signing import KeyVault, SigningKey, active_key, issue_access_token, jwks
from fog_shared.commands.common import Refusal
from fog_shared.events.auth import SessionRevoked, SigningKeyRotated, UserLockedOut, UserRegistered
from fog_shared.pg import outbox

log = logging.getLogger(__name__)

SOURCE = "fog/auth"
#: failed logins from one address before it, too, is slowed down (spread over many accounts)
SOURCE_FREE_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuer: str = "fog-auth"
    audience: str = "fog"
    access_ttl_s: int = 600
    refresh_ttl_s: int = 30 * 86_400
    vault: KeyVault = field(default_factory=KeyVault)


class AuthError(Refusal):
    """A refusal of the auth service (a stable ``code`` and a detail for people)."""


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str


def parse_id(value: str, what: str) -> uuid.UUID:
    """An id from a request: anything but a uuid is "no such ``what``", as an unknown one is."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise AuthError("not_found", f"no such {what}") from None


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def register(
    conn: asyncpg.Connection, passwords: Passwords, *, email: str, password: str, roles: list[str], now: datetime
) -> uuid.UUID:
    problems = domain.check_password(password, email=email)
    if problems:
        raise AuthError("weak_password", "; ".join(p.message for p in problems))
    unknown = set(roles) - set(domain.ROLES)
    if unknown:
        raise AuthError("invalid_role", f"unknown role(s): {', '.join(sorted(unknown))}")
    password_hash = await passwords.hash(password)
    user_id = uuid.uuid4()
    async with conn.transaction():
        if not await store.insert_user(conn, user_id, email, password_hash, roles, now):
            raise AuthError("email_taken", "an account with this e-mail exists")
        event = UserRegistered(user_id=str(user_id), email=email, roles=roles, registered_at=now)
        await outbox.record(conn, event, source=SOURCE)
    return user_id


async def login(
    conn: asyncpg.Connection,
    passwords: Passwords,
    config: AuthConfig,
    *,
    email: str,
    password: str,
    source: str,
    now: datetime,
) -> TokenPair:
    """Check the password under per-account and per-source lockout; open a session."""
    async with keeping_refusals(conn):
        source_failures, source_locked_until = await store.source_failures(conn, source)
        refuse_while_locked(source_locked_until, now)
        user = await store.user_by_email(conn, email, for_update=True)
        if user is not None:
            refuse_while_locked(user.locked_until, now)
        ok = user is not None and await passwords.verify(user.password_hash, password)
        if user is None:
            await passwords.burn()  # an unknown account answers as slowly as a known one
        if not ok or user is None:
            await _count_failure(conn, user, source, source_failures, now)
            raise AuthError("invalid_credentials", "wrong e-mail or password")
        if user.disabled:
            raise AuthError("account_disabled", "this account is disabled")
        rehashed = await passwords.hash(password) if passwords.needs_rehash(user.password_hash) else None
        await store.record_login_success(conn, user.id, rehashed)
        await store.clear_source_failures(conn, source)
        session_id = uuid.uuid4()
        await store.insert_session(conn, session_id, user.id, source, now)
        return await _issue_pair(conn, config, user.id, user.roles, session_id, now)


@asynccontextmanager
async def keeping_refusals(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that commits what led to a refusal (failure counts, a reuse's revocation)
    before the :class:`AuthError` reaches the caller; any other error rolls everything back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except AuthError:
        await transaction.commit()
        raise
    except BaseException:
        await transaction.rollback()
        raise
    await transaction.commit()


def refuse_while_locked(locked_until: datetime | None, now: datetime) -> None:
    if locked_until is not None and locked_until > now:
        wait = int((locked_until - now).total_seconds()) + 1
        raise AuthError("locked", "too many failed logins; try again later", retry_after_s=wait)


async def _count_failure(
    conn: asyncpg.Connection, user: store.UserRow | None, source: str, source_failures: int, now: datetime
) -> None:
    # Counted in Postgres, so the lockout holds whichever replica the next attempt reaches.
    if user is not None:
        await count_wrong_password(conn, user, source, now)
    lock_s = domain.lockout_seconds(source_failures + 1, free_attempts=SOURCE_FREE_ATTEMPTS)
    await store.record_source_failure(
        conn, source, source_failures + 1, now + timedelta(seconds=lock_s) if lock_s else None, now
    )
    if lock_s:
        log.warning("a source address is locked out", extra={"source": source, "failures": source_failures + 1,
                                                             "locked_s": lock_s})  # fmt: skip


async def count_wrong_password(conn: asyncpg.Connection, user: store.UserRow, source: str, now: datetime) -> None:
    """One more wrong password for the account; past the free attempts it is locked (``user.locked_out``)."""
    failures = user.failed_logins + 1
    lock_s = domain.lockout_seconds(failures)
    locked_until = now + timedelta(seconds=lock_s) if lock_s else None
    await store.record_login_failure(conn, user.id, locked_until)
    if locked_until is not None:
        event = UserLockedOut(user_id=str(user.id), failures=failures, locked_until=locked_until, source=source)
        await outbox.record(conn, event, source=SOURCE)
        log.warning("an account is locked out", extra={"user_id": str(user.id), "source": source,
                                                       "failures": failures, "locked_s": lock_s})  # fmt: skip


async def refresh(conn: asyncpg.Connection, config: AuthConfig, *, refresh_token: str, now: datetime) -> TokenPair:
    """Spend a refresh token for a new pair. A token spent twice revokes its whole session."""
    token_hash = hash_refresh_token(refresh_token)
    async with keeping_refusals(conn):
        row = await store.refresh_token_for_update(conn, token_hash)
        if row is None or row.session_revoked_at is not None or row.expires_at <= now:
            raise AuthError("invalid_grant", "refresh token is not valid")
        if row.used_at is not None:
            await revoke_session(conn, row.session_id, row.user_id, "refresh_token_reuse", now)
            raise AuthError("invalid_grant", "refresh token was already used; the session is revoked")
        user = await store.user_by_id(conn, row.user_id)
        if user is None or user.disabled:
            raise AuthError("invalid_grant", "refresh token is not valid")
        await store.mark_refresh_token_used(conn, token_hash, now)
        return await _issue_pair(conn, config, user.id, user.roles, row.session_id, now)


async def logout(conn: asyncpg.Connection, *, refresh_token: str, now: datetime) -> None:
    async with conn.transaction():
        row = await store.refresh_token_for_update(conn, hash_refresh_token(refresh_token))
        if row is not None:
            await revoke_session(conn, row.session_id, row.user_id, "logout", now)


async def revoke_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, user_id: uuid.UUID, reason: str, now: datetime
) -> None:
    if await store.revoke_session(conn, session_id, reason, now):
        event = SessionRevoked(session_id=str(session_id), user_id=str(user_id), reason=reason, revoked_at=now)
        await outbox.record(conn, event, source=SOURCE)


async def end_sessions(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str, now: datetime, *, keep: uuid.UUID | None = None
) -> int:
    """Revoke every live session of the user but ``keep``; how many ended."""
    ended = 0
    for session_id in await store.live_sessions(conn, user_id, now):
        if session_id != keep:
            await revoke_session(conn, session_id, user_id, reason, now)
            ended += 1
    return ended


async def _issue_pair(
    conn: asyncpg.Connection,
    config: AuthConfig,
    user_id: uuid.UUID,
    roles: list[str],
    session_id: uuid.UUID,
    now: datetime,
) -> TokenPair:
    refresh_token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=config.refresh_ttl_s)
    await store.insert_refresh_token(conn, hash_refresh_token(refresh_token), session_id, now, expires_at)
    key = active_key(await load_keys(conn, config.vault))
    access = issue_access_token(
        key,
        issuer=config.issuer,
        audience=config.audience,
        subject=str(user_id),
        roles=roles,
        token_id=uuid.uuid4().hex,
        now=int(now.timestamp()),
        ttl_s=config.access_ttl_s,
        session_id=str(session_id),
    )
    return TokenPair(access, refresh_token, config.access_ttl_s, str(session_id))


async def load_keys(conn: asyncpg.Connection, vault: KeyVault) -> list[SigningKey]:
    return [
        SigningKey(
            r["kid"],
            vault.open(r["kid"], bytes(r["private_pem"])),
            int(r["created_at"].timestamp()),
            int(r["retired_at"].timestamp()) if r["retired_at"] else None,
        )
        for r in await store.signing_keys(conn)
    ]


async def rotate_signing_key(conn: asyncpg.Connection, config: AuthConfig, *, now: datetime) -> str:
    """Retire the active key (it keeps verifying until its tokens expire) and start a new one."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('fog.auth.signing_keys'))")
        keys = await load_keys(conn, config.vault)
        previous = next((k.kid for k in reversed(keys) if k.retired_at is None), None)
        kid = f"k{int(now.timestamp())}-{secrets.token_hex(3)}"
        await store.retire_signing_keys(conn, now)
        sealed = config.vault.seal(SigningKey.generate(kid, int(now.timestamp())))
        await store.insert_signing_key(conn, kid, sealed, now)
        await outbox.record(conn, SigningKeyRotated(kid=kid, previous_kid=previous, rotated_at=now), source=SOURCE)
    return kid


async def ensure_signing_key(conn: asyncpg.Connection, config: AuthConfig, *, now: datetime) -> None:
    """At start-up: make the first key if there is none."""
    if not any(k.retired_at is None for k in await load_keys(conn, config.vault)):
        await rotate_signing_key(conn, config, now=now)


async def published_jwks(
    conn: asyncpg.Connection, config: AuthConfig, *, now: datetime
) -> dict[str, list[dict[str, str]]]:
    return jwks(await load_keys(conn, config.vault), now=int(now.timestamp()), token_ttl_s=config.access_ttl_s)
